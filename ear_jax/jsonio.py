"""Atomic file writes and JSON files (stdlib + numpy only, so data/ and
metrics.py can use them too).

The one place that writes "to a temporary name beside the target, then
renames": a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import tempfile
from typing import Any, Callable, IO, Sequence
import uuid

import numpy as np


def plain(value: Any) -> Any:
  """numpy scalars/arrays -> Python; non-finite floats -> strings."""
  if isinstance(value, (np.generic, np.ndarray)):
    value = value.item() if np.ndim(value) == 0 else value.tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def write_atomic(path, write_fn: Callable[[IO], Any], binary: bool = False,
                 **open_kw) -> str:
  """Calls write_fn(f) on a temporary file beside `path`, then renames it
  to `path` (creating the parent directory); returns `path`."""
  path = os.fspath(path)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  # A unique name (several writers may race) opened as usual (so the file
  # gets the umask's permissions, unlike mkstemp's 0600).
  tmp = os.path.join(parent,
                     f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
  try:
    with open(tmp, "wb" if binary else "w", **open_kw) as f:
      write_fn(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def write_dir_atomic(path, fill: Callable[[str], Any]) -> str:
  """fill(tmp) writes <tmp>/<basename of path> in a fresh directory beside
  `path`, which then replaces `path` (an old one is moved aside first and
  deleted after): readers see the old or the new directory, never a mix."""
  path = os.path.abspath(os.fspath(path))
  parent, name = os.path.split(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)
  old = path + ".old"
  try:
    fill(tmp)
    if os.path.exists(path):
      shutil.rmtree(old, ignore_errors=True)
      os.replace(path, old)
    os.replace(os.path.join(tmp, name), path)
    shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return path


def write_text_atomic(path, text: str) -> str:
  return write_atomic(path, lambda f: f.write(text), encoding="utf-8",
                      newline="\n")


def save_npy_atomic(path, array) -> pathlib.Path:
  """np.save of `array` (no pickles) to `path`, atomically."""
  write_atomic(path, lambda f: np.save(f, np.asarray(array),
                                       allow_pickle=False), binary=True)
  return pathlib.Path(path)


def write_json_atomic(path, obj: Any) -> str:
  """Writes `obj` as indented JSON (numpy values made plain), atomically."""

  def write(f):
    json.dump(obj, f, indent=1, default=plain)
    f.write("\n")

  return write_atomic(path, write)


class _DuplicateKey(ValueError):
  pass


def _unique_keys(pairs):
  out = dict(pairs)
  if len(out) != len(pairs):
    seen = set()
    for k, _ in pairs:
      if k in seen:
        raise _DuplicateKey(k)
      seen.add(k)
  return out


def read_json(path, unique_keys: bool = False) -> Any:
  """The JSON in `path`; errors name the file. unique_keys: a key twice in
  one object is an error (JSON readers otherwise keep the last silently)."""
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      return json.loads(f.read(),
                        object_pairs_hook=_unique_keys if unique_keys else None)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{path} not found.") from e
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: invalid JSON ({e}); the file is truncated or"
                     " not the expected file.") from e
  except _DuplicateKey as e:
    raise ValueError(
        f"{path}: key {e.args[0]!r} appears twice in one object (e.g. a video"
        " listed twice in \"database\"); JSON readers keep only one copy"
        " silently. Remove or merge the duplicate.") from e



def require_npy_files(folder, ids: Sequence[str], fix: str) -> None:
  """Raises FileNotFoundError naming `folder` unless it has `<id>.npy` for
  every id; `fix` is the sentence that tells the user what to do."""
  present = set(os.listdir(folder)) if os.path.isdir(folder) else set()
  missing = [vid for vid in ids if vid + ".npy" not in present]
  if missing:
    raise FileNotFoundError(
        f"{folder}: {len(missing)} of {len(ids)} requested ids have no file,"
        f" e.g. {missing[:5]}. {fix}")

def load_npy(path, fix: str = "") -> np.ndarray:
  """np.load of a plain .npy (no pickles); a damaged or foreign file is a
  ValueError naming it (and `fix`, what to do about it)."""
  path = os.fspath(path)
  try:
    return np.load(path, allow_pickle=False)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{path} not found.{' ' + fix if fix else ''}"
                            ) from e
  except (OSError, ValueError, EOFError) as e:
    raise ValueError(f"{path}: cannot read as .npy ({type(e).__name__}:"
                     f" {e}); the file is damaged or not an array."
                     f"{' ' + fix if fix else ''}") from e
