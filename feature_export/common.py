"""What the exporters share: the `Exporter` interface, per-video records,
segment planning, failure reasons, checks. Imports no exporter (no cycle):
the registry (feature_export/registry.py) imports the exporters, the driver
(feature_export/driver.py) the registry.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import traceback
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import numpy as np

from ear_jax.data import avvp as avvp_lib
from feature_export import decode as decode_lib

# pylint: disable=invalid-name


# ----------------------------------------------------------------------------
# Per-video work items.


@dataclasses.dataclass
class Prepared:
  """Segments [lo, hi) of a decoded video: model input rows per feature, or
  why a feature failed. A video comes as one or more chunks in order; the
  one with `last` ends it (a failed feature sends no more rows)."""

  vid: str
  path: str
  inputs: dict[str, Any] = dataclasses.field(default_factory=dict)
  errors: dict[str, str] = dataclasses.field(default_factory=dict)
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  lo: int = 0
  hi: int = 0
  last: bool = True


class Part(Protocol):
  """One decoding pipeline of an exporter (a reader and its preprocessing)
  making the input rows of some features, chunk by chunk."""

  def rows(self, lo: int, hi: int) -> dict[str, Any]:
    """{feature: input rows of segments [lo, hi)}; chunks come in order."""

  def finish(self, info: dict[str, Any]) -> None:
    """After the last chunk: coverage checks (raise DecodeError), records
    into `info`."""

  def close(self) -> None:
    """Releases the decoder."""


def chunk_ranges(T: int, chunk_segments: int) -> list[tuple[int, int]]:
  """[lo, hi) ranges of at most chunk_segments segments (0: one chunk)."""
  step = T if not chunk_segments or chunk_segments >= T else chunk_segments
  return [(lo, min(lo + step, T)) for lo in range(0, T, step)]


def run_parts(
    vid: str, path: str, info: dict[str, Any], T: int, chunk_segments: int,
    parts: dict[tuple[str, ...], Callable[[], Part]],
) -> Iterator[Prepared]:
  """Prepared chunks of one video from its parts ({features: opener}).

  A part that fails (opening, a chunk or `finish`) fails its features with
  the reason and makes no more rows; the others go on. Each part's decoder
  stays open across chunks (one forward pass per stream), so memory holds
  one chunk of decoded input, whatever the video's length.
  """
  live: dict[tuple[str, ...], Part] = {}

  def fail(prep, feats, e):
    for f in feats:
      prep.errors[f] = reason_of(e)
    part = live.pop(feats, None)
    if part is not None:
      part.close()

  try:
    ranges = chunk_ranges(T, chunk_segments)
    for k, (lo, hi) in enumerate(ranges):
      last = k == len(ranges) - 1
      prep = Prepared(vid, path, info=dict(info) if k == 0 else {}, lo=lo,
                      hi=hi, last=last)
      if k == 0:
        for feats, opener in parts.items():
          try:
            live[feats] = opener()
          except Exception as e:  # pylint: disable=broad-except
            fail(prep, feats, e)
      for feats in list(live):
        try:
          prep.inputs.update(live[feats].rows(lo, hi))
        except Exception as e:  # pylint: disable=broad-except
          fail(prep, feats, e)
      if last:
        for feats in list(live):
          try:
            live[feats].finish(prep.info)
          except Exception as e:  # pylint: disable=broad-except
            fail(prep, feats, e)
      for f in prep.errors:
        prep.inputs.pop(f, None)
      yield prep
  finally:
    for part in live.values():
      part.close()


@runtime_checkable
class Exporter(Protocol):
  """A feature extractor the driver runs over videos (clip_clap.py, han.py).

  The driver decodes with `prepare` on worker threads, concatenates the
  rows of many videos into batches of `batch_size(f)` for `encoder(f)`
  (exactly that many rows, zero-padded, when `pad_batches`), then passes
  each video's [rows, D] outputs through `finalize` and writes them in the
  layout of ear_jax/data/features.py.
  """

  name: str                  # manifest: export_manifest_<name>.json
  features: tuple[str, ...]  # data/features.py SEGMENT_FEATURES names
  pad_batches: bool          # True: one compiled batch shape (jit)

  def prepare(self, vid: str, path: str, todo: tuple[str, ...],
              chunk_segments: int = 0) -> Iterator[Prepared]:
    """Decodes one video into model input rows for the features `todo`,
    at most chunk_segments segments at a time (0: the whole video)."""

  def batch_size(self, feature: str) -> int:
    """Rows per encoder call."""

  def encoder(self, feature: str) -> Callable[[Any], np.ndarray]:
    """rows (array or dict of arrays, [B, ...]) -> float32 [B, D]."""

  def finalize(self, feature: str, vid: str, out_NxD: np.ndarray
               ) -> np.ndarray:
    """A video's encoded rows -> the array written (e.g. L2-normalised)."""

  def model_info(self) -> dict[str, Any]:
    """Per feature: weights, architecture, versions (for the manifest)."""

  def settings(self) -> dict[str, Any]:
    """Segmenting/preprocessing choices (for the manifest)."""

  def write_extra(self, root: pathlib.Path, previous: dict[str, Any]
                  ) -> dict[str, Any]:
    """Files besides the segment features (class text embeddings); returns
    manifest entries. `previous` is the last manifest (to skip work)."""


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


def check_finite(vid: str, name: str, x: np.ndarray) -> None:
  if not np.isfinite(x).all():
    raise FloatingPointError(
        f"{vid}: the {name!r} encoder produced NaN/inf; nothing was written"
        " for it (check the weights and --config.matmul_precision)"
    )


def l2_normalize(x_NxD: np.ndarray) -> np.ndarray:
  x = np.asarray(x_NxD, np.float32)
  norm = np.linalg.norm(x, axis=-1, keepdims=True)
  if (norm == 0).any():
    raise FloatingPointError("an embedding has zero norm; cannot normalise")
  return (x / norm).astype(np.float32)

