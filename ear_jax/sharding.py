"""Mesh and shardings: parameters replicated, batches split over `data`."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D data-parallel mesh over `devices` (default: every device)."""
  # Auto axes: XLA propagates the batch sharding from the constrained inputs.
  auto = (jax.sharding.AxisType.Auto,)
  if devices is None:
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=auto)
  return jax.sharding.Mesh(np.asarray(devices), ("data",), axis_types=auto)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh, axis: int = 0) -> NamedSharding:
  """Splits dimension `axis` over the data axis, everything else replicated."""
  return NamedSharding(mesh, P(*([None] * axis), "data"))


def check_batch_size(batch_size: int, what: str = "config.batch_size",
                     mesh=None) -> None:
  n = mesh.size if mesh is not None else jax.device_count()
  if batch_size % n:
    raise ValueError(
        f"{what}={batch_size} is not divisible by the {n} devices; use a"
        f" multiple of {n}."
    )


def put_replicated(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Host numpy pytree -> global arrays replicated on every device.

  Every process passes the same full arrays (the datasets are small enough to
  live on each device), so this also works on multi-host runs.
  """
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      tree,
  )


def constrain_batch(tree: Any, mesh: jax.sharding.Mesh, axis: int = 0) -> Any:
  """Inside jit: lay a gathered batch out over the data axis."""
  return jax.tree.map(
      lambda x: jax.lax.with_sharding_constraint(x, batch_sharded(mesh, axis)),
      tree,
  )
