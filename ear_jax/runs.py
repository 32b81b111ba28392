"""Finished runs as inputs to later stages: their config.json and weights.

Stage 2 restores stage 1, stage 3 reads stage 2's files, and evaluate /
parse restore stage 3; they all go through these three functions.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from absl import logging
from flax import nnx
import jax
from ml_collections import config_dict

from ear_jax import checkpoint as ckpt_lib
from ear_jax import jsonio
from ear_jax import sharding as sharding_lib
from ear_jax import train_state as ts_lib
from ear_jax import workdir as workdir_lib

CHOICES = ("auto", "best", "latest")


def read_run_config(workdir: str, expect_stage: str | tuple[str, ...] = ()
                    ) -> config_dict.ConfigDict:
  """The resolved config.json of a finished run, as a ConfigDict."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} the workdir"
                            " of an ear-jax run?")
  cfg = config_dict.ConfigDict(jsonio.read_json(path))
  expect = (expect_stage,) if isinstance(expect_stage, str) else expect_stage
  if expect and cfg.get("stage") not in expect:
    raise ValueError(f"{workdir} is a {cfg.get('stage')!r} run; expected a"
                     f" workdir of stage {' or '.join(map(repr, expect))}.")
  return cfg


def resolve_checkpoint(run_workdir: str, which: str) -> str:
  """"auto" -> "best", or "latest" when validation never improved (a run
  keeps best/ only once its metric rose above its start, e.g. not after two
  :tiny epochs), as the run's own final evaluation chooses. "best" and
  "latest" pass through."""
  if which not in CHOICES:
    raise ValueError(f"checkpoint={which!r}; expected one of {CHOICES}.")
  if which != "auto":
    return which
  best = os.path.join(run_workdir, "best")
  if os.path.isdir(best) and any(n.isdigit() for n in os.listdir(best)):
    return "best"
  saved = _saved_best_step(run_workdir)
  if saved is not None:
    raise ckpt_lib.CheckpointError(
        f"{best} holds no checkpoint, but the run's latest checkpoint says"
        f" its best model (step {saved}) was saved there: best/ was deleted"
        " or moved. Restore it from a backup, or set --config.checkpoint="
        "latest to use the last weights instead (other results than the"
        " best model's).")
  logging.info("%s has no best checkpoint: using the latest one.",
               run_workdir)
  return "latest"


def _saved_best_step(run_workdir: str) -> int | None:
  """best_step recorded by the run's newest checkpoint, if any."""
  directory = os.path.join(run_workdir, "checkpoints")
  steps = sorted((int(n) for n in os.listdir(directory) if n.isdigit()),
                 reverse=True) if os.path.isdir(directory) else []
  if not steps:
    return None
  best = ckpt_lib.read_meta(directory, steps[0]).get("best_step")
  if isinstance(best, list):  # N seeds: the newest improvement of any seed
    best = max((b for b in best if b is not None), default=None)
  return best


def abstract_weights(make_model: Callable[[], Any], sharding=None) -> tuple:
  """(graphdef, {"params", "model_state"} as ShapeDtypeStructs), allocating
  nothing; with `sharding`, every leaf carries it."""
  graphdef, params, model_state = ts_lib.split_model(
      nnx.eval_shape(make_model))
  as_sds = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return graphdef, jax.tree.map(
      as_sds, dict(params=params, model_state=model_state))


def num_seeds(run_workdir: str) -> int:
  """The number of seeds a run trained together (its config's num_seeds;
  1 for a run without config.json, e.g. imported weights)."""
  if not os.path.isfile(os.path.join(run_workdir, "config.json")):
    return 1
  return int(read_run_config(run_workdir).get("num_seeds", 1) or 1)


