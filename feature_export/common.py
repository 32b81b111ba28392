"""Export driver: video list, threaded decoding, batching, resume, manifest.

`run(config)` is the `export_features` stage; config.exporter picks the model.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
import pathlib
import time
import traceback
from typing import Any, Callable, Iterator

from absl import logging
import numpy as np

from ear_jax import jsonio
from ear_jax.data import avvp as avvp_lib
from ear_jax.data import features as features_lib
from feature_export import decode as decode_lib

# pylint: disable=invalid-name

MANIFEST = "export_manifest_{}.json"
MANIFEST_VERSION = 1


def run(config) -> dict[str, Any]:
  """Runs the exporter named by `config.exporter`; returns the manifest."""
  # pylint: disable=g-import-not-at-top
  name = config.exporter
  if name == "clip_clap":
    from feature_export import clip_clap as module
  elif name == "han":
    from feature_export import han as module
  else:
    raise ValueError(
        f"config.exporter={name!r}; expected 'clip_clap' or 'han'"
        " (configs/export_clip_clap.py, configs/export_han.py)"
    )
  return export(config, module.Exporter(config))


# ----------------------------------------------------------------------------
# Per-video work items.


@dataclasses.dataclass
class Prepared:
  """A decoded video: model inputs per feature, or why a feature failed."""

  vid: str
  path: str
  inputs: dict[str, Any] = dataclasses.field(default_factory=dict)
  errors: dict[str, str] = dataclasses.field(default_factory=dict)
  info: dict[str, Any] = dataclasses.field(default_factory=dict)


def list_videos(config) -> list[tuple[str, str]]:
  """Sorted (id, path) of the videos in config.videos_dir."""
  root = pathlib.Path(config.videos_dir)
  if not root.is_dir():
    raise FileNotFoundError(f"config.videos_dir={root} is not a directory")
  exts = tuple(e.strip().lower() for e in config.video_extensions.split(","))
  paths = sorted(p for p in root.iterdir()
                 if p.is_file() and p.suffix.lower() in exts)
  if not paths:
    raise FileNotFoundError(
        f"no videos ({', '.join(exts)}) in {root}; set"
        " --config.video_extensions if yours differ"
    )
  n = config.id_length
  out, seen = [], {}
  for p in paths:
    vid = p.stem[:n] if n else p.stem
    if vid in seen:
      raise ValueError(
          f"videos {seen[vid]} and {p.name} map to the same id {vid!r}"
          f" (config.id_length={n})"
      )
    seen[vid] = p.name
    out.append((vid, os.fspath(p)))
  if config.limit:
    out = out[: config.limit]
  return out


def parse_features(value, valid: tuple[str, ...]) -> tuple[str, ...]:
  """config.features ("a,b" or a sequence) -> a non-empty tuple of `valid`."""
  feats = tuple(value.split(",")) if isinstance(value, str) else tuple(value)
  bad = [f for f in feats if f not in valid]
  if bad or not feats:
    raise ValueError(f"config.features={feats}; expected a subset of {valid}")
  return feats


def class_names(spec: str) -> tuple[list[str], str]:
  """(names as encoded, description) for "llp" | "unav" | a text file path.

  LLP names get '_' -> ' ' and lower case (R10, docs/METHOD.md); UnAV names
  are used as written; a file gives one name per line, used as written.
  """
  if spec == "llp":
    return [c.replace("_", " ").lower() for c in avvp_lib.LLP_CLASSES], "llp"
  if spec == "unav":
    return list(avvp_lib.UNAV_CLASSES), "unav"
  path = pathlib.Path(spec)
  if not path.is_file():
    raise FileNotFoundError(
        f"config.classes={spec!r} is neither 'llp', 'unav' nor a file with"
        " one class name per line"
    )
  names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
  if not names:
    raise ValueError(f"{path}: no class names")
  return names, os.fspath(path)


def segment_plan(config, info: decode_lib.VideoInfo) -> tuple[int, float]:
  """(T, padded seconds); raises DecodeError if padding exceeds the limit."""
  T = decode_lib.num_segments(info.duration, config.num_segments,
                              config.duration_tolerance)
  pad = max(0.0, T - info.duration)
  if config.max_pad_seconds is not None and pad > config.max_pad_seconds:
    raise decode_lib.DecodeError(
        f"clip is {info.duration:.2f} s but {T} segments are needed; padding"
        f" {pad:.2f} s exceeds config.max_pad_seconds={config.max_pad_seconds}"
        " (set --config.num_segments=0 for ceil(duration) segments, or"
        " raise max_pad_seconds)"
    )
  return T, pad


def check_coverage(config, T: int, seconds: float, what: str) -> None:
  """Raises DecodeError if a stream ends more than max_pad_seconds early."""
  short = T - seconds
  if config.max_pad_seconds is not None and short > config.max_pad_seconds:
    raise decode_lib.DecodeError(
        f"the {what} stream ends at {seconds:.2f} s, {short:.2f} s before the"
        f" {T} segments end (config.max_pad_seconds="
        f"{config.max_pad_seconds})"
    )


def video_record(info: decode_lib.VideoInfo, T: int, pad: float):
  return dict(
      duration=round(info.duration, 4),
      num_segments=T,
      padded_seconds=round(pad, 4),
      fps=None if info.fps is None else round(info.fps, 4),
      has_audio=info.has_audio,
  )


def reason_of(e: BaseException) -> str:
  """One line for the manifest: the error type and message."""
  if isinstance(e, decode_lib.DecodeError):
    return f"{type(e).__name__}: {e}"
  tb = traceback.format_exception_only(type(e), e)[-1].strip()
  return f"unexpected {tb}"


def safe_prepare(prepare: Callable[..., Prepared], vid: str, path: str,
                 todo: tuple[str, ...]) -> Prepared:
  """prepare(), with any exception turned into a failure of every feature."""
  try:
    return prepare(vid, path, todo)
  except Exception as e:  # pylint: disable=broad-except
    return Prepared(vid, path, errors={f: reason_of(e) for f in todo})


def parallel_map(fn: Callable[[Any], Any], items: list[Any],
                 num_workers: int) -> Iterator[Any]:
  """fn over items in order; grain thread prefetch when num_workers > 0.

  Threads, not processes: PyAV decodes with the GIL released, and workers
  share the exporter's preprocessors (HF processors, PIL) without pickling
  a torch/JAX model into child processes.
  """
  if num_workers <= 0 or len(items) <= 1:
    return map(fn, items)
  import grain  # pylint: disable=g-import-not-at-top

  ds = grain.MapDataset.source(items).map(fn)
  return iter(ds.to_iter_dataset(grain.ReadOptions(
      num_threads=num_workers, prefetch_buffer_size=2 * num_workers)))


# ----------------------------------------------------------------------------
# Batching rows of many videos through one encoder.


def _rows_len(rows) -> int:
  return len(next(iter(rows.values()))) if isinstance(rows, dict) else len(rows)


def _rows_slice(rows, lo, hi=None):
  if isinstance(rows, dict):
    return {k: v[lo:hi] for k, v in rows.items()}
  return rows[lo:hi]


def _rows_concat(parts, pad_to: int | None):
  """Concatenates row blocks (arrays or dicts of arrays), zero-padding."""
  if isinstance(parts[0], dict):
    return {k: _rows_concat([p[k] for p in parts], pad_to) for k in parts[0]}
  x = np.concatenate([np.asarray(p) for p in parts])
  if pad_to is not None and x.shape[0] < pad_to:
    x = np.concatenate(
        [x, np.zeros((pad_to - x.shape[0], *x.shape[1:]), x.dtype)])
  return x


class RowBatcher:
  """Concatenates per-video input rows into fixed-size model batches.

  `encode(x_Bx...) -> np [B, D]` sees exactly `batch_size` rows each call
  when `pad` (one compiled shape for jit); the last batch is zero-padded.
  `on_done(vid, out_NxD)` gets each video's rows once all are encoded.
  """

  def __init__(self, encode, batch_size: int, on_done, pad: bool):
    self.encode, self.batch_size, self.on_done = encode, batch_size, on_done
    self.pad = pad
    self.queue: collections.deque = collections.deque()  # (vid, rows)
    self.queued = 0
    self.outputs: dict[str, list[np.ndarray]] = {}
    self.remaining: dict[str, int] = {}
    self.order: list[str] = []
    self.rows_done = 0
    self.seconds = 0.0

  def add(self, vid: str, rows) -> None:
    n = _rows_len(rows)
    if n == 0:
      raise ValueError(f"{vid}: no rows to encode")
    self.outputs[vid], self.remaining[vid] = [], n
    self.order.append(vid)
    self.queue.append((vid, rows))
    self.queued += n
    while self.queued >= self.batch_size:
      self._step()

  def flush(self) -> None:
    while self.queued:
      self._step()

  def _step(self) -> None:
    take, parts, owners = self.batch_size, [], []
    while take and self.queue:
      vid, rows = self.queue[0]
      k = min(take, _rows_len(rows))
      parts.append(_rows_slice(rows, 0, k))
      owners.append((vid, k))
      if k == _rows_len(rows):
        self.queue.popleft()
      else:
        self.queue[0] = (vid, _rows_slice(rows, k))
      take -= k
    n = sum(k for _, k in owners)
    self.queued -= n
    x = _rows_concat(parts, self.batch_size if self.pad else None)
    start = time.perf_counter()
    y = np.asarray(self.encode(x))[:n]
    self.seconds += time.perf_counter() - start
    self.rows_done += n
    i = 0
    for vid, k in owners:
      self.outputs[vid].append(y[i:i + k])
      i += k
      self.remaining[vid] -= k
    while self.order and self.remaining[self.order[0]] == 0:
      vid = self.order.pop(0)
      out = np.concatenate(self.outputs.pop(vid))
      del self.remaining[vid]
      self.on_done(vid, out)


# ----------------------------------------------------------------------------
# The loop.


def read_manifest(path) -> dict[str, Any]:
  path = pathlib.Path(path)
  if not path.is_file():
    return {}
  try:
    return json.loads(path.read_text())
  except ValueError:
    logging.warning("%s is not valid JSON; starting a new manifest", path)
    return {}


def check_finite(vid: str, name: str, x: np.ndarray) -> None:
  if not np.isfinite(x).all():
    raise FloatingPointError(
        f"{vid}: the {name!r} encoder produced NaN/inf; nothing was written"
        " for it (check the weights and --config.matmul_precision)"
    )


def export(config, exporter) -> dict[str, Any]:
  """Exports every video in config.videos_dir that lacks an output file."""
  root = pathlib.Path(config.output_root)
  root.mkdir(parents=True, exist_ok=True)
  if config.get("workdir"):
    jsonio.write_json_atomic(pathlib.Path(config.workdir) / "config.json",
                      json.loads(config.to_json_best_effort()))
  manifest_path = root / MANIFEST.format(exporter.name)
  previous = read_manifest(manifest_path)
  feats = tuple(exporter.features)
  videos = list_videos(config)
  todo, skipped = [], []
  for vid, path in videos:
    missing = tuple(
        f for f in feats
        if not features_lib.feature_path(root, f, vid).is_file()
    )
    (todo.append((vid, path, missing)) if missing else skipped.append(vid))
  logging.info(
      "%s: %d videos in %s, %d already exported (skipped), %d to do",
      exporter.name, len(videos), config.videos_dir, len(skipped), len(todo))

  extra = exporter.write_extra(root, previous)  # e.g. class text embeddings
  failures: dict[str, dict[str, str]] = {}
  records: dict[str, Any] = dict(previous.get("videos", {}))
  written: dict[str, set[str]] = collections.defaultdict(set)

  def fail(vid, feature, reason):
    failures.setdefault(vid, {})[feature] = reason

  def make_sink(feature):
    def on_done(vid, out):
      try:
        out = exporter.finalize(feature, vid, out)
        check_finite(vid, feature, out)
        jsonio.save_npy_atomic(
            features_lib.feature_path(root, feature, vid), out)
        written[vid].add(feature)
      except Exception as e:  # pylint: disable=broad-except
        fail(vid, feature, reason_of(e))
    return on_done

  batchers = {
      f: RowBatcher(exporter.encoder(f), exporter.batch_size(f), make_sink(f),
                    pad=exporter.pad_batches)
      for f in feats
  }
  stream = parallel_map(
      lambda it: safe_prepare(exporter.prepare, *it), todo,
      config.num_workers)
  import tqdm  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()

  def manifest(complete: bool) -> dict[str, Any]:
    done = [v for v, _, m in todo
            if written[v] >= set(m) and v not in failures]
    failed = [v for v, _, _ in todo if v in failures]
    specs = features_lib.SEGMENT_FEATURES
    return dict(
        version=MANIFEST_VERSION,
        exporter=exporter.name,
        complete=complete,  # False: interrupted; re-run to resume
        written_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        random_init_for_testing=bool(config.random_init_for_testing),
        videos_dir=os.fspath(config.videos_dir),
        features={f: dict(path=specs[f].subdir, dim=specs[f].dim,
                          rows_per_segment=specs[f].frames_per_segment)
                  for f in feats},
        models=exporter.model_info(),
        settings=exporter.settings(),
        counts=dict(total=len(videos), done=len(done), skipped=len(skipped),
                    failed=len(failed)),
        failures=[dict(id=v, features=failures[v]) for v in failed],
        timing=dict(
            wall_seconds=round(time.perf_counter() - start, 3),
            **{f"{f}_rows": b.rows_done for f, b in batchers.items()},
            **{f"{f}_model_seconds": round(b.seconds, 3)
               for f, b in batchers.items()},
        ),
        videos=records,
        **extra,
    )

  bar = tqdm.tqdm(stream, total=len(todo), desc=f"export {exporter.name}",
                  disable=not config.get("progress", True), unit="video")
  try:
    for prep in bar:
      if prep.info:
        records[prep.vid] = dict(prep.info, path=os.path.basename(prep.path))
      for f, reason in prep.errors.items():
        fail(prep.vid, f, reason)
      for f, rows in prep.inputs.items():
        batchers[f].add(prep.vid, rows)
    for b in batchers.values():
      b.flush()
  except BaseException:
    jsonio.write_json_atomic(manifest_path, manifest(complete=False))
    raise
  result = manifest(complete=True)
  jsonio.write_json_atomic(manifest_path, result)
  counts = result["counts"]
  failed = [f["id"] for f in result["failures"]]
  summary = (f"{exporter.name}: {counts['done']} exported, {counts['skipped']}"
             f" skipped (already there), {counts['failed']} failed; manifest"
             f" {manifest_path}")
  if failed:
    logging.warning("%s. Failures:\n%s", summary, "\n".join(
        f"  {v}: {failures[v]}" for v in failed[:20]))
  else:
    logging.info("%s", summary)
  print(summary, flush=True)
  return result


def l2_normalize(x_NxD: np.ndarray) -> np.ndarray:
  x = np.asarray(x_NxD, np.float32)
  norm = np.linalg.norm(x, axis=-1, keepdims=True)
  if (norm == 0).any():
    raise FloatingPointError("an embedding has zero norm; cannot normalise")
  return (x / norm).astype(np.float32)

