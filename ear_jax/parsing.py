"""Parsing videos of any length with a parser trained on W-segment clips.

The merge rule (docs/ARCHITECTURE.md "Parsing videos of any length"), for a
video of T one-second segments, windows of W segments and stride S:

  windows     starts 0, S, 2S, ... while start + W <= T, plus T - W when
              those stop short of the end, so every segment is covered. A
              video with T <= W is one window, zero-padded to W (the model
              sees the padding; every output of a padded segment is dropped).
  segments    p_m[c, t] = mean over the windows k covering t of
              sigmoid(logit_m[k, t - start_k, c]), m = audio, visual.
  gate        g[c, t] = mean over the windows covering t of window k's
              video-level probability P_k(c) (its MMIL output).
  prediction  pred_m[c, t] = p_m[c, t] > 0.5 and g[c, t] > 0.5 (>= both
              when not strict). With one window (T = W) this is exactly
              metrics.binarize_parser_outputs of today's 10-segment path.
  video level P(c) = min(1, max over windows of P_k(c)) (JSON
              `video_level`): MMIL's attention-pooled value can exceed 1
              (up to 2; the reference clips it only in its loss), so it is
              reported clipped to [0, 1].
  events      maximal runs of pred_a, pred_v and pred_a AND pred_v (as in the
              metrics); confidence = mean over the event of p_m (p_a p_v for
              audio-visual) x min(1, max over the event of g), in [0, 1]:
              with one window, mean(p) x P(c).

A clip repeated k times (T = k W) parsed with stride W gives every window
the clip itself, hence the clip's rows repeated (tests/parsing_test.py).
`Parser` wraps a finished stage-3 run: batched over windows of many
videos, one jitted step per window length.
"""
# pylint: disable=invalid-name

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

from flax import nnx
import jax
import numpy as np

from ear_jax import evaluator as evaluator_lib
from ear_jax import jsonio
from ear_jax import metrics as metrics_lib
from ear_jax import parser_lib
from ear_jax import report as report_lib
from ear_jax import sharding as sharding_lib
from ear_jax import validate as validate_lib
from ear_jax.data import avvp
from ear_jax.data import llp_features

WINDOW = avvp.LLP_NUM_SEGMENTS  # the parsers are trained on 10-s LLP clips


def window_starts(T: int, window: int, stride: int) -> list[int]:
  """First segment of each window; see the module docstring."""
  if T < 1 or window < 1 or stride < 1:
    raise ValueError(f"T={T}, window={window}, stride={stride}; all must be"
                     " >= 1.")
  if stride > window:
    raise ValueError(f"stride={stride} > window={window} would skip"
                     " segments; use stride <= window.")
  if T <= window:
    return [0]
  starts = list(range(0, T - window + 1, stride))
  if starts[-1] != T - window:
    starts.append(T - window)
  return starts


def make_windows(x_TxD: np.ndarray, window: int,
                 starts: Sequence[int]) -> np.ndarray:
  """float32 [K, window, D]: the windows of x, zero-padded past T."""
  x_TxD = np.asarray(x_TxD, np.float32)
  T, D = x_TxD.shape
  out = np.zeros((len(starts), window, D), np.float32)
  for k, s in enumerate(starts):
    n = min(window, T - s)
    out[k, :n] = x_TxD[s:s + n]
  return out


@dataclasses.dataclass
class Merged:
  """One video's merged prediction: [C, T] probabilities (float64), gate
  (float32) and 0/1 predictions (uint8); video_prob [C] float32."""

  prob_a: np.ndarray
  prob_v: np.ndarray
  gate: np.ndarray
  video_prob: np.ndarray  # [C]
  pred_a: np.ndarray
  pred_v: np.ndarray
  starts: list[int]

  @property
  def num_segments(self) -> int:
    return self.prob_a.shape[1]


