"""Process-0 JSON-lines metric writer: <workdir>/metrics.jsonl."""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, Mapping

import jax
import numpy as np


def _plain(value: Any) -> Any:
  if isinstance(value, (np.generic, np.ndarray)):
    value = value.item() if np.ndim(value) == 0 else value.tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class MetricWriter:
  """Appends {"step": s, name: value, ...} rows; no-op off process 0."""

  def __init__(self, workdir: str, filename: str = "metrics.jsonl"):
    self.path = os.path.join(workdir, filename)
    self.active = jax.process_index() == 0
    if self.active:
      os.makedirs(workdir, exist_ok=True)

  def truncate_after(self, step: int) -> None:
    """Drops rows past `step`, so a resumed run does not log steps twice."""
    if not self.active or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      rows = [line for line in f if line.strip()]
    keep = [r for r in rows if json.loads(r).get("step", 0) <= step]
    if len(keep) != len(rows):
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(keep)
      os.replace(tmp, self.path)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.active:
      return
    row = {"step": int(step)}
    row.update({k: _plain(v) for k, v in metrics.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")


def read_metrics(workdir: str, filename: str = "metrics.jsonl") -> list[dict]:
  path = os.path.join(workdir, filename)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def write_json_atomic(path: str, obj: Any) -> str:
  """Writes JSON to a temporary name beside `path`, then renames it."""
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp.", suffix=".json", dir=parent)
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=1, default=_plain)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path
