"""Tests for ear_jax.metrics: golden data, hand cases, properties."""
# pylint: disable=invalid-name

import csv
import json
import os

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
import pytest

from ear_jax import metrics as metrics_lib
from ear_jax.data import avvp

CLASSES = tuple(avvp.LLP_CLASSES)
CLS = {name: i for i, name in enumerate(CLASSES)}
HYP = settings(max_examples=50, deadline=None, derandomize=True)


# ----------------------------------------------------------------------------
# A loop-based reference written from docs/METHOD.md (M2)-(M4), used to
# cross-check the vectorised code on shapes the golden file does not cover.


def _ref_events(row):
  events, t = [], 0
  while t < len(row):
    if row[t]:
      s = t
      while t < len(row) and row[t]:
        t += 1
      events.append((s, t))
    else:
      t += 1
  return events


def _ref_counts(p, g, level):
  if level == "seg":
    return (int(np.sum(p & g)), int(np.sum(~p & g)), int(np.sum(p & ~g)))
  pe, ge = _ref_events(p), _ref_events(g)

  def hit(a, b):
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter >= 0.5 * ((a[1] - a[0]) + (b[1] - b[0]) - inter)

  tp = sum(any(hit(x, y) for y in ge) for x in pe)
  fn = sum(not any(hit(y, x) for x in pe) for y in ge)
  return tp, fn, len(pe) - tp


def _ref_f(counts):
  fs = [2 * tp / (2 * tp + fn + fp) for tp, fn, fp in counts
        if tp + fp or tp + fn]
  return sum(fs) / len(fs) if fs else 1.0


def _ref_scores(pa, pv, ga, gv):
  pa, pv, ga, gv = (np.asarray(x, bool) for x in (pa, pv, ga, gv))
  per = {k: [] for k in metrics_lib.PER_VIDEO_KEYS}
  for n in range(pa.shape[0]):
    for level in ("seg", "evt"):
      c = {m: [_ref_counts(p[n, k], g[n, k], level)
               for k in range(pa.shape[1])]
           for m, p, g in (("a", pa, ga), ("v", pv, gv),
                           ("av", pa & pv, ga & gv))}
      for m in ("a", "v", "av"):
        per[f"{level}_{m}"].append(_ref_f(c[m]))
      per[f"{level}_event"].append(_ref_f(
          [tuple(x + y for x, y in zip(ca, cv))
           for ca, cv in zip(c["a"], c["v"])]))
  return {k: np.asarray(v) for k, v in per.items()}


def _random_case(rng, n, c, t):
  """Mixed densities, shifted / dilated GT, runs: exercises all branches."""
  gt = [(rng.random((n, c, t)) < rng.uniform(0, 0.4)) for _ in range(2)]
  pred = []
  for g in gt:
    mode = rng.integers(4)
    if mode == 0:
      p = rng.random((n, c, t)) < rng.uniform(0, 0.5)
    elif mode == 1:
      p = np.roll(g, rng.integers(-2, 3), axis=-1)
    elif mode == 2:
      p = g | np.roll(g, 1, axis=-1)
    else:
      p = g ^ (rng.random((n, c, t)) < 0.1)
    pred.append(p)
  return [x.astype(np.uint8) for x in (pred[0], pred[1], gt[0], gt[1])]


# ----------------------------------------------------------------------------
# Golden data (official code run verbatim).


@pytest.fixture(scope="module")
def golden(testdata_dir):
  npz = np.load(testdata_dir / "golden" / "llp_metrics_public.npz")
  with open(testdata_dir / "golden" / "llp_metrics_public.json") as f:
    meta = json.load(f)
  return {k: npz[k] for k in npz.files}, meta


