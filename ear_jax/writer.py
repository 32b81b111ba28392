"""Process-0 metric writer: <workdir>/metrics.jsonl, optionally TensorBoard
event files in <workdir>/tensorboard (config.tensorboard)."""

from __future__ import annotations

import json
import numbers
import os
from typing import Any, Mapping

import jax

from ear_jax import jsonio


TENSORBOARD_DIR = "tensorboard"


class TensorBoardWriter:
  """Scalars to TensorBoard event files (tensorboardX, imported lazily).

  Only numeric scalars are written; strings and arrays stay in
  metrics.jsonl. `purge_after(step)` (a resumed run) makes TensorBoard drop
  the events logged past `step` by the interrupted run.
  """

  def __init__(self, logdir: str):
    try:
      import tensorboardX  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          "config.tensorboard=True needs tensorboardX: pip install"
          ' "ear-jax[tensorboard]" (or pip install tensorboardX), or set'
          " --config.tensorboard=False."
      ) from e
    self._module = tensorboardX
    self.logdir = logdir
    self._writer = None
    self._purge_step = None

  def purge_after(self, step: int) -> None:
    self._purge_step = int(step) + 1

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if self._writer is None:
      self._writer = self._module.SummaryWriter(
          self.logdir, purge_step=self._purge_step
      )
    for k, v in metrics.items():
      v = jsonio.plain(v)
      if isinstance(v, numbers.Real) and not isinstance(v, bool):
        self._writer.add_scalar(k, float(v), global_step=int(step))
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


class MetricWriter:
  """Appends {"step": s, name: value, ...} rows; no-op off process 0.

  With tensorboard=True the numeric values also go to TensorBoard event
  files in <workdir>/tensorboard (`tensorboard --logdir <workdir>`).
  """

  def __init__(self, workdir: str, filename: str = "metrics.jsonl",
               tensorboard: bool = False):
    self.path = os.path.join(workdir, filename)
    self.active = jax.process_index() == 0
    self.tensorboard = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        self.tensorboard = TensorBoardWriter(
            os.path.join(workdir, TENSORBOARD_DIR))

  def truncate_after(self, step: int) -> None:
    """Drops rows past `step` (those of a killed run after its last
    checkpoint, a torn last line), so a resumed run logs no step twice;
    TensorBoard is told to purge the same steps."""
    if not self.active:
      return
    if self.tensorboard is not None:
      self.tensorboard.purge_after(step)
    if not os.path.exists(self.path):
      return
    rows = _read_rows(self.path)
    keep = [line for line, row in rows
            if row is not None and row.get("step", 0) <= step]
    if len(keep) != len(rows):
      jsonio.write_text_atomic(self.path, "".join(keep))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.active:
      return
    row = {"step": int(step)}
    row.update({k: jsonio.plain(v) for k, v in metrics.items()})
    # O_NOFOLLOW: appends go to the workdir's own file, never through a
    # link planted in its place (ELOOP).
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                 | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self.tensorboard is not None:
      self.tensorboard.write(step, metrics)

  def close(self) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()


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

