"""Orbax checkpoints: <workdir>/checkpoints (latest few) and <workdir>/best."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def _manager(directory: str, max_to_keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(
      os.path.abspath(directory), options=options, item_names=("state", "meta")
  )


class Checkpointer:
  """Latest checkpoints (for resume) and the best one (for later stages)."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self.workdir = workdir
    self.latest = _manager(os.path.join(workdir, "checkpoints"), max_to_keep)
    self.best = _manager(os.path.join(workdir, "best"), 1)

  def save(self, step: int, state: Any, meta: dict):
    """Saves the full TrainState (for resume) under checkpoints/<step>."""
    self.latest.save(step, args=_save_args(state, meta), force=True)

  def save_best(self, step: int, weights: Any, meta: dict):
    """Saves {"params", "model_state"} of the best model under best/<step>."""
    if self.best.latest_step() == step:
      return
    self.best.save(step, args=_save_args(weights, meta), force=True)

  def best_meta(self) -> dict | None:
    step = self.best.latest_step()
    if step is None:
      return None
    return dict(self.best.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"])

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    step = self.latest.latest_step()
    if step is None:
      return None
    return _restore(self.latest, step, abstract_state)

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()


def _save_args(tree, meta):
  return ocp.args.Composite(
      state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)
  )


def _restore(manager, step, abstract_state):
  out = manager.restore(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          meta=ocp.args.JsonRestore(),
      ),
  )
  return out["state"], dict(out["meta"])


def restore_from_workdir(
    workdir: str, abstract_weights: Any, which: str = "best"
) -> tuple[Any, dict]:
  """Loads the weights of `which` ("best" | "latest") of a run, e.g. stage 1
  for 2; no optimizer needed.

  `abstract_weights` is {"params", "model_state"} (ShapeDtypeStructs) of the
  same model config; a latest checkpoint is a full TrainState, of which only
  those two are read. Returns ({"params", "model_state"}, meta).
  """
  if which not in ("best", "latest"):
    raise ValueError(f"checkpoint={which!r}; expected 'best' or 'latest'")
  sub = "best" if which == "best" else "checkpoints"
  directory = os.path.abspath(os.path.join(workdir, sub))
  if not os.path.isdir(directory):
    raise FileNotFoundError(
        f"{directory} does not exist: is {workdir!r} the workdir of a finished"
        " training run? Train it first, or point the config at the right"
        " workdir."
    )
  manager = ocp.CheckpointManager(
      directory, item_names=("state", "meta"),
      options=ocp.CheckpointManagerOptions(read_only=True),
  )
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"{directory} holds no checkpoint.")
  target = dict(params=abstract_weights["params"],
                model_state=abstract_weights["model_state"])
  try:
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            target, restore_args=ocp.checkpoint_utils.construct_restore_args(
                target), partial_restore=True),
        meta=ocp.args.JsonRestore()))
    tree = out["state"]
    return (dict(params=tree["params"], model_state=tree["model_state"]),
            dict(out["meta"]))
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
        f"could not restore {directory}/{step} into this model: {e}. Was it"
        " trained with a different model config? Use the same config.model."
    ) from e
  finally:
    manager.close()


def abstract_with_sharding(abstract_state: Any, sharding) -> Any:
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      abstract_state,
  )