def test_golden_aggregates_and_per_video(golden):
  arrays, meta = golden
  out = metrics_lib.avvp_scores(arrays["pred_a"], arrays["pred_v"],
                                arrays["gt_a"], arrays["gt_v"],
                                per_video=True)
  assert list(metrics_lib.AGGREGATE_KEYS) == meta["aggregate_keys"]
  assert list(metrics_lib.PER_VIDEO_KEYS) == meta["per_video_keys"]
  for k in metrics_lib.AGGREGATE_KEYS:
    assert isinstance(out[k], float)
    assert abs(out[k] - meta["aggregates"][k]) < 1e-9, (
        f"{k}: got {out[k]!r}, official {meta['aggregates'][k]!r}. The metric"
        " no longer matches the official AVVP code; see"
        " tests/testdata/README.md.")
  for k in metrics_lib.PER_VIDEO_KEYS:
    want = np.array([row[k] for row in meta["per_video"]])
    got = out["per_video"][k]
    assert got.dtype == np.float64 and got.shape == want.shape
    bad = np.nonzero(np.abs(got - want) > 1e-9)[0]
    assert not bad.size, (
        f"per-video {k} differs for rows {bad[:5].tolist()}, cases"
        f" {[meta['per_video'][i]['case'] for i in bad[:3]]}")


def test_golden_with_loop_path(golden, monkeypatch):
  """The generic path (used for T > 10) agrees with the table path."""
  arrays, meta = golden
  monkeypatch.setattr(metrics_lib, "_TABLE_MAX_T", 0)
  out = metrics_lib.avvp_scores(arrays["pred_a"], arrays["pred_v"],
                                arrays["gt_a"], arrays["gt_v"])
  for k in metrics_lib.AGGREGATE_KEYS:
    assert abs(out[k] - meta["aggregates"][k]) < 1e-9


# ----------------------------------------------------------------------------
# Hand cases, values computed with the official AVVP code.


def _hand_case(marks):
  x = {k: np.zeros((1, 25, 10), np.uint8)
       for k in ("pred_a", "pred_v", "gt_a", "gt_v")}
  for key, cls, segments in marks:
    x[key][0, CLS[cls], list(segments)] = 1
  return x


HAND_CASES = [
    ("speech_shift",
     [("gt_a", "Speech", range(0, 4)), ("pred_a", "Speech", range(2, 6))],
     dict(seg_a=0.5, seg_v=1.0, seg_event=0.5, seg_av=1.0,
          evt_a=0.0, evt_v=1.0, evt_event=0.0, evt_av=1.0)),
    ("dog_iou_exactly_half",
     [("gt_a", "Dog", (0, 1, 3, 4, 5)), ("pred_a", "Dog", range(0, 6))],
     dict(seg_a=10 / 11, evt_a=2 / 3)),
    ("frying",
     [("gt_a", "Frying_(food)", range(10)),
      ("gt_v", "Frying_(food)", range(2, 8)),
      ("pred_a", "Frying_(food)", range(10)),
      ("pred_v", "Frying_(food)", range(0, 5)),
      ("pred_v", "Fire_alarm", (9,))],
     dict(seg_a=1.0, seg_v=3 / 11, seg_event=13 / 31, seg_av=6 / 11,
          evt_a=1.0, evt_v=0.0, evt_event=0.25, evt_av=0.0)),
    ("all_empty", [], {k: 1.0 for k in metrics_lib.PER_VIDEO_KEYS}),
    ("pred_without_gt", [("pred_a", "Car", range(0, 3))],
     dict(seg_a=0.0, seg_event=0.0, seg_v=1.0, seg_av=1.0,
          evt_a=0.0, evt_event=0.0, evt_v=1.0, evt_av=1.0)),
]


@pytest.mark.parametrize("name,marks,want", HAND_CASES,
                         ids=[c[0] for c in HAND_CASES])
def test_hand_cases(name, marks, want):
  del name
  out = metrics_lib.avvp_scores(**_hand_case(marks), per_video=True)
  for k, v in want.items():
    np.testing.assert_allclose(out["per_video"][k][0], v, atol=1e-12,
                               err_msg=k)
    np.testing.assert_allclose(out[k], 100 * v, atol=1e-10, err_msg=k)
  assert abs(out["seg_type"] - (out["seg_a"] + out["seg_v"] + out["seg_av"])
             / 3) < 1e-12