def restore_run(run_workdir: str, make_model: Callable[[], Any], which: str,
                mesh=None, seed_index: int = 0) -> tuple[Any, dict, int, str]:
  """(graphdef, {"params", "model_state"}, step, checkpoint) of a run.

  `which` is "auto" | "best" | "latest"; `checkpoint` is the one restored.
  Only the weights are read (no optimizer is built). They come back
  replicated over `mesh` (default: every device), whatever the layout they
  were saved with. A run of N seeds (config.num_seeds) keeps them stacked:
  this returns seed `seed_index`'s (config.seed + seed_index), and "auto"
  resolves per seed ("latest" for a seed whose validation never improved).
  """
  n = num_seeds(run_workdir)
  if n > 1 or seed_index:
    return _restore_seed(run_workdir, make_model, which, mesh, seed_index, n)
  which = resolve_checkpoint(run_workdir, which)
  mesh = mesh if mesh is not None else sharding_lib.make_mesh()
  graphdef, abstract = abstract_weights(make_model,
                                        sharding_lib.replicated(mesh))
  try:
    weights, meta = ckpt_lib.restore_from_workdir(run_workdir, abstract, which)
  except ckpt_lib.ModelMismatchError as e:
    raise ckpt_lib.ModelMismatchError(
        f"{e}{_suspects(run_workdir, e.diffs)}", e.diffs) from None
  except FileNotFoundError as e:
    if which != "best":
      raise
    raise FileNotFoundError(
        f"{e} A run keeps best/ only once its validation metric improved;"
        " use --config.checkpoint=auto (or latest) for such a run.") from e
  step = meta.get("best_step") if which == "best" else meta.get("step")
  return graphdef, weights, int(step), which


def _restore_seed(run_workdir, make_model, which, mesh, seed_index: int,
                  n: int) -> tuple[Any, dict, int, str]:
  """restore_run of seed `seed_index` of an N-seed run (stacked weights)."""
  if not (isinstance(seed_index, int) and 0 <= seed_index < n):
    raise ValueError(f"seed_index={seed_index!r}: {run_workdir} trained {n}"
                     f" seed(s); use 0 to {n - 1}.")
  requested = which
  which = resolve_checkpoint(run_workdir, which)
  mesh = mesh if mesh is not None else sharding_lib.make_mesh()
  graphdef, abstract = abstract_weights(make_model,
                                        sharding_lib.replicated(mesh))
  stacked = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct((n,) + x.shape, x.dtype,
                                     sharding=x.sharding), abstract)
  weights, meta = ckpt_lib.restore_from_workdir(run_workdir, stacked, which)
  if which == "best" and meta["best_step"][seed_index] is None:
    if requested == "best":
      raise ckpt_lib.CheckpointError(
          f"{run_workdir}: seed {seed_index} of {n} never improved its"
          " validation metric, so it has no best model; use"
          " --config.checkpoint=auto (or latest).")
    which = "latest"  # as the run's own final evaluation of that seed
    weights, meta = ckpt_lib.restore_from_workdir(run_workdir, stacked,
                                                  which)
  step = (meta["best_step"][seed_index] if which == "best"
          else meta.get("step"))
  weights = jax.tree.map(lambda x: x[seed_index], weights)
  return graphdef, weights, int(step), which


def _suspects(run_workdir: str, diffs) -> str:
  """" Likely <field> ..." naming the config.json model fields whose value
  is a size the model wants and the checkpoint does not have (config.json
  edited after training), or ""."""
  path = os.path.join(run_workdir, workdir_lib.CONFIG)
  try:
    model = jsonio.read_json(path).get("model", {})
  except (OSError, ValueError, AttributeError):
    return ""
  # pylint: disable-next=protected-access
  flat = workdir_lib._flatten(model, "model.")
  votes = {}  # (model value, checkpoint size) -> config fields
  for _, have, want in diffs:
    if have is None or want is None or len(have) != len(want):
      continue
    for h, w in zip(have, want):
      if h != w:
        fields = votes.setdefault((w, h), [])
        fields += [f for f, v in flat.items() if v == w and f not in fields
                   and not isinstance(v, bool)]
  parts = [f"{' or '.join(fields[:3])} = {w} (the checkpoint was saved with"
           f" {h} there)" for (w, h), fields in votes.items() if fields]
  if not parts:
    return ""
  return f" Likely in {path}: {'; '.join(parts[:2])}."


def finished_with(config, done_file: str,
                  ignore: Sequence[str] = workdir_lib.IGNORED) -> bool:
  """The run in config.workdir wrote `done_file` (its last output) with this
  very config; the (dotted) fields in `ignore`, which change no result,
  differ freely."""
  path = os.path.join(config.workdir, workdir_lib.CONFIG)
  if not (os.path.exists(done_file) and os.path.exists(path)):
    return False
  saved = jsonio.read_json(path)
  current = workdir_lib.config_dict(config)
  for tree in (saved, current):
    for name in ignore:
      *parents, leaf = name.split(".")
      node = tree
      for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
      if isinstance(node, dict):
        node.pop(leaf, None)
  return saved == current