def merge_windows(global_prob_KxC, a_logits_KxWxC, v_logits_KxWxC,
                  starts: Sequence[int], T: int, strict: bool = True
                  ) -> Merged:
  """Window outputs of one video -> its merged prediction (module rule)."""
  g_KxC = np.asarray(global_prob_KxC, np.float32)
  K, W, C = np.shape(a_logits_KxWxC)
  if g_KxC.shape != (K, C) or np.shape(v_logits_KxWxC) != (K, W, C):
    raise ValueError(
        f"window outputs disagree: global_prob {g_KxC.shape}, a_logits"
        f" {np.shape(a_logits_KxWxC)}, v_logits {np.shape(v_logits_KxWxC)};"
        " expected [K, C], [K, W, C], [K, W, C].")
  if len(starts) != K:
    raise ValueError(f"{len(starts)} window starts for {K} windows.")
  # Thresholds on the float32 sigmoid (as metrics.binarize_parser_outputs);
  # probabilities reported in float64 (as the stage-3 outputs always were).
  sig = {m: (metrics_lib.sigmoid_f32(x),
             1 / (1 + np.exp(-np.asarray(x, np.float64))))
         for m, x in (("a", a_logits_KxWxC), ("v", v_logits_KxWxC))}
  sums = {(m, d): np.zeros((T, C), dt) for m in "av"
          for d, dt in ((0, np.float32), (1, np.float64))}
  sum_g = np.zeros((T, C), np.float32)
  count = np.zeros((T, 1), np.int64)
  for k, s in enumerate(starts):
    n = min(W, T - s)
    for (m, d), acc in sums.items():
      acc[s:s + n] += sig[m][d][k, :n]
    sum_g[s:s + n] += g_KxC[k]
    count[s:s + n] += 1
  if (count == 0).any():
    raise ValueError(f"windows {list(starts)} of width {W} leave segments of"
                     f" a {T}-segment video uncovered.")
  # x / 1 is exact: with one window these are the window's own values.
  mean = lambda x: (x / count.astype(x.dtype)).T
  g = mean(sum_g)
  half = np.float32(0.5)
  cmp = np.greater if strict else np.greater_equal
  on = cmp(g, half)
  pred = {m: (cmp(mean(sums[(m, 0)]), half) & on).astype(np.uint8)
          for m in "av"}
  c = np.ascontiguousarray
  # MMIL's attention-pooled video value is not a probability (up to 2: the
  # reference clips it only inside its loss); reported clipped to [0, 1].
  # The gate's decisions above use it as is; clipping changes no `> 0.5`.
  return Merged(prob_a=c(mean(sums[("a", 1)])), prob_v=c(mean(sums[("v", 1)])),
                gate=c(g), video_prob=np.clip(g_KxC.max(0), 0.0, 1.0),
                pred_a=c(pred["a"]),
                pred_v=c(pred["v"]), starts=list(starts))


def events_of(merged: Merged, class_names: Sequence[str] = avvp.LLP_CLASSES,
              min_confidence: float = 0.0) -> list[dict]:
  """The events of a merged prediction (report.extract_events)."""
  return report_lib.extract_events(
      merged.pred_a, merged.pred_v, merged.prob_a, merged.prob_v,
      merged.video_prob, class_names, min_confidence=min_confidence,
      gate_CxT=merged.gate)


# ----------------------------------------------------------------------------
# A trained parser.


@dataclasses.dataclass
class Parsed:
  """One parsed video: its events and the merged prediction behind them."""

  video_id: str
  events: list[dict]
  merged: Merged

  def to_json(self, class_names=avvp.LLP_CLASSES, **extra) -> dict:
    m = self.merged
    return dict(
        video_id=self.video_id, num_segments=m.num_segments, **extra,
        events=self.events,
        video_level={c: round(float(p), 6)
                     for c, p in zip(class_names, m.video_prob)})