def test_spec_rounded_hand_values():
  """The official code's six-decimal values for case 3."""
  out = metrics_lib.avvp_scores(**_hand_case(HAND_CASES[2][1]),
                                per_video=True)["per_video"]
  for k, v in dict(seg_v=0.272727, seg_event=0.419355,
                   seg_av=0.545455).items():
    assert abs(out[k][0] - v) < 5e-7


# ----------------------------------------------------------------------------
# Against the loop reference, any C and T, both code paths.


@pytest.mark.parametrize("shape", [(40, 25, 10), (30, 4, 7), (20, 3, 13),
                                   (10, 2, 1)])
@pytest.mark.parametrize("table", [True, False])
def test_matches_loop_reference(shape, table, monkeypatch):
  if not table:
    monkeypatch.setattr(metrics_lib, "_TABLE_MAX_T", 0)
  rng = np.random.default_rng(sum(shape))
  case = _random_case(rng, *shape)
  out = metrics_lib.avvp_scores(*case, per_video=True)
  ref = _ref_scores(*case)
  for k in metrics_lib.PER_VIDEO_KEYS:
    np.testing.assert_allclose(out["per_video"][k], ref[k], rtol=0,
                               atol=1e-12, err_msg=k)
    np.testing.assert_allclose(out[k], 100 * ref[k].mean(), atol=1e-10)


@HYP
@given(data=hnp.arrays(np.uint8, (4, 3, 3, 6), elements=st.integers(0, 1)))
def test_matches_loop_reference_hypothesis(data):
  out = metrics_lib.avvp_scores(*data, per_video=True)["per_video"]
  ref = _ref_scores(*data)
  for k in metrics_lib.PER_VIDEO_KEYS:
    np.testing.assert_allclose(out[k], ref[k], rtol=0, atol=1e-12, err_msg=k)


# ----------------------------------------------------------------------------
# Properties.


def test_perfect_prediction_scores_100():
  rng = np.random.default_rng(0)
  _, _, gt_a, gt_v = _random_case(rng, 50, 25, 10)
  out = metrics_lib.avvp_scores(gt_a, gt_v, gt_a, gt_v)
  for k in metrics_lib.AGGREGATE_KEYS:
    assert out[k] == 100.0, k


def test_video_order_invariance():
  rng = np.random.default_rng(1)
  case = _random_case(rng, 60, 25, 10)
  perm = rng.permutation(60)
  a = metrics_lib.avvp_scores(*case, per_video=True)
  b = metrics_lib.avvp_scores(*(x[perm] for x in case), per_video=True)
  for k in metrics_lib.AGGREGATE_KEYS:
    assert abs(a[k] - b[k]) < 1e-10, k
  for k in metrics_lib.PER_VIDEO_KEYS:
    np.testing.assert_array_equal(a["per_video"][k][perm],
                                  b["per_video"][k])


def test_zero_padded_classes_change_nothing():
  rng = np.random.default_rng(2)
  case = _random_case(rng, 30, 25, 10)
  pad = [np.concatenate([np.zeros((30, 3, 10), np.uint8), x,
                         np.zeros((30, 4, 10), np.uint8)], axis=1)
         for x in case]
  a = metrics_lib.avvp_scores(*case, per_video=True)
  b = metrics_lib.avvp_scores(*pad, per_video=True)
  for k in metrics_lib.AGGREGATE_KEYS:
    assert a[k] == b[k], k
  for k in metrics_lib.PER_VIDEO_KEYS:
    np.testing.assert_array_equal(a["per_video"][k], b["per_video"][k])


