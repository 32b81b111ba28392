"""The train state: a pytree of arrays (no functions, no RNG)."""

from __future__ import annotations

from typing import Any, Callable

import flax
from flax import nnx
import jax
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State        # nnx.Param variables
  model_state: nnx.State   # everything else (BatchNorm running statistics)
  opt_state: optax.OptState


def split_model(model: nnx.Module) -> tuple[Any, nnx.State, nnx.State]:
  """graphdef, params, other state (batch statistics)."""
  return nnx.split(model, nnx.Param, ...)


def create_train_state(
    make_model: Callable[[], nnx.Module], tx: optax.GradientTransformation
) -> tuple[Any, TrainState]:
  """Builds the model and optimizer state; returns (graphdef, state)."""
  graphdef, params, rest = split_model(make_model())
  state = TrainState(
      step=jax.numpy.zeros((), jax.numpy.int32),
      params=params,
      model_state=rest,
      opt_state=tx.init(params),
  )
  return graphdef, state


def abstract_train_state(
    make_model: Callable[[], nnx.Module], tx: optax.GradientTransformation
) -> tuple[Any, TrainState]:
  """(graphdef, ShapeDtypeStruct state) without allocating parameters."""
  graphdef_box = []

  def init():
    graphdef, state = create_train_state(make_model, tx)
    graphdef_box.append(graphdef)
    return state

  abstract = jax.eval_shape(init)
  return graphdef_box[0], abstract
