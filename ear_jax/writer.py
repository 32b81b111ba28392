"""Process-0 JSON-lines metric writer: <workdir>/metrics.jsonl."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax

from ear_jax import jsonio


_plain = jsonio.plain


class MetricWriter:
  """Appends {"step": s, name: value, ...} rows; no-op off process 0."""

  def __init__(self, workdir: str, filename: str = "metrics.jsonl"):
    self.path = os.path.join(workdir, filename)
    self.active = jax.process_index() == 0
    if self.active:
      os.makedirs(workdir, exist_ok=True)

  def truncate_after(self, step: int) -> None:
    """Drops rows past `step` (those of a killed run after its last
    checkpoint, a torn last line), so a resumed run logs no step twice."""
    if not self.active or not os.path.exists(self.path):
      return
    rows = _read_rows(self.path)
    keep = [line for line, row in rows
            if row is not None and row.get("step", 0) <= step]
    if len(keep) != len(rows):
      tmp = self.path + ".tmp"
      with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(keep)
      os.replace(tmp, self.path)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.active:
      return
    row = {"step": int(step)}
    row.update({k: _plain(v) for k, v in metrics.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")


def _read_rows(path: str) -> list[tuple[str, dict | None]]:
  """(line, row) of every line; row None for a torn last line (a run killed
  while appending). Any other unreadable line is an error naming it."""
  try:
    with open(path, encoding="utf-8") as f:
      lines = [line for line in f if line.strip()]
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text ({e}).") from e
  rows = []
  for i, line in enumerate(lines):
    try:
      rows.append((line, json.loads(line)))
    except ValueError as e:
      if i + 1 < len(lines) or line.endswith("\n"):
        raise ValueError(f"{path}:{i + 1}: not a JSON row ({e}); the file was"
                         " edited or damaged. Fix or delete that line.") from e
      rows.append((line, None))
  return rows


def read_metrics(workdir: str, filename: str = "metrics.jsonl") -> list[dict]:
  path = os.path.join(workdir, filename)
  if not os.path.exists(path):
    return []
  return [row for _, row in _read_rows(path) if row is not None]


write_json_atomic = jsonio.write_json_atomic