def test_accepts_bool_and_float_01():
  rng = np.random.default_rng(3)
  case = _random_case(rng, 10, 25, 10)
  a = metrics_lib.avvp_scores(*case)
  assert metrics_lib.avvp_scores(*(x.astype(bool) for x in case)) == a
  assert metrics_lib.avvp_scores(*(x.astype(np.float32) for x in case)) == a


@HYP
@given(row=hnp.arrays(np.uint8, st.integers(1, 16),
                      elements=st.integers(0, 1)))
def test_row_events_row_round_trip(row):
  events = metrics_lib.events_from_row(row)
  np.testing.assert_array_equal(
      metrics_lib.events_to_segments(events, row.size), row)
  assert len(events) == len(metrics_lib.events_from_row(row))


@st.composite
def _disjoint_events(draw):
  """Sorted events separated by at least one 0, inside [0, T)."""
  T = draw(st.integers(1, 16))
  cuts = sorted(draw(st.sets(st.integers(0, T), max_size=8)))
  events, last = [], -1
  for s, e in zip(cuts[::2], cuts[1::2]):
    if s > last and e > s:  # keep a gap, so runs stay maximal
      events.append((s, e))
      last = e
  return T, events


@HYP
@given(case=_disjoint_events())
def test_events_segments_events_round_trip(case):
  T, events = case
  row = metrics_lib.events_to_segments(events, T)
  assert metrics_lib.events_from_row(row) == events


def test_event_runs_vectorised_layout():
  x = np.array([[1, 1, 0, 1, 0, 0, 1], [0] * 7, [1] * 7])
  start, end, valid = metrics_lib.event_runs(x)
  assert start.shape == (3, 4)
  np.testing.assert_array_equal(valid.sum(-1), [3, 0, 1])
  np.testing.assert_array_equal(start[0, :3], [0, 3, 6])
  np.testing.assert_array_equal(end[0, :3], [2, 4, 7])
  assert (start[2, 0], end[2, 0]) == (0, 7)


# ----------------------------------------------------------------------------
# Input validation.


def _zeros(shape=(2, 25, 10)):
  return np.zeros(shape, np.uint8)


@pytest.mark.parametrize("args,match", [
    ((_zeros((25, 10)), _zeros(), _zeros(), _zeros()),
     r"pred_a has shape \(25, 10\); expected \[N, C, T\]"),
    ((_zeros(), _zeros((2, 24, 10)), _zeros(), _zeros()),
     r"must share one shape.*pred_v.*\(2, 24, 10\)"),
    ((_zeros(), _zeros(), _zeros() + 2, _zeros()),
     r"gt_a must hold only 0/1; found .*2.* at index \(0, 0, 0\)"),
    ((_zeros(), _zeros(), _zeros(), np.full((2, 25, 10), np.nan)),
     r"gt_v must hold only 0/1; found .*nan"),
    ((_zeros(), _zeros(), _zeros(), _zeros().astype(str)),
     r"gt_v has dtype <U\d; expected bool or 0/1"),
    ((_zeros((0, 25, 10)),) * 4, r"every axis must be >= 1"),
])
def test_bad_inputs_raise(args, match):
  with pytest.raises(ValueError, match=match):
    metrics_lib.avvp_scores(*args)


def test_bad_value_message_names_index():
  x = _zeros()
  x[1, 3, 7] = 5
  with pytest.raises(ValueError, match=r"pred_a .* at index \(1, 3, 7\)"):
    metrics_lib.avvp_scores(x, _zeros(), _zeros(), _zeros())


# ----------------------------------------------------------------------------
# Binarisation of parser outputs, Eq. (M1).


