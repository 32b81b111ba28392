"""Tests for ear_jax/data/synthetic.py: layouts, formats, determinism and the
planted structure (zero-shot signal, near-duplicates, LLP <- UnAV transfer)."""

import json
import math
import re

import numpy as np
import pytest

from ear_jax.data import avvp
from ear_jax.data import features
from ear_jax.data import synthetic

# pylint: disable=invalid-name

_NUM_LLP = (8, 14, 14)
_NUM_UNAV = (40, 6, 4)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("synthetic")
  return synthetic.write_synthetic(root, seed=3, num_llp=_NUM_LLP,
                                   num_unav=_NUM_UNAV, unav_max_duration=20)


@pytest.fixture(scope="module")
def llp(data):
  return {s: avvp.read_llp_split(data["llp_dir"], s)
          for s in ("train", "val", "test")}


@pytest.fixture(scope="module")
def unav_train(data):
  return avvp.read_unav_split(data["unav_json"], "train")


def _auc(scores, labels):
  """Mann-Whitney AUC (no ties in continuous scores)."""
  scores, labels = scores.ravel(), labels.ravel().astype(bool)
  ranks = np.empty(len(scores))
  ranks[np.argsort(scores)] = np.arange(1, len(scores) + 1)
  pos, neg = labels.sum(), (~labels).sum()
  return (ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg)


def _planted(data, split, modality):
  """uint8 [N, T_max, 100] planted truth of one modality (annotated or not)."""
  planted = json.load(open(data["unav_planted"]))
  truth = np.zeros_like(split.y_av)
  for i, vid in enumerate(split.ids):
    for ev in planted[vid]:
      if modality in ev["modality"]:
        s, e = ev["segments"]
        truth[i, s:e, ev["label_id"]] = 1
  return truth


def test_writes_both_layouts(data, llp):
  assert data["llp_sizes"] == dict(zip(("train", "val", "test"), _NUM_LLP))
  assert data["unav_sizes"] == dict(zip(avvp.UNAV_SPLITS, _NUM_UNAV))
  assert data["unav_max_segments"] <= 20
  root = data["llp_dir"]
  ids = llp["train"].ids + llp["val"].ids + llp["test"].ids
  dims = {"clip": 768, "clap": 512, "vggish": 128, "res152": 2048,
          "r2plus1d_18": 512}
  for name, dim in dims.items():
    x = features.load_segment_features(root, name, ids)
    assert x.shape == (sum(_NUM_LLP), 10, dim) and x.dtype == np.float32
  raw = np.load(features.feature_path(root, "res152", ids[0]))
  assert raw.shape == (80, 2048) and raw.dtype == np.float32
  for name, dim in (("clip", 768), ("clap", 512)):
    assert features.load_event_features(root, name, 25).shape == (25, dim)
    assert features.load_event_features(
        data["unav_dir"], name, 100).shape == (100, dim)
  for split in avvp.UNAV_SPLITS:
    s = avvp.read_unav_split(data["unav_json"], split)
    x = features.load_segment_features(
        data["unav_dir"], "clap", s.ids, s.num_segments, s.y_av.shape[1])
    assert x.shape == (len(s.ids), data["unav_max_segments"], 512)
    assert not (x.any(2) & (s.valid == 0)).any()  # zero padding


