"""Atomic JSON files (stdlib + numpy only, so metrics.py can use it too)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
  """numpy scalars/arrays -> Python; non-finite floats -> strings."""
  if isinstance(value, (np.generic, np.ndarray)):
    value = value.item() if np.ndim(value) == 0 else value.tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def write_text_atomic(path, text: str) -> str:
  """Writes `text` to a temporary name beside `path`, then renames it."""
  path = os.fspath(path)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  suffix = os.path.splitext(path)[1]
  fd, tmp = tempfile.mkstemp(prefix=".tmp.", suffix=suffix, dir=parent)
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def write_json_atomic(path, obj: Any) -> str:
  """Writes JSON to a temporary name beside `path`, then renames it."""
  return write_text_atomic(
      path, json.dumps(obj, indent=1, default=plain) + "\n")