def test_binarize_strict_vs_inclusive_at_half():
  # sigmoid(0) = 0.5 exactly; global prob exactly 0.5 on class 0.
  g_BxC = np.array([[0.5, 0.7, 0.3]], np.float32)
  a_BxTxC = np.array([[[0.0, 0.0, 5.0], [1.0, 1.0, 1.0]]], np.float32)
  v_BxTxC = np.array([[[-1.0, 0.0, 0.0], [0.0, 2.0, 2.0]]], np.float32)
  pa, pv = metrics_lib.binarize_parser_outputs(g_BxC, a_BxTxC, v_BxTxC)
  assert pa.dtype == np.uint8 and pa.shape == (1, 3, 2)
  np.testing.assert_array_equal(pa[0], [[0, 0], [0, 1], [0, 0]])
  np.testing.assert_array_equal(pv[0], [[0, 0], [0, 1], [0, 0]])
  pa, pv = metrics_lib.binarize_parser_outputs(g_BxC, a_BxTxC, v_BxTxC,
                                               strict=False)
  np.testing.assert_array_equal(pa[0], [[1, 1], [1, 1], [0, 0]])
  np.testing.assert_array_equal(pv[0], [[0, 1], [1, 1], [0, 0]])


def test_binarize_tiny_logits_round_to_half_in_float32():
  # sigmoid(1e-9) is 0.5 in float32, so a strict test rejects it.
  g = np.ones((1, 1), np.float32)
  z = np.array([[[1e-9], [-1e-9], [1e-3]]], np.float32)
  pa, _ = metrics_lib.binarize_parser_outputs(g, z, z)
  np.testing.assert_array_equal(pa[0, 0], [0, 0, 1])
  pa, _ = metrics_lib.binarize_parser_outputs(g, z, z, strict=False)
  np.testing.assert_array_equal(pa[0, 0], [1, 1, 1])


def test_binarize_shape_errors():
  with pytest.raises(ValueError, match=r"a_logits_BxTxC has shape \(2, 10\)"):
    metrics_lib.binarize_parser_outputs(np.zeros((1, 2)), np.zeros((2, 10)),
                                        np.zeros((1, 10, 2)))
  with pytest.raises(ValueError, match=r"v_logits_BxTxC .* \[1, T, 2\]"):
    metrics_lib.binarize_parser_outputs(np.zeros((1, 2)),
                                        np.zeros((1, 10, 2)),
                                        np.zeros((1, 10, 3)))
  with pytest.raises(ValueError, match=r"global_prob_BxC contains NaN"):
    metrics_lib.binarize_parser_outputs(np.full((1, 2), np.nan),
                                        np.zeros((1, 10, 2)),
                                        np.zeros((1, 10, 2)))


# ----------------------------------------------------------------------------
# Reporting.


def test_write_eval_json(tmp_path):
  scores = {k: float(i) for i, k in enumerate(metrics_lib.AGGREGATE_KEYS)}
  scores["per_video"] = {"seg_a": np.zeros(3)}  # ignored
  path = tmp_path / "a" / "b" / "eval" / "test.json"
  row = metrics_lib.write_eval_json(path, scores,
                                    extra=dict(split="test", n_videos=3))
  with open(path) as f:
    on_disk = json.load(f)
  assert on_disk == row
  assert list(on_disk)[:11] == list(metrics_lib.AGGREGATE_KEYS) + ["avg"]
  assert on_disk["avg"] == 4.5 and on_disk["split"] == "test"
  assert os.listdir(path.parent) == ["test.json"]  # no temporary left
  metrics_lib.write_eval_json(path, scores)  # overwrite in place
  with open(path) as f:
    assert "split" not in json.load(f)
  with pytest.raises(ValueError, match=r"extra keys \['avg'\]"):
    metrics_lib.write_eval_json(path, scores, extra=dict(avg=1.0))
  with pytest.raises(ValueError, match=r"scores lack \['seg_a'\]"):
    metrics_lib.with_avg({k: 0.0 for k in metrics_lib.AGGREGATE_KEYS[1:]})


