"""Orbax checkpoints: <workdir>/checkpoints (latest few) and <workdir>/best."""

from __future__ import annotations

import logging as std_logging
import os
import re
import shutil
import sys
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
  """A checkpoint is missing or unreadable; the message names it and a fix."""


def _quiet_failed_reads() -> None:
  """When a restore fails, orbax's other reads end on closed event loops,
  each printing a long trace (with TensorStore specs) that says nothing the
  one-line error does not. Installed before restoring: drops those and
  passes every other unraisable exception on."""
  if getattr(sys.unraisablehook, "_ear_jax_quiet", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    e, obj = unraisable.exc_value, unraisable.object
    if (isinstance(e, RuntimeError) and "Event loop is closed" in str(e)) or (
        "_read_array_index_and_device_put" in repr(obj)):
      return
    previous(unraisable)

  hook._ear_jax_quiet = True  # pylint: disable=protected-access
  sys.unraisablehook = hook
  # The same reads, gathered, are logged by asyncio when collected.
  std_logging.getLogger("asyncio").addFilter(
      lambda r: "exception was never retrieved" not in r.getMessage())


def quiet_info_logs() -> None:
  """Keeps orbax's per-save INFO lines out of the console (warnings pass)."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _OrbaxInfoFilter) for f in handler.filters):
    handler.addFilter(_OrbaxInfoFilter())


class _OrbaxInfoFilter:

  def filter(self, record) -> bool:
    return record.levelno >= 30 or "orbax" not in record.pathname


def _detail(e: BaseException) -> None:
  """Logs the full error (DEBUG) instead of chaining it: a TensorStore error
  prints its specs over hundreds of lines; the one-line reason is in the
  message."""
  logging.debug("full checkpoint error: %r", e)
  return None


def short_error(e: BaseException, limit: int = 300) -> str:
  """One line of what is wrong, without TensorStore's spec dumps."""
  msg = str(e).split(" [tensorstore_spec")[0].replace("\n", " ")
  # TensorStore nests "Error opening ...: Error reading ...: <cause>".
  parts = re.split(r": (?=Error )", msg)
  msg = parts[-1] if len(parts) > 1 else msg
  if len(msg) > limit:
    msg = "..." + msg[-limit:]
  return f"{type(e).__name__}: {msg}"


def _manager(directory: str, max_to_keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(
      os.path.abspath(directory), options=options, item_names=("state", "meta")
  )


# The open Checkpointer of each workdir in this process, held until close():
# one whose fit raised may still be writing in the background.
_OPEN: dict = {}


class Checkpointer:
  """Latest checkpoints (for resume) and the best one (for later stages).

  A new Checkpointer on a workdir first lets an earlier one of this process
  (e.g. of a fit that raised mid-run) finish its asynchronous writes, so a
  retry in the same process never races a stale writer.
  """

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self.workdir = workdir
    key = os.path.abspath(workdir)
    previous = _OPEN.get(key)
    if previous is not None:
      previous.wait()
    self.latest = _manager(os.path.join(workdir, "checkpoints"), max_to_keep)
    self.best = _manager(os.path.join(workdir, "best"), 1)
    _OPEN[key] = self

  def save(self, step: int, state: Any, meta: dict):
    """Saves the full TrainState (for resume) under checkpoints/<step>."""
    self.latest.save(step, args=_save_args(state, meta), force=True)

  def save_best(self, step: int, weights: Any, meta: dict):
    """Saves {"params", "model_state"} of the best model under best/<step>."""
    if self.best.latest_step() == step:
      return
    self.best.save(step, args=_save_args(weights, meta), force=True)

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    """The newest intact checkpoint (None if there is none yet).

    A step that cannot be read (a truncated file, a half-deleted folder) is
    reported in one line and moved to checkpoints/<step>.corrupt once an
    older step restores; if none does, CheckpointError lists them all.
    """
    steps = sorted(self.latest.all_steps(), reverse=True)
    bad = []
    for step in steps:
      path = os.path.join(self.latest.directory, str(step))
      try:
        out = _restore(self.latest, step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except
        bad.append((path, short_error(e)))
        logging.warning("checkpoint %s is unreadable (%s)%s", path,
                        bad[-1][1], "; trying the next older step"
                        if step != steps[-1] else "")
        continue
      if bad:
        for p, _ in bad:
          _move_aside(p)
        self.latest.reload()
        logging.warning("resuming from %s, the newest intact checkpoint;"
                        " the unreadable newer step(s) were moved to"
                        " <step>.corrupt.", path)
      return out
    if bad:
      raise CheckpointError(
          "no intact checkpoint to resume from: "
          + "; ".join(f"{p}: {why}" for p, why in bad)
          + f". Delete {self.latest.directory} to start the run over (or"
          " use a new --config.workdir).")
    return None

  def restore_best(self, abstract_state: Any, meta: dict) -> dict:
    """{"params", "model_state"} of best/ when resuming a run whose
    checkpoint `meta` says a best model was saved."""
    step = self.best.latest_step()
    directory = self.best.directory
    if step is None:
      raise CheckpointError(
          f"{directory} holds no checkpoint, but the metadata of"
          f" {self.latest.directory}/{meta.get('step')} says the best model"
          f" (step {meta.get('best_step')}) was saved there. Restore"
          f" {directory} from a backup, or start over in a new"
          " --config.workdir.")
    target = dict(params=abstract_state.params,
                  model_state=abstract_state.model_state)
    try:
      return _restore(self.best, step, target)[0]
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(
          f"{directory}/{step} is unreadable ({short_error(e)}). Restore it"
          " from a backup, or start over in a new --config.workdir.") from (
              _detail(e))

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    key = os.path.abspath(self.workdir)
    if _OPEN.get(key) is self:
      del _OPEN[key]
    self.latest.close()
    self.best.close()


def _move_aside(path: str) -> None:
  dest = path + ".corrupt"
  shutil.rmtree(dest, ignore_errors=True)
  os.replace(path, dest)


def read_meta(directory: str, step: int) -> dict:
  """The JSON meta saved beside the state of <directory>/<step>."""
  manager = ocp.CheckpointManager(
      os.path.abspath(directory), item_names=("state", "meta"),
      options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    return dict(manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"])
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(
        f"{directory}/{step}: unreadable metadata ({short_error(e)}).") from (
            _detail(e))
  finally:
    manager.close()


def _save_args(tree, meta):
  return ocp.args.Composite(
      state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)
  )


def _restore(manager, step, abstract_state):
  _quiet_failed_reads()
  out = manager.restore(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          meta=ocp.args.JsonRestore(),
      ),
  )
  return out["state"], dict(out["meta"])


# Restores only the subtrees in the target (no optimizer state); orbax
# before `partial_restore` did this with an empty `transforms`.
_PARTIAL = (dict(partial_restore=True) if "partial_restore" in
            ocp.args.PyTreeRestore.__dataclass_fields__ else dict(transforms={}))


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
  _quiet_failed_reads()
  try:
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            target, restore_args=ocp.checkpoint_utils.construct_restore_args(
                target), **_PARTIAL),
        meta=ocp.args.JsonRestore()))
    tree = out["state"]
    return (dict(params=tree["params"], model_state=tree["model_state"]),
            dict(out["meta"]))
  except Exception as e:  # pylint: disable=broad-except
    step_dir = os.path.join(directory, str(step))
    fix = ("re-run that training stage: it resumes from its newest intact"
           " checkpoint and rewrites this one" if which == "latest" else
           f"restore {directory} from a backup, or use checkpoint=latest")
    # What the checkpoint's own metadata says it holds decides: arrays of
    # other shapes (or names) are another model; the same ones that fail
    # to read are a damaged file.
    stored = stored_shapes(step_dir)
    if stored is None:
      raise CheckpointError(
          f"{step_dir} is truncated or corrupt: {_damaged_file(e, step_dir)}"
          f" cannot be read ({short_error(e)}); {fix}.") from _detail(e)
    diffs = shape_differences(stored, target)
    if diffs:
      raise ModelMismatchError(
          f"{step_dir} does not fit this model: "
          + "; ".join(_describe_diff(d) for d in diffs[:3])
          + (f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else "")
          + ". It was trained with another config.model; use the model"
          " config it was trained with.", diffs) from _detail(e)
    raise CheckpointError(
        f"{step_dir} is truncated or corrupt: {_damaged_file(e, step_dir)}"
        f" cannot be read ({short_error(e)}); {fix}.") from _detail(e)
  finally:
    manager.close()


