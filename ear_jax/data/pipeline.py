"""Epoch order and index batches; the features themselves stay on device.

Training never iterates records in Python: each epoch is one array of batch
indices [steps, B] (plus a real-video mask), and the jitted, scanned train
step gathers its batch from the device-resident dataset. This is why grain
does not sit on the training path: a per-record host pipeline would be the
bottleneck at ~5 ms per step, and the data (LLP ~1 GB, UnAV ~2 GB) fit on the
device. grain's threads load the files before that (data/parallel.py:
features, stage-2 and VALOR pseudo-labels) and write stage-2 files.
"""

from __future__ import annotations

import math

import numpy as np


def epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The shuffled example order of `epoch`: a pure function of (seed, epoch)."""
  return np.random.default_rng((seed, epoch)).permutation(num_examples)


def steps_per_epoch(
    num_examples: int, batch_size: int, drop_remainder: bool = False
) -> int:
  if drop_remainder:
    return num_examples // batch_size
  return math.ceil(num_examples / batch_size)


def index_batches(
    order: np.ndarray, batch_size: int, drop_remainder: bool = False
) -> tuple[np.ndarray, np.ndarray]:
  """Splits `order` into [steps, B] indices and a [steps, B] real-video mask.

  The last partial batch is padded with index 0 and mask 0 (PyTorch keeps
  the partial batch; every batch-coupled quantity ignores masked videos, so
  the padded batch computes exactly what the smaller one would).
  """
  n = len(order)
  steps = steps_per_epoch(n, batch_size, drop_remainder)
  if steps == 0:
    raise ValueError(
        f"{n} examples make no batch of {batch_size} with drop_remainder;"
        " lower the batch size."
    )
  total = steps * batch_size
  idx = np.zeros(total, np.int32)
  mask = np.zeros(total, np.float32)
  used = min(n, total)
  idx[:used] = order[:used]
  mask[:used] = 1.0
  return idx.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def eval_batches(num_examples: int, batch_size: int):
  """In-order [steps, B] indices covering every example once, padded."""
  return index_batches(np.arange(num_examples), batch_size)