def test_format_table():
  scores = {k: 100.0 * (i + 1) / 11
            for i, k in enumerate(metrics_lib.AGGREGATE_KEYS)}
  text = metrics_lib.format_table({"EAR": scores, "a longer name": scores})
  lines = text.splitlines()
  assert len(lines) == 5
  assert "Type Event |" in lines[1] and lines[1].endswith("Avg")
  assert lines[3].startswith("EAR ")
  cells = lines[3].replace("|", " ").split()[1:]
  assert cells == ["9.1", "18.2", "27.3", "36.4", "45.5", "54.5", "63.6",
                   "72.7", "81.8", "90.9", "50.0"]


# ----------------------------------------------------------------------------
# Reference table on the real LLP annotations, values from the official code
# (a private GT builder, so this file does not depend on ear_jax.data.avvp).


def _read_tsv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f, delimiter="\t"))


def _llp_split(llp_dir, split):
  rows = _read_tsv(llp_dir / f"AVVP_{split}_pd.csv")
  names = [r["filename"] for r in rows]
  index = {n: i for i, n in enumerate(names)}
  weak = np.zeros((len(names), 25), np.uint8)
  for i, r in enumerate(rows):
    for label in r["event_labels"].split(","):
      weak[i, CLS[label]] = 1
  gt = {}
  for m, fname in (("a", "AVVP_eval_audio.csv"), ("v", "AVVP_eval_visual.csv")):
    g = np.zeros((len(names), 25, 10), np.uint8)
    for r in _read_tsv(llp_dir / fname):
      i = index.get(r["filename"])  # exact filename match
      if i is not None:
        g[i, CLS[r["event_labels"]], int(r["onset"]):int(r["offset"])] = 1
    gt[m] = g
  return weak, gt["a"], gt["v"]


REFERENCE_ROWS = {
    ("val", "zeros"): [0.6163, 10.7858, 14.3297, 8.5773, 0.0, 0.6163,
                       10.7858, 14.3297, 8.5773, 0.0],
    ("val", "weak"): [77.0748, 58.6541, 52.0727, 62.6005, 71.5336, 63.8487,
                      53.4754, 44.1491, 53.8244, 61.1207],
    ("val", "halves"): [53.7846, 39.2310, 14.3297, 35.7818, 50.4895, 61.5366,
                        51.3705, 14.3297, 42.4123, 59.0217],
    ("test", "zeros"): [0.5, 10.0833, 14.5, 8.3611, 0.0, 0.5, 10.0833, 14.5,
                        8.3611, 0.0],
    ("test", "weak"): [76.1176, 60.3480, 52.6103, 63.0253, 71.7258, 63.0272,
                       55.7527, 44.6921, 54.4907, 61.6011],
    ("test", "halves"): [52.7750, 41.0366, 14.5, 36.1039, 50.6902, 58.5770,
                         52.7546, 14.5, 41.9439, 57.7350],
}


@pytest.mark.parametrize("split", ["val", "test"])
def test_reference_table_on_llp(testdata_dir, split):
  weak, gt_a, gt_v = _llp_split(testdata_dir / "llp", split)
  assert len(weak) == {"val": 649, "test": 1200}[split]
  on_all = np.repeat(weak[:, :, None], 10, axis=2)
  first, last = on_all.copy(), on_all.copy()
  first[:, :, 5:] = 0
  last[:, :, :5] = 0
  preds = {"zeros": (np.zeros_like(gt_a), np.zeros_like(gt_v)),
           "weak": (on_all, on_all), "halves": (first, last)}
  for rule, (pa, pv) in preds.items():
    out = metrics_lib.avvp_scores(pa, pv, gt_a, gt_v)
    got = [out[k] for k in metrics_lib.AGGREGATE_KEYS]
    np.testing.assert_allclose(got, REFERENCE_ROWS[split, rule], rtol=0,
                               atol=5e-5, err_msg=f"{split} / {rule}")
  out = metrics_lib.avvp_scores(gt_a, gt_v, gt_a, gt_v)
  assert all(out[k] == 100.0 for k in metrics_lib.AGGREGATE_KEYS)