class ModelMismatchError(CheckpointError):
  """The checkpoint holds arrays of other names or shapes than the model;
  `diffs` lists them as (name, stored shape | None, model shape | None)."""

  def __init__(self, message: str, diffs):
    super().__init__(message)
    self.diffs = list(diffs)


def _key_name(path) -> str:
  parts = []
  for k in path:
    part = getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))
    parts.append(str(part))
  if parts and parts[-1] == "value":
    parts.pop()  # nnx variables end in .value
  return ".".join(parts)


def stored_shapes(step_dir: str) -> dict[str, tuple] | None:
  """{"params.<...>": shape} that <step_dir>/state's metadata records, or
  None if that metadata cannot be read."""
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      meta = checkpointer.metadata(os.path.join(step_dir, "state"))
    meta = getattr(meta, "item_metadata", meta)
    leaves = jax.tree_util.tree_flatten_with_path(meta)[0]
  except Exception as e:  # pylint: disable=broad-except
    _detail(e)
    return None
  out = {_key_name(p): tuple(x.shape) for p, x in leaves
         if getattr(x, "shape", None) is not None}
  return out or None


def shape_differences(stored: dict, target: Any) -> list:
  """[(name, stored shape | None, target shape | None)] of the arrays of
  `target` (an abstract tree) that the stored ones do not match."""
  want = {_key_name(p): tuple(x.shape)
          for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
  return [(k, stored.get(k), want.get(k)) for k in sorted(set(want) | set(
      k for k in stored if k.split(".")[0] in ("params", "model_state")))
          if stored.get(k) != want.get(k)]


def _describe_diff(diff) -> str:
  name, have, want = diff
  if have is None:
    return f"{name} is not in the checkpoint (the model has {want})"
  if want is None:
    return f"{name} {have} is in the checkpoint but not in the model"
  return f"{name} has shape {have} there, {want} in this model"


def _damaged_file(e: BaseException, step_dir: str) -> str:
  """The file an orbax/TensorStore error names, else the likeliest one."""
  text = str(e)
  files = [f for f in re.findall(r'local file "([^"]+)"', text)
           if os.path.isfile(f)]
  if files:
    return files[-1]
  state = os.path.join(step_dir, "state")
  if "manifest" in text:
    return f"a manifest.ocdbt under {state}"
  return f"a file under {state}"


def abstract_with_sharding(abstract_state: Any, sharding) -> Any:
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      abstract_state,
  )
