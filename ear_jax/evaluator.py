"""Jitted prediction over a whole split; metrics are computed on the host.

`Predictor` keeps the split on device and runs one scanned, jitted call per
evaluation (no per-batch host work), returning numpy arrays cut to the real
number of videos. Nothing couples videos at evaluation time, so the padded
last batch and the eval batch size never change a result.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from flax import nnx
import jax
import numpy as np

from ear_jax import sharding as sharding_lib
from ear_jax.data import pipeline

PredictFn = Callable[[nnx.Module, Mapping[str, jax.Array]], dict]


def gather(data: Mapping[str, jax.Array], idx_B: jax.Array,
           mask_B: jax.Array) -> dict:
  """Batch of rows `idx_B` with `video_mask`; padded rows are zeroed."""
  batch = {}
  for k, v in data.items():
    x = v[idx_B]
    m = mask_B.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
    batch[k] = x * m
  batch["video_mask"] = mask_B
  return batch


def predict_program(graphdef, predict_fn: PredictFn, mesh,
                    make_batch=gather):
  """The jitted (weights, data, idx_SxB, mask_SxB, keys) -> {key: [S, B,
  ...]} that a Predictor runs: a scan of `predict_fn` over index batches
  (also compiled ahead of time by benchmarks/aot_check.py)."""

  def run(weights, data, idx_SxB, mask_SxB, keys):
    model = nnx.merge(graphdef, weights["params"], weights["model_state"])

    def body(carry, xs):
      batch = sharding_lib.constrain_batch(make_batch(data, *xs), mesh)
      out = predict_fn(model, batch)
      return carry, {k: out[k] for k in (keys or out)}

    _, out = jax.lax.scan(body, None, (idx_SxB, mask_SxB))
    return out

  return jax.jit(run, static_argnames="keys")


class Predictor:
  """predict_fn over every example of `data` in fixed-size padded batches."""

  def __init__(self, graphdef, predict_fn: PredictFn,
               data: Mapping[str, np.ndarray], batch_size: int, mesh=None,
               make_batch=gather):
    self.mesh = mesh if mesh is not None else sharding_lib.make_mesh()
    sharding_lib.check_batch_size(batch_size, "eval batch size", self.mesh)
    self.num = len(next(iter(data.values())))
    self.idx, self.mask = pipeline.eval_batches(self.num, batch_size)
    self.data = sharding_lib.put_replicated(dict(data), self.mesh)
    self._run = predict_program(graphdef, predict_fn, self.mesh, make_batch)

  def __call__(self, weights: dict,
               keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Outputs of every example, [N, ...]; `keys` selects some (less I/O)."""
    out = jax.device_get(
        self._run(weights, self.data, self.idx, self.mask, keys))
    return {
        k: np.asarray(v).reshape((-1,) + v.shape[2:])[: self.num]
        for k, v in out.items()
    }


def prefixed(prefix: str, scores: Mapping[str, Any]) -> dict[str, float]:
  return {f"{prefix}/{k}": float(v) for k, v in scores.items()
          if np.ndim(v) == 0}