class Parser:
  """A finished stage-3 parser that parses features or videos of any length.

    parser = ear_jax.Parser.from_workdir("/runs/s3")
    events = parser.parse_features(audio_TxDa, visual_TxDv)

  Windows of every video given in one call are predicted together in
  batches of `batch_size` windows (zero-padded, masked), through one jitted
  step per window length, on every local device.
  """

  def __init__(self, run_config, graphdef, weights, *, window: int = WINDOW,
               stride: int | None = None, batch_size: int = 64,
               strict: bool | None = None, min_confidence: float = 0.0,
               info: Mapping[str, Any] | None = None):
    self.config = run_config
    self.window = int(window)
    self.stride = int(stride) if stride else max(1, self.window // 2)
    window_starts(self.window, self.window, self.stride)  # validates
    self.strict = bool(run_config.eval.strict if strict is None else strict)
    self.min_confidence = float(min_confidence)
    self.feature_set = run_config.data.features
    self.use_3d = bool(run_config.model.get("use_3d_with_clip", False))
    self.features = llp_features.feature_names(self.feature_set, self.use_3d)
    self.in_dims = llp_features.parser_input_dims(self.feature_set,
                                                  self.use_3d)
    self.classes = list(avvp.LLP_CLASSES)
    self.info = dict(info or {})
    self.mesh = mesh = sharding_lib.make_mesh()
    sharding_lib.check_batch_size(batch_size, "parser batch_size", mesh)
    self.batch_size = int(batch_size)
    self.weights = weights

    # evaluator.Predictor's program on one batch of windows at a time, so
    # one fixed shape per window length compiles once and a 10-segment
    # video gets the numbers the 10-segment path (a Predictor over the
    # split, same batch size) gives.
    def step(weights_, data, idx_1xB, mask_1xB):
      model = nnx.merge(graphdef, weights_["params"], weights_["model_state"])

      def body(carry, xs):
        batch = sharding_lib.constrain_batch(
            evaluator_lib.gather(data, *xs), mesh)
        return carry, parser_lib.predict_fn(model, batch)

      return jax.lax.scan(body, None, (idx_1xB, mask_1xB))[1]

    self._step = jax.jit(step)  # one trace per (batch, window, dims) shape
    self._idx = np.arange(batch_size, dtype=np.int32)[None]
    self._put = lambda data: sharding_lib.put_replicated(data, mesh)

  @classmethod
  def from_workdir(cls, parser_workdir: str, checkpoint: str = "auto",
                   **kwargs) -> "Parser":
    """The parser of a finished stage-3 run (its config.json + checkpoint).

    kwargs: window, stride (default half a window), batch_size, strict
    (default: the run's eval.strict), min_confidence.
    """
    cfg, graphdef, weights, step, which = parser_lib.load_parser(
        parser_workdir, checkpoint)
    info = dict(parser_workdir=os.path.abspath(parser_workdir),
                model=cfg.model.name, checkpoint=which, checkpoint_step=step,
                features=cfg.data.features)
    return cls(cfg, graphdef, weights, info=info, **kwargs)

  # -- windows ----------------------------------------------------------------

  def predict_windows(self, audio_KxWxDa: np.ndarray,
                      visual_KxWxDv: np.ndarray) -> dict[str, np.ndarray]:
    """global_prob [K,C], a_logits/v_logits [K,W,C] of K windows."""
    K = len(audio_KxWxDa)
    B = self.batch_size
    outs = []
    for lo in range(0, K, B):
      n = min(B, K - lo)
      data = dict(audio=_pad_rows(audio_KxWxDa[lo:lo + n], B),
                  visual=_pad_rows(visual_KxWxDv[lo:lo + n], B))
      mask = (np.arange(B) < n).astype(np.float32)[None]
      data = self._put(data)
      out = jax.device_get(self._step(self.weights, data, self._idx, mask))
      outs.append({k: np.asarray(v)[0, :n] for k, v in out.items()})
    keys = ("global_prob", "a_logits", "v_logits")
    if not outs:
      return {k: np.zeros((0,)) for k in keys}
    return {k: np.concatenate([o[k] for o in outs]) for k in keys}

  def check_inputs(self, audio_TxD, visual_TxD, name: str = "video"):
    """float32 (audio [T, Da], visual [T, Dv]) or a ValueError naming `name`."""
    a = np.asarray(audio_TxD, np.float32)
    v = np.asarray(visual_TxD, np.float32)
    da, dv = self.in_dims
    if a.ndim != 2 or v.ndim != 2 or a.shape[1] != da or v.shape[1] != dv:
      raise ValueError(
          f"{name}: audio {a.shape} and visual {v.shape}; the"
          f" {self.feature_set!r} parser takes [T, {da}] and [T, {dv}].")
    if a.shape[0] != v.shape[0] or a.shape[0] < 1:
      raise ValueError(
          f"{name}: audio has {a.shape[0]} segments and visual"
          f" {v.shape[0]}; both must have the same T >= 1 (re-export the"
          " video's features).")
    if not (np.isfinite(a).all() and np.isfinite(v).all()):
      raise ValueError(f"{name}: the features contain NaN or inf.")
    return a, v

  def parse_many(self, videos: Sequence[tuple[str, Any, Any]]
                 ) -> list[Parsed]:
    """[(video_id, audio_TxDa, visual_TxDv)] -> [Parsed], one batched pass."""
    W, starts_of, wins_a, wins_v = self.window, [], [], []
    checked = []
    for vid, a, v in videos:
      a, v = self.check_inputs(a, v, vid)
      starts = window_starts(a.shape[0], W, self.stride)
      starts_of.append(starts)
      wins_a.append(make_windows(a, W, starts))
      wins_v.append(make_windows(v, W, starts))
      checked.append((vid, a.shape[0]))
    if not checked:
      return []
    out = self.predict_windows(np.concatenate(wins_a), np.concatenate(wins_v))
    parsed, k = [], 0
    for (vid, T), starts in zip(checked, starts_of):
      sl = slice(k, k + len(starts))
      k += len(starts)
      merged = merge_windows(out["global_prob"][sl], out["a_logits"][sl],
                             out["v_logits"][sl], starts, T, self.strict)
      parsed.append(Parsed(vid, events_of(merged, self.classes,
                                          self.min_confidence), merged))
    return parsed

  def parse_features(self, audio_TxD, visual_TxD) -> list[dict]:
    """Events of one video from its parser inputs (any T >= 1)."""
    return self.parse_many([("video", audio_TxD, visual_TxD)])[0].events

  def parse_video(self, path: str, exporters: Sequence[Any],
                  chunk_segments: int = 60) -> list[dict]:
    """Events of one raw video: `exporters` (feature_export exporters, e.g.
    registry.get_exporter(config)) make the features this parser needs."""
    return self.parse_video_full(path, exporters, chunk_segments).events

  def parse_video_full(self, path: str, exporters: Sequence[Any],
                       chunk_segments: int = 60) -> Parsed:
    """parse_video, returning the Parsed record (merged prediction too)."""
    try:  # the optional `export` extra (PyAV, exporters)
      # pylint: disable-next=g-import-not-at-top
      from feature_export import driver as export_driver
    except ImportError as e:
      raise ImportError("parse_video needs the feature exporters: pip install"
                        " 'ear-jax[export]'") from e
    arrays = {}
    for exporter in exporters:
      want = tuple(f for f in exporter.features if f in self.features
                   and f not in arrays)
      if want:
        got, _ = export_driver.extract(exporter, path, features=want,
                                       chunk_segments=chunk_segments)
        arrays.update(got)
    missing = [f for f in self.features if f not in arrays]
    if missing:
      raise ValueError(
          f"the {self.feature_set!r} parser needs features {self.features};"
          f" the exporters given make {sorted(arrays)} (missing {missing}).")
    vid = os.path.splitext(os.path.basename(path))[0]
    audio, visual = llp_features.inputs_from_arrays(
        arrays, self.feature_set, self.use_3d, name=path)
    return self.parse_many([(vid, audio, visual)])[0]


def _pad_rows(x: np.ndarray, n: int) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if len(x) == n:
    return x
  return np.concatenate([x, np.zeros((n - len(x),) + x.shape[1:], x.dtype)])


# ----------------------------------------------------------------------------
# Outputs of the parse stage (<workdir>/parsed).


def write_parsed(out_dir: str, parsed: Parsed, parser: Parser,
                 duration: float | None = None, filename: str | None = None,
                 **row) -> dict:
  """Writes <out_dir>/<id>.json; returns its manifest row."""
  vid, m = parsed.video_id, parsed.merged
  bad = validate_lib.bad_id(vid)
  if bad:  # ids are file names: never a path out of out_dir
    raise ValueError(f"video id {vid!r} is not a file name ({bad}).")
  rel = f"{vid}.json"
  jsonio.write_json_atomic(os.path.join(out_dir, rel), parsed.to_json(
      parser.classes, filename=filename or vid, duration=duration,
      segment_seconds=1.0,
      windowing=dict(window=parser.window, stride=parser.stride,
                     starts=m.starts)))
  return dict(video_id=vid, status="parsed", json=f"parsed/{rel}",
              filename=filename or vid, num_segments=m.num_segments,
              duration=duration, num_events=len(parsed.events), **row)


def reusable_rows(out_dir: str, settings: Mapping[str, Any]) -> dict:
  """Parsed rows of an earlier run with the same settings whose JSON is
  still there (skipped on resume); {} if the settings changed."""
  path = os.path.join(out_dir, "index.json")
  if not os.path.isfile(path):
    return {}
  index = jsonio.read_json(path)
  if index.get("settings") != json.loads(json.dumps(dict(settings))):
    return {}
  parent = os.path.dirname(out_dir)
  return {r["video_id"]: r for r in index.get("videos", [])
          if r.get("status") == "parsed"
          and os.path.isfile(os.path.join(parent, r["json"]))}


def write_index(out_dir: str, settings: Mapping[str, Any],
                rows: Mapping[str, dict], ids: Sequence[str],
                filenames: str | None = None) -> str:
  """<out_dir>/index.json: settings and one row per video (status parsed |
  failed with its reason), in `ids` order; `filenames` says how the CSVs
  name the videos."""
  ordered = [rows[v] for v in ids if v in rows]
  ordered += [r for v, r in rows.items() if v not in set(ids)]
  counts = collections.Counter(r["status"] for r in ordered)
  return jsonio.write_json_atomic(
      os.path.join(out_dir, "index.json"),
      dict(settings=dict(settings), **dict(settings), counts=dict(
          total=len(ordered), parsed=counts["parsed"],
          failed=counts["failed"]), segment_seconds=1.0,
      **({} if filenames is None else dict(filenames=filenames)),
      videos=ordered))


def write_llp_csvs(out_dir: str, rows: Mapping[str, dict],
                   class_names: Sequence[str] = avvp.LLP_CLASSES
                   ) -> dict[str, str]:
  """eval_audio.csv / eval_visual.csv (LLP annotation format, as
  AVVP_eval_*.csv) of every parsed video's audio and visual events."""
  del class_names  # event classes are LLP_CLASSES names already
  lines = {"audio": [], "visual": []}
  parent = os.path.dirname(out_dir)
  for r in rows.values():
    if r.get("status") != "parsed":
      continue
    events = jsonio.read_json(os.path.join(parent, r["json"]))["events"]
    for e in events:
      if e["modality"] in lines:
        lines[e["modality"]].append(
            (r["filename"], round(e["onset"]), round(e["offset"]), e["class"]))
  paths = {}
  for modality, rows_m in lines.items():
    paths[modality] = jsonio.write_text_atomic(
        os.path.join(out_dir, f"eval_{modality}.csv"),
        avvp.format_llp_eval(rows_m))
  return paths