def test_llp_csv_format(data, llp):
  d = data["llp_dir"]
  name_re = re.compile(r"^[A-Za-z0-9_-]{11}_[0-9]+_[0-9]+$")
  lines = {}
  for f in [*avvp.LLP_SPLIT_FILES.values(), *avvp.LLP_EVAL_FILES.values(),
            avvp.LLP_FULL_FILE]:
    raw = open(f"{d}/{f}", "rb").read()
    assert raw.endswith(b"\n") and b"\r" not in raw and b'"' not in raw
    lines[f] = raw.decode().split("\n")[:-1]
  for f in avvp.LLP_SPLIT_FILES.values():
    assert lines[f][0] == "filename\tevent_labels"
  for f in avvp.LLP_EVAL_FILES.values():
    assert lines[f][0] == "filename\tonset\toffset\tevent_labels"
  full = lines[avvp.LLP_FULL_FILE]
  assert full[0] == "filename\tevent_labels"
  assert sorted(full[1:]) == sorted(
      sum((lines[f][1:] for f in avvp.LLP_SPLIT_FILES.values()), []))
  names = [r.split("\t")[0] for r in full[1:]]
  assert all(name_re.match(n) for n in names)
  assert len({n[:11] for n in names}) == len(names)
  audio = [r.split("\t") for r in lines["AVVP_eval_audio.csv"][1:]]
  assert any(int(a) >= int(b) for _, a, b, _ in audio)  # marks nothing
  assert any(f not in names for f, *_ in audio)  # matches no clip
  visual = [r.split("\t") for r in lines["AVVP_eval_visual.csv"][1:]]
  rows = [tuple(r) for r in audio + visual]
  touching = {(f, e, c) for f, _, e, c in rows} & {
      (f, s, c) for f, s, _, c in rows}
  assert touching  # same class, end of one row = start of the next
  assert len(llp["val"].ids) == _NUM_LLP[1]


def test_llp_gt_matches_weak_labels(llp):
  for split in ("val", "test"):
    s = llp[split]
    present = np.maximum(s.gt_a.max(2), s.gt_v.max(2))
    # Weak label = union of the planted classes; every one has dense GT.
    np.testing.assert_array_equal(present, s.weak)
    assert s.gt_a.sum() and s.gt_v.sum()
    assert (s.gt_a.max(2) != s.gt_v.max(2)).any()  # uni-modal events exist
  assert llp["train"].gt_a is None
  assert (llp["train"].weak.sum(1) >= 1).all()


def test_unav_json_schema(data, unav_train):
  raw = json.load(open(data["unav_json"]))
  assert raw["version"] == "unav100"
  db = raw["database"]
  assert {v["subset"] for v in db.values()} == set(avvp.UNAV_SPLITS)
  durations = [v["duration"] for v in db.values()]
  assert any(isinstance(d, int) for d in durations)
  assert any(isinstance(d, float) and d != int(d) for d in durations)
  assert all(10 <= d <= 20 for d in durations)
  events = [a for v in db.values() for a in v["annotations"]]
  assert all(avvp.UNAV_CLASSES[a["label_id"]] == a["label"] for a in events)
  assert any(a["segment"][0] != int(a["segment"][0]) for a in events)
  assert avvp.read_unav_class_names(data["unav_json"]) == list(
      avvp.UNAV_CLASSES)
  assert unav_train.y_av.shape[1] == data["unav_max_segments"]
  lengths = [np.load(features.feature_path(data["unav_dir"], "clip", v),
                     mmap_mode="r").shape[0] for v in db]
  t_v = [math.ceil(d) for d in durations]
  assert any(L != t for L, t in zip(lengths, t_v))  # exercises pooling
  assert any(L == t for L, t in zip(lengths, t_v))


def test_deterministic(tmp_path):
  kw = dict(num_llp=(2, 2, 2), num_unav=(2, 1, 1), han_features=False)
  a = synthetic.write_synthetic(tmp_path / "a", seed=5, **kw)
  b = synthetic.write_synthetic(tmp_path / "b", seed=5, **kw)
  c = synthetic.write_synthetic(tmp_path / "c", seed=6, **kw)
  vid = open(f"{a['llp_dir']}/AVVP_train.csv").read().split("\n")[1][:11]
  files = ["LLP/AVVP_eval_audio.csv", "LLP/AVVP_train.csv",
           "UnAV/unav100_annotations.json",
           f"LLP/feats_CLAP/segment_feats/{vid}.npy",
           "UnAV/feats_CLIP/event_feats/all_event_feats.npy"]
  for f in files:
    assert ((tmp_path / "a" / f).read_bytes()
            == (tmp_path / "b" / f).read_bytes()), f
  assert ((tmp_path / "a" / files[0]).read_bytes()
          != (tmp_path / "c" / files[0]).read_bytes())
  assert not (tmp_path / "a" / "LLP" / "feats").exists()  # no HAN features
  assert a["llp_sizes"] == b["llp_sizes"] == c["llp_sizes"]


