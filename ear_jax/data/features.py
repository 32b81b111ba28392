"""Published feature-file layouts (the one place they are defined) and loading.

Layouts: docs/ARCHITECTURE.md "Feature layouts", README "Data".
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import re

from absl import logging
import numpy as np

from ear_jax.data import avvp as avvp_lib
from ear_jax.data import parallel as parallel_lib

# pylint: disable=invalid-name

_CLIP_CLAP_EXPORTER = "feature_export with configs/export_clip_clap.py"
_HAN_EXPORTER = "feature_export with configs/export_han.py"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """One per-video segment-feature set: `<root>/<subdir>/<id>.npy`."""

  subdir: str
  dim: int
  frames_per_segment: int = 1  # res152 stores 8 frames per 1-s segment
  exporter: str = _CLIP_CLAP_EXPORTER  # what writes it, for error messages


SEGMENT_FEATURES = {
    "clip": FeatureSpec("feats_CLIP/segment_feats", 768),
    "clap": FeatureSpec("feats_CLAP/segment_feats", 512),
    "vggish": FeatureSpec("feats/vggish", 128, 1, _HAN_EXPORTER),
    "res152": FeatureSpec("feats/res152", 2048, 8, _HAN_EXPORTER),
    "r2plus1d_18": FeatureSpec("feats/r2plus1d_18", 512, 1, _HAN_EXPORTER),
}

# Text embeddings of the class names, (C, D), L2-normalised rows.
EVENT_FEATURES = {
    "clip": "feats_CLIP/event_feats/all_event_feats.npy",
    "clap": "feats_CLAP/event_feats/all_event_feats.npy",
}
_NORM_TOL = 1e-3
_CHUNK = 64  # files per thread-pool task


def _spec(name: str) -> FeatureSpec:
  if name not in SEGMENT_FEATURES:
    raise ValueError(
        f"unknown feature set {name!r}; expected one of"
        f" {sorted(SEGMENT_FEATURES)}"
    )
  return SEGMENT_FEATURES[name]


def feature_path(root, name: str, vid: str) -> pathlib.Path:
  """`<root>/<subdir>/<vid>.npy` of feature set `name`."""
  return pathlib.Path(root) / _spec(name).subdir / f"{vid}.npy"


def available_ids(root, names) -> list[str]:
  """Sorted ids that have a file for every feature in `names` under root."""
  found = None
  for name in names:
    directory = os.path.join(root, _spec(name).subdir)
    ids = set()
    if os.path.isdir(directory):
      ids = {f[:-4] for f in os.listdir(directory) if f.endswith(".npy")}
    found = ids if found is None else found & ids
  return sorted(found or ())


@functools.lru_cache(maxsize=1024)
def _pool_matrix(L: int, T: int, dtype: str = "float64") -> np.ndarray:
  """[T, L] weights of torch adaptive_avg_pool1d: row i averages input rows
  [floor(i*L/T), ceil((i+1)*L/T))."""
  i = np.arange(T)
  start = (i * L) // T
  end = -((-(i + 1) * L) // T)  # ceil division
  cols = np.arange(L)
  inside_TxL = (cols >= start[:, None]) & (cols < end[:, None])
  matrix = (inside_TxL / (end - start)[:, None]).astype(dtype)
  matrix.flags.writeable = False
  return matrix


def adaptive_avg_pool1d(x_LxD: np.ndarray, out_len: int) -> np.ndarray:
  """Resamples rows like torch adaptive_avg_pool1d (L > T and L < T alike).

  Row i averages rows [floor(i*L/T), ceil((i+1)*L/T)) of x, as one small
  matmul with a cached [T, L] weight matrix.
  """
  x_LxD = np.asarray(x_LxD)
  if x_LxD.ndim != 2 or x_LxD.shape[0] < 1:
    raise ValueError(f"expected an (L >= 1, D) array, got {x_LxD.shape}")
  if out_len < 1:
    raise ValueError(f"out_len must be >= 1, got {out_len}")
  dtype = np.result_type(x_LxD.dtype, np.float32)
  if x_LxD.shape[0] == out_len:
    return x_LxD.astype(dtype)
  weights_TxL = _pool_matrix(x_LxD.shape[0], out_len, dtype.name)
  return weights_TxL @ x_LxD.astype(dtype, copy=False)


def _missing_dir_error(root, name, directory, spec) -> FileNotFoundError:
  return FileNotFoundError(
      f"feature directory {directory} not found: the {name!r} features"
      f" ({spec.subdir}/<id>.npy, {spec.dim}-d) under dataset root {root} are"
      f" written by {spec.exporter} (or ear_jax.data.synthetic for tests)."
  )


_NPY_HEADER = re.compile(
    r"""^\{'descr': '([<>|=][a-z][0-9]+)', 'fortran_order': (False|True),"""
    r""" 'shape': \(([0-9, ]*)\), \}\s*$""")


def _read_npy(path: str) -> np.ndarray:
  """np.load for plain numeric .npy files, without its slow header parse.

  The size the header claims is checked against the file's size before
  anything is allocated: a damaged or hostile header (say 10^15 rows) is a
  ValueError naming the file, never a MemoryError.
  """
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    head = f.read(12)
    if head[:6] == b"\x93NUMPY" and len(head) == 12 and head[6] in (1, 2, 3):
      hsize, start = ((int.from_bytes(head[8:10], "little"), 10)
                      if head[6] == 1 else
                      (int.from_bytes(head[8:12], "little"), 12))
      f.seek(start)
      m = _NPY_HEADER.match(f.read(hsize).decode("latin1"))
      if m:
        shape = tuple(int(d) for d in m.group(3).split(",") if d.strip())
        dtype = np.dtype(m.group(1))
        count = math.prod(shape)
        have = size - start - hsize
        want = count * dtype.itemsize
        if have != want:
          raise ValueError(
              f"header claims shape {shape} of {dtype} ({want} bytes of"
              f" data) but the file holds {have} bytes: it is truncated or"
              " damaged")
        x = np.frombuffer(f.read(have), dtype, count)
        return x.reshape(shape, order="F" if m.group(2) == "True" else "C")
  # Anything unusual: memory-mapped first, so a header that claims more
  # than the file holds fails here instead of allocating it.
  x = np.load(path, mmap_mode="r", allow_pickle=False)
  return np.array(x)


def _load_file(path: str, name: str, spec: FeatureSpec, rows: int | None):
  """Loads and checks one (L, D) file; `rows` None allows any L >= 1."""
  try:
    x = _read_npy(path)
  except (OSError, ValueError, EOFError) as e:
    raise ValueError(f"{path}: cannot read as .npy ({e}).") from e
  want = f"({'L' if rows is None else rows}, {spec.dim})"
  if (x.ndim != 2 or x.shape[1] != spec.dim or x.shape[0] < 1
      or (rows is not None and x.shape[0] != rows)):
    raise ValueError(
        f"{path}: {name!r} features have shape {x.shape}; expected {want}."
        f" Was it exported by {spec.exporter} for this dataset?"
    )
  if x.dtype.kind not in "fiu":
    raise ValueError(f"{path}: dtype {x.dtype} is not numeric.")
  # One float64 reduction catches NaN/inf; only a huge sum needs the slow test.
  if (x.dtype.kind == "f" and not math.isfinite(x.sum(dtype=np.float64))
      and not np.isfinite(x).all()):
    raise ValueError(
        f"{path}: {name!r} features contain NaN or inf; re-export the file."
    )
  if x.dtype.kind == "f" and x.dtype.itemsize > 4 and x.size:
    peak = float(np.abs(x).max())
    if peak > float(np.finfo(np.float32).max):
      raise ValueError(
          f"{path}: {name!r} features hold values up to {peak:.3g}, beyond"
          " float32's range (they are used as float32 and would become"
          " inf); re-export the file.")
  return x


def load_segment_features(
    root,
    name: str,
    ids,
    num_segments=None,
    max_segments: int | None = None,
    num_workers: int = 8,
) -> np.ndarray:
  """Loads per-video segment features as float32 [N, T, D].

  LLP (num_segments None): every file must be exactly (10 * frames, D); res152
  frames are averaged in groups of 8, T = 10. UnAV: file i, (L, D) with any
  L >= 1, is adaptively pooled to num_segments[i] rows, then zero padded to
  max_segments (default max(num_segments)).
  """
  spec = _spec(name)
  ids = list(ids)
  directory = pathlib.Path(root) / spec.subdir
  if not directory.is_dir():
    raise _missing_dir_error(root, name, directory, spec)
  present = set(os.listdir(directory))
  missing = [v for v in ids if f"{v}.npy" not in present]
  if missing:
    raise FileNotFoundError(
        f"{directory}: no {name!r} features for {len(missing)} of {len(ids)}"
        f" videos, e.g. {missing[:5]}. Export them with {spec.exporter}."
    )
  n = len(ids)
  fps = spec.frames_per_segment
  if num_segments is None:
    if max_segments is not None:
      raise ValueError(
          "max_segments is only for UnAV-style loading; pass num_segments"
          " too (LLP features are always 10 segments)."
      )
    t_n = None
    T = avvp_lib.LLP_NUM_SEGMENTS
  else:
    t_n = np.asarray(num_segments).astype(np.int64)
    if t_n.shape != (n,) or (n and t_n.min() < 1):
      raise ValueError(
          f"num_segments must hold one value >= 1 per video ({n}), got"
          f" shape {t_n.shape}, min {t_n.min() if t_n.size else None}."
      )
    longest = int(t_n.max()) if n else 0
    T = longest if max_segments is None else int(max_segments)
    if T < longest:
      raise ValueError(
          f"max_segments={T} is smaller than video"
          f" {ids[int(t_n.argmax())]!r} with {longest} segments; use"
          f" max_segments >= {longest}."
      )
  out_NxTxD = np.zeros((n, T, spec.dim), np.float32)
  dirname = os.fspath(directory)

  def load_range(lo: int, hi: int) -> None:
    for i in range(lo, hi):
      path = os.path.join(dirname, f"{ids[i]}.npy")
      x = _load_file(path, name, spec, T * fps if t_n is None else None)
      t_v = T if t_n is None else int(t_n[i])
      if len(x) == t_v:
        out_NxTxD[i, :t_v] = x
      else:  # res152 frames (8 -> 1, in time order) or UnAV pooling
        weights_TxL = _pool_matrix(len(x), t_v, "float32")
        np.matmul(weights_TxL, x.astype(np.float32, copy=False),
                  out=out_NxTxD[i, :t_v])

  chunks = [(lo, min(lo + _CHUNK, n)) for lo in range(0, n, _CHUNK)]
  parallel_lib.parallel_map(lambda c: load_range(*c), chunks, num_workers)
  logging.info("Loaded %r features %s from %s.", name, out_NxTxD.shape,
               directory)
  return out_NxTxD


def segment_rows(x_LxD: np.ndarray, name: str, what: str = "") -> np.ndarray:
  """One video's stored rows (L, D) of feature `name` -> float32 (T, D),
  one row per 1-s segment, any T: res152's 8 frames per segment are
  averaged as load_segment_features does. `what` names the source in
  errors."""
  spec = _spec(name)
  x_LxD = np.asarray(x_LxD)
  fps = spec.frames_per_segment
  what = what or f"the {name!r} features"
  if (x_LxD.ndim != 2 or x_LxD.shape[1] != spec.dim or x_LxD.shape[0] < fps
      or x_LxD.shape[0] % fps):
    raise ValueError(
        f"{what}: shape {x_LxD.shape}; expected (T * {fps}, {spec.dim}) with"
        f" T >= 1 ({fps} row(s) per 1-s segment), as written by"
        f" {spec.exporter}.")
  T = x_LxD.shape[0] // fps
  if fps == 1:
    return x_LxD.astype(np.float32)
  out_TxD = np.empty((T, spec.dim), np.float32)
  np.matmul(_pool_matrix(len(x_LxD), T, "float32"),
            x_LxD.astype(np.float32, copy=False), out=out_TxD)
  return out_TxD


def load_video_features(root, name: str, vid: str) -> np.ndarray:
  """float32 (T, D) of one video of any length (T = its 1-s segments)."""
  path = feature_path(root, name, vid)
  if not path.is_file():
    spec = _spec(name)
    raise FileNotFoundError(
        f"{path} not found: the {name!r} features of video {vid!r} are"
        f" written by {spec.exporter}.")
  x = _load_file(os.fspath(path), name, _spec(name), None)
  return segment_rows(x, name, os.fspath(path))


def load_event_features(root, name: str, num_classes: int) -> np.ndarray:
  """Class-name text embeddings, float32 [C, D] with unit-norm rows."""
  if name not in EVENT_FEATURES:
    raise ValueError(
        f"unknown event feature set {name!r}; expected one of"
        f" {sorted(EVENT_FEATURES)}"
    )
  spec = SEGMENT_FEATURES[name]
  path = pathlib.Path(root) / EVENT_FEATURES[name]
  if not path.is_file():
    raise FileNotFoundError(
        f"{path} not found: the {name!r} class-name text embeddings"
        f" ({num_classes}, {spec.dim}) are written by {spec.exporter} (or"
        " ear_jax.data.synthetic for tests)."
    )
  x = _load_file(os.fspath(path), name, spec, num_classes).astype(np.float32)
  norms_C = np.linalg.norm(x.astype(np.float64), axis=1)
  bad = np.flatnonzero(np.abs(norms_C - 1.0) > _NORM_TOL)
  if bad.size:
    raise ValueError(
        f"{path}: {bad.size} rows are not L2-normalised (row {bad[0]} has"
        f" norm {norms_C[bad[0]]:.6f}; tolerance {_NORM_TOL}). Text"
        " embeddings are used as they are, not renormalised; re-export them"
        f" with {spec.exporter}."
    )
  return x
