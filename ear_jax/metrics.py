"""Official LLP / AVVP metrics: segment- and event-level F (Tian et al. 2020).

Numpy only. Arrays are [N, C, T] (video, class, segment), the official layout.
"""
# pylint: disable=invalid-name

from __future__ import annotations

import functools
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ear_jax import jsonio
from ear_jax import stats as stats_lib

AGGREGATE_KEYS = (
    "seg_a", "seg_v", "seg_av", "seg_type", "seg_event",
    "evt_a", "evt_v", "evt_av", "evt_type", "evt_event",
)
PER_VIDEO_KEYS = (
    "seg_a", "seg_v", "seg_av", "seg_event",
    "evt_a", "evt_v", "evt_av", "evt_event",
)


# ----------------------------------------------------------------------------
# Events (maximal runs of 1s).


def event_runs(x_MxT: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Maximal runs of 1s along the last axis, vectorised over leading axes.

  Returns (start, end, valid), each [..., R] with R = ceil(T / 2): run k of a
  row covers [start, end) when valid; runs are in time order and padded with
  start = end = 0, valid = False.
  """
  x = np.asarray(x_MxT).astype(bool)
  lead, T = x.shape[:-1], x.shape[-1]
  R = max((T + 1) // 2, 1)
  x2 = x.reshape(-1, T)
  prev = np.zeros_like(x2)
  prev[:, 1:] = x2[:, :-1]
  nxt = np.zeros_like(x2)
  nxt[:, :-1] = x2[:, 1:]
  starts_MxT = x2 & ~prev
  ends_MxT = x2 & ~nxt
  # Run index of every position; at an end it is the index of its own run.
  k_MxT = np.cumsum(starts_MxT, axis=-1) - 1
  start_MxR = np.zeros((x2.shape[0], R), np.int64)
  end_MxR = np.zeros((x2.shape[0], R), np.int64)
  m, t = np.nonzero(starts_MxT)
  start_MxR[m, k_MxT[m, t]] = t
  m, t = np.nonzero(ends_MxT)
  end_MxR[m, k_MxT[m, t]] = t + 1
  valid_MxR = np.arange(R)[None, :] < starts_MxT.sum(-1, keepdims=True)
  shape = lead + (R,)
  return (start_MxR.reshape(shape), end_MxR.reshape(shape),
          valid_MxR.reshape(shape))


def events_from_row(row_T: np.ndarray) -> list[tuple[int, int]]:
  """The events of one 1-D 0/1 row as [(start, end_exclusive), ...]."""
  row_T = np.asarray(row_T)
  if row_T.ndim != 1:
    raise ValueError(f"row_T must be 1-D; got shape {row_T.shape}.")
  start, end, valid = event_runs(row_T)
  return [(int(s), int(e)) for s, e, v in zip(start, end, valid) if v]


def events_to_segments(events: Sequence[tuple[int, int]],
                       num_segments: int) -> np.ndarray:
  """Inverse of `events_from_row`: uint8 [num_segments] with 1 on each event."""
  row_T = np.zeros((num_segments,), np.uint8)
  for start, end in events:
    if not 0 <= start <= end <= num_segments:
      raise ValueError(
          f"event ({start}, {end}) is outside [0, {num_segments}]; expected"
          " 0 <= start <= end <= num_segments.")
    row_T[start:end] = 1
  return row_T


# ----------------------------------------------------------------------------
# Counts and per-video F.


_TABLE_MAX_T = 10  # up to here event counts come from a [2^T, 2^T] table


def _match(ps, pe, pv, gs, ge, gv):
  """Event matching (IoU >= 0.5, inclusive) of runs [K, Rp] and [K, Rg].

  Returns (tp, matched_gt), [K] each: how many pred runs match some GT run,
  and how many GT runs match some pred run.
  """
  ps, pe, pv = ps[:, :, None], pe[:, :, None], pv[:, :, None]
  gs, ge, gv = gs[:, None, :], ge[:, None, :], gv[:, None, :]
  inter = np.maximum(np.minimum(pe, ge) - np.maximum(ps, gs), 0)
  union = (pe - ps) + (ge - gs) - inter
  # Eq. (M2): sum(p*g) >= 0.5 * sum(p + g - p*g); exact in integers.
  match_KxRxR = pv & gv & (2 * inter >= union)
  return match_KxRxR.any(2).sum(1), match_KxRxR.any(1).sum(1)


@functools.lru_cache(maxsize=None)
def _pair_tables(T: int):
  """Lookup tables over row codes (bit t = segment t), K = 2^T codes.

  Returns popcount [K], n_runs [K] and hits [K * K] where hits[a * K + b] is
  the number of runs of row a that match some run of row b. IoU is symmetric,
  so for pred p and GT g: TP = hits[p, g] and matched GT runs = hits[g, p].
  """
  K = 2**T
  bits_KxT = (np.arange(K)[:, None] >> np.arange(T)[None, :]) & 1
  start_KxR, end_KxR, valid_KxR = event_runs(bits_KxT)
  # All intervals [s, e), each matched against every row code.
  s_I, e_I = np.triu_indices(T + 1, k=1)
  s, e = s_I[:, None, None], e_I[:, None, None]
  inter = np.maximum(np.minimum(e, end_KxR) - np.maximum(s, start_KxR), 0)
  union = (e - s) + (end_KxR - start_KxR) - inter
  hit_IxK = (valid_KxR & (2 * inter >= union)).any(-1)
  hit_IxK = np.concatenate([hit_IxK, np.zeros((1, K), bool)])  # no run
  interval_id = np.full((T + 1, T + 1), s_I.size)
  interval_id[s_I, e_I] = np.arange(s_I.size)
  run_id_KxR = np.where(valid_KxR, interval_id[start_KxR, end_KxR], s_I.size)
  hits_KxK = hit_IxK[run_id_KxR].sum(1, dtype=np.int16)
  return (bits_KxT.sum(-1).astype(np.int16),
          valid_KxR.sum(-1).astype(np.int16), hits_KxK.reshape(-1))


def _counts(p_MxT: np.ndarray, g_MxT: np.ndarray):
  """Segment and event (TP, FN, FP) per row, each float64 [M] (integers)."""
  T = p_MxT.shape[-1]
  if T <= _TABLE_MAX_T:
    popcount, n_runs, hits = _pair_tables(T)
    w_T = (1 << np.arange(T)).astype(np.int32)
    p_M = p_MxT.astype(np.int32) @ w_T
    g_M = g_MxT.astype(np.int32) @ w_T
    tp_seg, n_p, n_g = popcount[p_M & g_M], popcount[p_M], popcount[g_M]
    runs_p, runs_g = n_runs[p_M], n_runs[g_M]
    tp_evt = hits[p_M * 2**T + g_M]
    matched_g = hits[g_M * 2**T + p_M]
  else:
    tp_seg = np.sum(p_MxT & g_MxT, axis=-1)
    n_p, n_g = p_MxT.sum(-1), g_MxT.sum(-1)
    ps, pe, pv = event_runs(p_MxT)
    gs, ge, gv = event_runs(g_MxT)
    runs_p, runs_g = pv.sum(-1), gv.sum(-1)
    tp_evt, matched_g = np.zeros_like(runs_p), np.zeros_like(runs_g)
    both = np.nonzero((n_p != 0) & (n_g != 0))[0]
    tp_evt[both], matched_g[both] = _match(
        ps[both], pe[both], pv[both], gs[both], ge[both], gv[both])
  f64 = lambda x: x.astype(np.float64)
  seg = (f64(tp_seg), f64(n_g - tp_seg), f64(n_p - tp_seg))
  # With an empty side nothing matches: pred events are FPs, GT events FNs.
  evt = (f64(tp_evt), f64(runs_g - matched_g), f64(runs_p - tp_evt))
  return seg, evt


def _video_f(tp, fn, fp) -> np.ndarray:
  """Mean class F over present classes, 1.0 if none (Eq. (M3)); [..., C] ->
  [...]."""
  present = (tp + fp != 0) | (tp + fn != 0)
  denom = 2 * tp + (fn + fp)
  f = np.where(present, 2 * tp / np.where(present, denom, 1.0), 0.0)
  # A sequential sum over classes, like the official python `sum(list)`, so
  # the per-video values are bit-identical (adding 0.0 is exact).
  total = np.cumsum(f, axis=-1)[..., -1]
  count = present.sum(-1)
  return np.where(count > 0, total / np.maximum(count, 1), 1.0)


def _check_binary(name: str, x: Any) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 3:
    raise ValueError(
        f"{name} has shape {x.shape}; expected [N, C, T] (video, class,"
        " segment), e.g. [N, 25, 10] for LLP.")
  if min(x.shape) == 0:
    raise ValueError(f"{name} has shape {x.shape}; every axis must be >= 1.")
  if x.dtype == np.bool_:
    return x
  if not (np.issubdtype(x.dtype, np.integer)
          or np.issubdtype(x.dtype, np.floating)):
    raise ValueError(f"{name} has dtype {x.dtype}; expected bool or 0/1"
                     " numbers (uint8).")
  bad = (x != 0) & (x != 1)
  if bad.any():
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
        f"{name} must hold only 0/1; found {x[idx]!r} at index {idx}"
        f" ({int(bad.sum())} bad entries). Binarise predictions first, e.g."
        " with metrics.binarize_parser_outputs.")
  return x != 0


def avvp_scores(pred_a, pred_v, gt_a, gt_v, per_video: bool = False) -> dict:
  """The ten official LLP numbers (AGGREGATE_KEYS), in percent.

  Per video and modality (a, v, av = a AND v), the F of each class present in
  the prediction or GT is averaged (1.0 if none is); "event" adds the a and v
  counts per class first. Aggregates are 100 x the mean over videos, and
  type = (av + a + v) / 3, as in the official code (Eq. (M4)).

  Args:
    pred_a, pred_v, gt_a, gt_v: bool / 0-1 arrays [N, C, T].
    per_video: also return "per_video": {key: float64 [N]} as fractions,
      for the eight keys of PER_VIDEO_KEYS.
  """
  arrays = dict(pred_a=pred_a, pred_v=pred_v, gt_a=gt_a, gt_v=gt_v)
  arrays = {k: _check_binary(k, v) for k, v in arrays.items()}
  shapes = {k: v.shape for k, v in arrays.items()}
  if len(set(shapes.values())) != 1:
    raise ValueError(f"pred_a, pred_v, gt_a and gt_v must share one shape"
                     f" [N, C, T]; got {shapes}.")
  pa, pv, ga, gv = (arrays[k] for k in ("pred_a", "pred_v", "gt_a", "gt_v"))
  # AV from the AND-ed rows, for predictions and GT; [3, N, C, T].
  N, C, T = pa.shape
  pred_3NCxT = np.stack([pa, pv, pa & pv]).reshape(-1, T)
  gt_3NCxT = np.stack([ga, gv, ga & gv]).reshape(-1, T)
  counts = _counts(pred_3NCxT, gt_3NCxT)

  out = {}
  for level, level_counts in zip(("seg", "evt"), counts):
    tp, fn, fp = (x.reshape(3, N, C) for x in level_counts)
    f_MxN = _video_f(tp, fn, fp)
    # Event@AV: per-class a + v counts, then F.
    f_event_N = _video_f(tp[0] + tp[1], fn[0] + fn[1], fp[0] + fp[1])
    out[f"{level}_a"], out[f"{level}_v"], out[f"{level}_av"] = f_MxN
    out[f"{level}_event"] = f_event_N

  scores = {k: 100 * np.mean(v) for k, v in out.items()}
  for level in ("seg", "evt"):
    # Same operand order as the official main_avvp.eval().
    scores[f"{level}_type"] = (scores[f"{level}_av"] + scores[f"{level}_a"]
                               + scores[f"{level}_v"]) / 3.0
  result = {k: float(scores[k]) for k in AGGREGATE_KEYS}
  if per_video:
    result["per_video"] = {k: out[k].astype(np.float64) for k in PER_VIDEO_KEYS}
  return result


def per_class_f1(pred_a, pred_v, gt_a, gt_v) -> dict[str, dict[str, list]]:
  """Per-class F1 in percent, counts pooled over all videos (not an official
  number; the ten aggregates average per video instead).

  {"seg" | "evt": {"a" | "v" | "av" | "event": [C] values}}: TP, FN, FP of
  class c summed over videos (segments, or events matched at IoU >= 0.5 as
  in avvp_scores), F1 = 2 TP / (2 TP + FN + FP); "event" adds the a and v
  counts. None where class c is in neither predictions nor GT.
  """
  arrays = [_check_binary(k, v) for k, v in (("pred_a", pred_a),
                                            ("pred_v", pred_v),
                                            ("gt_a", gt_a), ("gt_v", gt_v))]
  if len({x.shape for x in arrays}) != 1:
    raise ValueError("pred_a, pred_v, gt_a and gt_v must share one shape"
                     f" [N, C, T]; got {[x.shape for x in arrays]}.")
  pa, pv, ga, gv = arrays
  N, C, T = pa.shape
  counts = _counts(np.stack([pa, pv, pa & pv]).reshape(-1, T),
                   np.stack([ga, gv, ga & gv]).reshape(-1, T))
  out = {}
  for level, level_counts in zip(("seg", "evt"), counts):
    tp, fn, fp = (x.reshape(3, N, C).sum(1) for x in level_counts)
    rows = {m: (tp[i], fn[i], fp[i]) for i, m in enumerate(("a", "v", "av"))}
    rows["event"] = (tp[0] + tp[1], fn[0] + fn[1], fp[0] + fp[1])
    out[level] = {}
    for m, (t, n, p) in rows.items():
      denom = 2 * t + n + p
      out[level][m] = [None if d == 0 else float(100 * 2 * x / d)
                       for x, d in zip(t, denom)]
  return out


# ----------------------------------------------------------------------------
# Model outputs -> binary matrices, Eq. (M1).


def sigmoid_f32(x: np.ndarray) -> np.ndarray:
  """Stable float32 sigmoid, the one the binarisation thresholds."""
  x = np.asarray(x, np.float32)
  e = np.exp(-np.abs(x))
  one = np.float32(1)
  return np.where(x >= 0, one / (one + e), e / (one + e)).astype(np.float32)


def binarize_parser_outputs(global_prob_BxC, a_logits_BxTxC, v_logits_BxTxC,
                            strict: bool = True):
  """Parser outputs -> (pred_a, pred_v), uint8 [B, C, T].

  o_c = global_prob_c > 0.5; P[c, t] = (sigmoid(logit[t, c]) > 0.5) AND o_c.
  strict=False uses >= for both tests (HAN-code / VALOR-code).
  """
  g_BxC = np.asarray(global_prob_BxC, np.float32)
  a_BxTxC = np.asarray(a_logits_BxTxC, np.float32)
  v_BxTxC = np.asarray(v_logits_BxTxC, np.float32)
  if g_BxC.ndim != 2:
    raise ValueError(f"global_prob_BxC has shape {g_BxC.shape}; expected"
                     " [B, C].")
  expect = (g_BxC.shape[0], None, g_BxC.shape[1])
  for name, x in (("a_logits_BxTxC", a_BxTxC), ("v_logits_BxTxC", v_BxTxC)):
    if x.ndim != 3 or x.shape[0] != expect[0] or x.shape[2] != expect[2]:
      raise ValueError(f"{name} has shape {x.shape}; expected [B, T, C] ="
                       f" [{expect[0]}, T, {expect[2]}] to match"
                       f" global_prob_BxC {g_BxC.shape}.")
  for name, x in (("global_prob_BxC", g_BxC), ("a_logits_BxTxC", a_BxTxC),
                  ("v_logits_BxTxC", v_BxTxC)):
    if np.isnan(x).any():
      raise ValueError(f"{name} contains NaN; the parser output is broken.")
  half = np.float32(0.5)
  cmp = np.greater if strict else np.greater_equal
  o_Bx1xC = cmp(g_BxC, half)[:, None, :]
  pred_a = cmp(sigmoid_f32(a_BxTxC), half) & o_Bx1xC
  pred_v = cmp(sigmoid_f32(v_BxTxC), half) & o_Bx1xC
  return (np.ascontiguousarray(pred_a.transpose(0, 2, 1)).astype(np.uint8),
          np.ascontiguousarray(pred_v.transpose(0, 2, 1)).astype(np.uint8))


# ----------------------------------------------------------------------------
# Reporting.


def with_avg(scores: Mapping[str, Any]) -> dict:
  """Copy of the ten aggregates plus "avg", their mean (EAR's Avg. column)."""
  missing = [k for k in AGGREGATE_KEYS if k not in scores]
  if missing:
    raise ValueError(f"scores lack {missing}; expected the ten keys"
                     f" {list(AGGREGATE_KEYS)} from avvp_scores.")
  out = {k: float(scores[k]) for k in AGGREGATE_KEYS}
  out["avg"] = float(np.mean([out[k] for k in AGGREGATE_KEYS]))
  return out


def write_eval_json(path, scores: Mapping[str, Any],
                    extra: Mapping[str, Any] | None = None) -> dict:
  """Atomically writes the ten aggregates + avg (+ extra metadata) as JSON."""
  row = eval_row(scores, extra)
  jsonio.write_json_atomic(path, row)
  return row


def eval_row(scores: Mapping[str, Any],
             extra: Mapping[str, Any] | None = None) -> dict:
  """The eval/<split>.json object: the ten aggregates, avg and `extra`."""
  return _with_extra(with_avg(scores), extra, "metric values")


def _with_extra(row: dict, extra: Mapping[str, Any] | None, what: str
                ) -> dict:
  """row updated with `extra`, refusing keys that would overwrite `what`."""
  extra = dict(extra or {})
  clash = sorted(set(extra) & set(row))
  if clash:
    raise ValueError(f"extra keys {clash} would overwrite {what}; rename"
                     " them.")
  row.update(extra)
  return row


SEED_KEYS = AGGREGATE_KEYS + ("avg",)


def seeds_row(per_seed_scores: Sequence[Mapping[str, Any]], seeds,
              extra: Mapping[str, Any] | None = None,
              keys: Sequence[str] | None = None) -> dict:
  """The eval/<split>_seeds.json object of N seeds' scores (seed order):
  {"seeds", "n", "per_seed": {metric: [N values]}, "mean", "std", "ci95"
  (Student-t 95% half-width; std and ci95 None when n = 1)} over the ten
  aggregates and avg (or the metrics `keys`, e.g. UnAV's seg_av, evt_av),
  plus `extra`."""
  rows = [with_avg(s) if keys is None else {k: float(s[k]) for k in keys}
          for s in per_seed_scores]
  if len(rows) != len(seeds) or not rows:
    raise ValueError(f"{len(rows)} score rows for seeds {list(seeds)}; expected"
                     " one per seed (at least one).")
  per_seed = {k: [r[k] for r in rows] for k in (keys or SEED_KEYS)}
  out = dict(seeds=[int(s) for s in seeds], n=len(rows), per_seed=per_seed,
             **stats_lib.summarize(per_seed))
  return _with_extra(out, extra, "the seed summary")


def write_seed_eval_json(eval_dir, split: str,
                         per_seed_scores: Sequence[Mapping[str, Any]], seeds,
                         extra: Mapping[str, Any] | None = None,
                         seed_extra: Mapping[str, Any] | None = None
                         ) -> tuple[dict, dict]:
  """Scores of N seeds: <eval_dir>/<split>_seeds.json (`seeds_row`, with
  `extra`) and then <split>.json, the ten aggregates' mean over seeds (+
  avg, `extra`, `seed_extra`, num_seeds and seeds), each atomically.
  Returns (mean row, seeds row)."""
  extra = dict(extra or {})
  spread = seeds_row(per_seed_scores, seeds, extra)
  jsonio.write_json_atomic(os.path.join(os.fspath(eval_dir),
                                        f"{split}_seeds.json"), spread)
  mean = {k: spread["mean"][k] for k in AGGREGATE_KEYS}
  row = write_eval_json(
      os.path.join(os.fspath(eval_dir), f"{split}.json"), mean,
      extra=dict(extra, **dict(seed_extra or {}), num_seeds=spread["n"],
                 seeds=spread["seeds"]))
  return row, spread


def read_seed_eval_json(eval_json_path) -> dict | None:
  """The <split>_seeds.json beside an eval/<split>.json path; None if there
  is none (a one-seed run)."""
  path = os.fspath(eval_json_path)
  if not path.endswith(".json"):
    return None
  path = path[:-len(".json")] + "_seeds.json"
  return jsonio.read_json(path) if os.path.isfile(path) else None


def write_eval_details(eval_dir, split: str, filenames, class_names,
                       pred_a, pred_v, gt_a, gt_v) -> dict[str, str]:
  """Beside eval/<split>.json (unchanged): <split>_per_class.json (per-class
  F1 in percent, per_class_f1) and <split>_per_video.csv (the per-video
  values of PER_VIDEO_KEYS in percent, one row per filename)."""
  per_class = per_class_f1(pred_a, pred_v, gt_a, gt_v)
  per_video = avvp_scores(pred_a, pred_v, gt_a, gt_v,
                          per_video=True)["per_video"]
  if len(filenames) != len(per_video[PER_VIDEO_KEYS[0]]):
    raise ValueError(f"{len(filenames)} filenames for"
                     f" {len(per_video[PER_VIDEO_KEYS[0]])} videos.")
  classes = list(class_names)
  paths = {}
  paths["per_class"] = jsonio.write_json_atomic(
      os.path.join(eval_dir, f"{split}_per_class.json"),
      dict(split=split, classes=classes, note=(
          "F1 (%) per class, TP/FN/FP pooled over the split's videos; not"
          " an official LLP number"), **{
              level: {m: dict(zip(classes, v)) for m, v in rows.items()}
              for level, rows in per_class.items()}))
  lines = ["\t".join(("filename",) + PER_VIDEO_KEYS)]
  for i, name in enumerate(filenames):
    lines.append("\t".join([name] + [f"{100 * per_video[k][i]:.4f}"
                                      for k in PER_VIDEO_KEYS]))
  paths["per_video"] = jsonio.write_text_atomic(
      os.path.join(eval_dir, f"{split}_per_video.csv"),
      "\n".join(lines) + "\n")
  return paths


def is_spread(scores: Mapping[str, Any]) -> bool:
  """A table row over seeds ({"mean", "std", "n"}, e.g. a seeds_row) rather
  than one run's scores."""
  return isinstance(scores.get("mean"), Mapping) and "n" in scores


def row_label(name: str, scores: Mapping[str, Any]) -> str:
  """The row name, with "(n=N)" for a row over N > 1 seeds."""
  if is_spread(scores) and int(scores["n"]) > 1:
    return f"{name} (n={int(scores['n'])})"
  return str(name)


def row_cells(scores: Mapping[str, Any]) -> list[str]:
  """The eleven cells (ten aggregates, avg) of a row: "87.2" for one run,
  "87.2 ± 0.4" (mean ± sample std) for a row over N > 1 seeds."""
  if not is_spread(scores):
    s = with_avg(scores)
    return [f"{s[k]:.1f}" for k in SEED_KEYS]
  mean = with_avg(scores["mean"])
  mean["avg"] = float(scores["mean"].get("avg", mean["avg"]))
  std = scores.get("std") or {}
  return [f"{mean[k]:.1f}" if std.get(k) is None
          else f"{mean[k]:.1f} ± {std[k]:.1f}" for k in SEED_KEYS]


def format_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
  """Paper layout: Seg A V AV Type Event | Evt A V AV Type Event | Avg.

  A row is one run's scores, or a row over seeds (`is_spread`): it prints
  mean ± std per cell and "(n=N)" after its name. A table without such
  rows prints exactly as it always has."""
  if any(is_spread(s) for s in rows.values()):
    return _format_spread_table(rows)
  names = [str(n) for n in rows]
  w = max([len(n) for n in names] + [6])
  cols = ("A", "V", "AV", "Type", "Event")
  head = (" " * w + " | " + " ".join(f"{c:>5}" for c in cols) + " | "
          + " ".join(f"{c:>5}" for c in cols) + " |   Avg")
  top = (" " * w + " | " + f"{'Segment-level':<29}" + " | "
         + f"{'Event-level':<29}" + " |")
  lines = [top, head, "-" * len(head)]
  for name, scores in rows.items():
    s = with_avg(scores)
    seg = " ".join(f"{s[k]:5.1f}" for k in AGGREGATE_KEYS[:5])
    evt = " ".join(f"{s[k]:5.1f}" for k in AGGREGATE_KEYS[5:])
    lines.append(f"{str(name):<{w}} | {seg} | {evt} | {s['avg']:5.1f}")
  return "\n".join(lines)


def _format_spread_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
  names = [row_label(n, s) for n, s in rows.items()]
  cells = [row_cells(s) for s in rows.values()]
  w = max([len(n) for n in names] + [6])
  c = max([len(x) for row in cells for x in row] + [5])
  cols = ("A", "V", "AV", "Type", "Event")
  block = 5 * c + 4
  head = (" " * w + " | " + " ".join(f"{x:>{c}}" for x in cols) + " | "
          + " ".join(f"{x:>{c}}" for x in cols) + f" | {'Avg':>{c}}")
  top = (" " * w + " | " + f"{'Segment-level':<{block}}" + " | "
         + f"{'Event-level':<{block}}" + " |")
  lines = [top, head, "-" * len(head)]
  for name, row in zip(names, cells):
    seg = " ".join(f"{x:>{c}}" for x in row[:5])
    evt = " ".join(f"{x:>{c}}" for x in row[5:10])
    lines.append(f"{name:<{w}} | {seg} | {evt} | {row[10]:>{c}}")
  lines.append("(mean ± sample std over seeds; n = number of seeds)")
  return "\n".join(lines)