def test_zero_shot_is_informative_but_imperfect(data, llp):
  root = data["llp_dir"]
  for name, gt in (("clap", "gt_a"), ("clip", "gt_v")):
    text_CxD = features.load_event_features(root, name, 25)
    aucs = []
    for split in ("val", "test"):
      s = llp[split]
      feats_NxTxD = features.load_segment_features(root, name, s.ids)
      cos_NxCxT = np.einsum("ntd,cd->nct", feats_NxTxD, text_CxD)
      score = 1 / (1 + np.exp(-10.0 * cos_NxCxT))  # sigmoid(scale * cos)
      aucs.append(_auc(score, getattr(s, gt)))
    assert 0.75 < np.mean(aucs) < 0.99, (name, aucs)


@pytest.mark.parametrize("name,modality,tau", [("clap", "a", 0.98),
                                               ("clip", "v", 0.95)])
def test_near_duplicates_for_migration(data, unav_train, name, modality, tau):
  s = unav_train
  x = features.load_segment_features(data["unav_dir"], name, s.ids,
                                     s.num_segments, s.y_av.shape[1])
  ok = s.valid.astype(bool)
  feats = x[ok] / np.linalg.norm(x[ok], axis=1, keepdims=True)
  y_av = s.y_av[ok].astype(np.float32)
  truth = _planted(data, s, modality)[ok].astype(np.float32)
  sim = feats @ feats.T
  np.fill_diagonal(sim, -1)
  high = sim >= tau
  # Unannotated uni-modal events have highly similar AV-labelled segments of
  # their class, so migration can recover them.
  unannotated = (truth > 0) & (y_av == 0)
  found = unannotated & ((high.astype(np.float32) @ y_av) > 0)
  assert found.sum() >= 3, found.sum()
  # Segments whose true classes are disjoint stay below the threshold (in
  # videos stored at 1 row per segment; pooling blurs the others' edges).
  lengths = np.array([np.load(features.feature_path(data["unav_dir"], name,
                                                    v), mmap_mode="r").shape[0]
                      for v in s.ids])
  same_rate = np.broadcast_to((lengths == s.num_segments)[:, None], ok.shape)
  keep = same_rate[ok] & (truth.sum(1) > 0)
  disjoint = (truth @ truth.T == 0) & keep[:, None] & keep[None, :]
  assert disjoint.sum() > 1000
  assert sim[disjoint].max() < tau
  same = (y_av @ y_av.T > 0) & high
  assert same.sum() > 0


def test_llp_transfers_from_unav(data, llp, unav_train):
  """LLP segments find UnAV segments of the mapped class as nearest
  neighbours: the two datasets share latent events."""
  s = unav_train
  x = features.load_segment_features(data["unav_dir"], "clap", s.ids,
                                     s.num_segments, s.y_av.shape[1])
  single = (s.y_av.sum(2) == 1) & (s.valid == 1)
  bank = x[single]
  bank /= np.linalg.norm(bank, axis=1, keepdims=True)
  bank_class = s.y_av[single].argmax(1)
  seen = set(bank_class.tolist())
  to_unav = {avvp.LLP_CLASSES.index(k): avvp.UNAV_CLASSES.index(v)
             for k, v in synthetic.LLP_TO_UNAV.items()}
  hits = []
  for split in ("val", "test"):
    t = llp[split]
    q = features.load_segment_features(data["llp_dir"], "clap", t.ids)
    for i, seg in zip(*np.nonzero(t.gt_a.sum(1) == 1)):
      c = int(t.gt_a[i, :, seg].argmax())
      if to_unav.get(c) in seen:
        nearest = bank_class[np.argmax(bank @ q[i, seg])]
        hits.append(nearest == to_unav[c])
  assert len(hits) > 30 and np.mean(hits) > 0.7, (len(hits), np.mean(hits))


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match=r"num_llp=\(0, 1, 1\)"):
    synthetic.write_synthetic(tmp_path, num_llp=(0, 1, 1))
  with pytest.raises(ValueError, match="unav_max_duration=5"):
    synthetic.write_synthetic(tmp_path, unav_max_duration=5)
