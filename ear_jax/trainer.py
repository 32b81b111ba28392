"""The training loop every stage shares: AdamW, scanned jitted epochs, resume.

A stage supplies `make_model`, a `loss_fn(model, batch, key)` (or
`loss_fn(model, batch, key, loss_args)` with `fit(loss_args=...)`), a
`make_batch` that gathers a batch from the device-resident dataset inside
jit, and an optional `evaluate(weights) -> {"val/...": value}` for model
selection.

Compiled once per program, not per data: the run's PRNG key and `loss_args`
(e.g. stage-2 thresholds and class frequencies) are arguments of the jitted
epoch, never constants in it, and `make_model(seed=...)` factories get the
seed as an argument of the jitted init. So a new seed or new pseudo-labels
reuse the executable: in one process through the epoch-function cache below
(when the loss is a hashable object, e.g. parser_lib.ParserLoss), across
processes through JAX's persistent compilation cache (identical programs).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import time
from typing import Any, Callable, Mapping

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from ear_jax import checkpoint as ckpt_lib
from ear_jax import sharding as sharding_lib
from ear_jax import train_state as ts_lib
from ear_jax import workdir as workdir_lib
from ear_jax import writer as writer_lib
from ear_jax.data import pipeline

PyTree = Any
LossFn = Callable[[nnx.Module, Mapping[str, jax.Array], jax.Array], tuple]
MakeBatch = Callable[[PyTree, jax.Array, jax.Array], dict]


# ----------------------------------------------------------------- optimizer
def epoch_learning_rate(epoch, *, lr, min_lr, warmup_epochs, total_epochs):
  """LR of 1-based `epoch`: linear warm-up e/W, then cosine to min_lr.

  Constant within an epoch, as in the UWAV code: epoch 1 uses lr/W, epoch W
  uses lr, the last epoch uses min_lr. Works on Python ints and jnp arrays.
  """
  cos_len = max(total_epochs - warmup_epochs, 1)
  progress = (epoch - warmup_epochs) / cos_len
  cosine = min_lr + 0.5 * (lr - min_lr) * (1 + jnp.cos(jnp.pi * progress))
  if warmup_epochs <= 0:
    return cosine
  warm = epoch / warmup_epochs * lr
  return jnp.where(epoch < warmup_epochs, warm, cosine)


def make_schedule(optim, steps_per_epoch: int, total_epochs: int):
  def schedule(step):
    epoch = step // steps_per_epoch + 1
    return epoch_learning_rate(
        epoch, lr=optim.lr, min_lr=optim.min_lr,
        warmup_epochs=optim.warmup_epochs, total_epochs=total_epochs,
    )
  return schedule


def make_optimizer(optim, steps_per_epoch: int, total_epochs: int):
  """clip_by_global_norm -> AdamW (decay on every parameter, scaled by LR)."""
  schedule = make_schedule(optim, steps_per_epoch, total_epochs)
  parts = []
  if optim.clip_norm:
    parts.append(optax.clip_by_global_norm(optim.clip_norm))
  parts.append(optax.adamw(
      schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
      weight_decay=optim.weight_decay,
  ))
  return optax.chain(*parts), schedule


# ---------------------------------------------------------------- train step
def step_consts(train_key: jax.Array, loss_args: PyTree = None) -> dict:
  """The per-run data of a train step: {"key": PRNG key, "loss": args}."""
  return {"key": train_key, "loss": loss_args}


def make_train_step(graphdef, tx, loss_fn: LossFn, make_batch: MakeBatch,
                    mesh):
  """(state, data, consts, idx_B, mask_B) -> (state, metrics): one pure step.

  consts = step_consts(train_key, loss_args): the step's dropout/mixup key is
  fold_in(consts["key"], step); loss_fn gets consts["loss"] as a fourth
  argument unless it is None.
  """

  def train_step(state: ts_lib.TrainState, data, consts, idx_B, mask_B):
    batch = sharding_lib.constrain_batch(make_batch(data, idx_B, mask_B), mesh)
    key = jax.random.fold_in(consts["key"], state.step)
    loss_args = consts["loss"]

    def objective(params):
      # Fresh Variables in this trace: BatchNorm updates its statistics.
      model_state = jax.tree.map(lambda x: x, state.model_state)
      model = nnx.merge(graphdef, params, model_state)
      if loss_args is None:
        loss, aux = loss_fn(model, batch, key)
      else:
        loss, aux = loss_fn(model, batch, key, loss_args)
      _, _, model_state = ts_lib.split_model(model)
      return loss, (aux, model_state)

    (loss, (aux, model_state)), grads = jax.value_and_grad(
        objective, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
    new_state = ts_lib.TrainState(state.step + 1, params, model_state,
                                  opt_state)
    return new_state, metrics

  return train_step


def make_epoch_fn(train_step, seed_axes=None):
  """Scans the step over the [steps, B] index array of one epoch:
  (state, data, consts, idx_SxB, mask_SxB) -> (state, per-step metrics).

  seed_axes = (data_axes, consts_axes[, mode]) (see `SeedAxes`): the epoch
  runs over a leading seed axis of the state, the index arrays ([N, S, B])
  and the parts of data/consts whose axis is 0; None (one seed): no seed
  axis. mode "vmap" (default) batches the seeds into one wider program
  (fast; float32 sums may be reordered, so seed k matches its one-seed run
  to ~1e-7 per step); "map" runs them one after another inside the program
  (lax.map: each seed is the one-seed program, bit-identical to it on CPU).
  """

  def run(state, data, consts, idx_SxB, mask_SxB):
    def body(st, xs):
      return train_step(st, data, consts, *xs)
    return jax.lax.scan(body, state, (idx_SxB, mask_SxB))

  if seed_axes is None:
    return jax.jit(run, donate_argnums=0)
  data_axes, consts_axes, *mode = seed_axes
  if (mode or ["vmap"])[0] == "vmap":
    return jax.jit(jax.vmap(run, in_axes=(0, data_axes, consts_axes, 0, 0)),
                   donate_argnums=0)

  def run_map(state, data, consts, idx_NxSxB, mask_NxSxB):
    """The seeds one after another (lax.map): each is the one-seed program."""
    is_none = lambda x: x is None  # an axis of None: shared by the seeds

    def split(tree, axes):  # (shared parts, per-seed parts), axes' layout
      return (jax.tree.map(lambda a, x: None if a == 0 else x, axes, tree,
                           is_leaf=is_none),
              jax.tree.map(lambda a, x: x if a == 0 else None, axes, tree,
                           is_leaf=is_none))

    def join(axes, shared, per_seed):
      return jax.tree.map(lambda a, sh, k: k if a == 0 else sh, axes, shared,
                          per_seed, is_leaf=is_none)

    data_sh, data_k = split(data, data_axes)
    consts_sh, consts_k = split(consts, consts_axes)

    def one(xs):
      st, d, c, i, m = xs
      return run(st, join(data_axes, data_sh, d),
                 join(consts_axes, consts_sh, c), i, m)

    return jax.lax.map(one, (state, data_k, consts_k, idx_NxSxB, mask_NxSxB))

  return jax.jit(run_map, donate_argnums=0)


# (graphdef, optimizer config, loss, make_batch, mesh) -> jitted epoch.
_EPOCH_FNS: dict = {}


def _optimizer_key(optim, steps_per_epoch: int, total_epochs: int):
  return (json.dumps(optim.to_dict() if hasattr(optim, "to_dict")
                     else dict(optim), sort_keys=True, default=str),
          steps_per_epoch, total_epochs)


def cached_epoch_fn(graphdef, tx, optimizer_key, loss_fn: LossFn,
                    make_batch: MakeBatch, mesh, seed_axes=None):
  """make_epoch_fn(make_train_step(...)), one per program in this process.

  Two fits that differ only in data (seed, loss_args, train set) get the
  same jitted function, so its traced and compiled executable is reused.
  Unhashable losses (plain closures) get a fresh function every time.
  `seed_axes` (hashable, see `make_epoch_fn`) is part of the key.
  """
  key = (graphdef, optimizer_key, loss_fn, make_batch, mesh,
         _hashable_axes(seed_axes))
  make = lambda: make_epoch_fn(
      make_train_step(graphdef, tx, loss_fn, make_batch, mesh), seed_axes)
  try:
    hash(key)
  except TypeError:
    return make()
  if key not in _EPOCH_FNS:
    _EPOCH_FNS[key] = make()
  return _EPOCH_FNS[key]


def _hashable_axes(axes):
  if axes is None:
    return None
  leaves, treedef = jax.tree.flatten(axes, is_leaf=lambda x: x is None)
  return (tuple(leaves), str(treedef))


def init_state(make_model, tx, seed: int, out_sharding):
  """The initial TrainState, jitted; a `make_model(seed=...)` factory gets
  jax.random.key(seed) traced (one program for every seed; the same key
  nnx.Rngs(seed) would make)."""
  try:
    takes_seed = "seed" in inspect.signature(make_model).parameters
  except (TypeError, ValueError):
    takes_seed = False
  if not takes_seed:
    return jax.jit(lambda: ts_lib.create_train_state(make_model, tx)[1],
                   out_shardings=out_sharding)()
  return jax.jit(
      lambda s: ts_lib.create_train_state(
          lambda: make_model(seed=jax.random.key(s)), tx)[1],
      out_shardings=out_sharding)(jnp.asarray(seed, jnp.int32))


def init_states(make_model, tx, seeds, out_sharding):
  """The initial TrainStates of `seeds`, stacked on a leading axis: one
  vmapped jit of init_state's program (seed k's slice is init_state(
  seeds[k])). Needs a `make_model(seed=...)` factory."""
  if not _takes_seed(make_model):
    raise ValueError(
        "num_seeds > 1 needs a make_model(seed=...) factory (e.g."
        " parser_lib.model_factory); this one builds the same model for"
        " every seed.")
  return jax.jit(jax.vmap(
      lambda s: ts_lib.create_train_state(
          lambda: make_model(seed=jax.random.key(s)), tx)[1]),
                 out_shardings=out_sharding)(jnp.asarray(seeds, jnp.int32))


def _takes_seed(make_model) -> bool:
  try:
    return "seed" in inspect.signature(make_model).parameters
  except (TypeError, ValueError):
    return False


def seed_list(config) -> list[int]:
  """[config.seed + k for k < config.num_seeds] (num_seeds absent: 1)."""
  n = config.get("num_seeds", 1)
  if not isinstance(n, int) or isinstance(n, bool) or n < 1:
    raise ValueError(f"--config.num_seeds={n!r}: must be an integer >= 1"
                     " (e.g. --config.num_seeds=3).")
  return [int(config.seed) + k for k in range(n)]


def seed_slice(tree: PyTree, k: int) -> PyTree:
  """Seed k's part of a pytree stacked over seeds (leading axis)."""
  return jax.tree.map(lambda x: x[k], tree)


def train_key(seed: int) -> jax.Array:
  """The dropout/mixup key of a run of `seed` (the second half of
  split(key(seed)); the first is unused: models come from nnx.Rngs)."""
  return jax.random.split(jax.random.key(seed))[1]


# ------------------------------------------------------------------ the loop
@dataclasses.dataclass
class FitResult:
  """One seed: weights of the selected model, best_step/best_value scalars
  (None when validation never beat 0: then weights are the last ones).
  N seeds (config.num_seeds > 1): every leaf of `weights` has a leading
  seed axis [N, ...] (seed k's own selection), best_step/best_value are
  lists of N (entries None as above) and `seeds` lists config.seed + k."""
  weights: dict            # {"params", "model_state"} of the selected model
  best_step: int | None | list
  best_value: float | None | list
  final_step: int
  seeds: list | None = None


@dataclasses.dataclass(frozen=True)
class SeedAxes:
  """Which inputs of an N-seed fit differ per seed (leading axis N).

  data_keys: keys of `train_data` stacked over seeds (e.g. stage 3's
  pseudo-label logits when there are N sets); the other keys are shared.
  loss_args: True when every leaf of `loss_args` is stacked over seeds.
  """
  data_keys: tuple = ()
  loss_args: bool = False


def _nonfinite_check(losses: np.ndarray, first_step: int) -> None:
  bad = np.flatnonzero(~np.isfinite(losses))
  if bad.size:
    a = first_step + int(bad[0])
    raise FloatingPointError(
        f"loss={losses[bad[0]]} between steps {a} and {a + 1}; lower the"
        " learning rate or run with --jax_debug_nans to find the source."
    )


def _log_rows(writer, metrics: dict, first_step: int, every: int, lr_fn):
  """Averages per-step metrics over windows ending at multiples of `every`.

  Metrics of an N-seed fit are [N, steps]: the usual keys hold the mean
  over seeds and steps, `seed_<k>/train/loss` each seed's loss.
  """
  loss = np.asarray(metrics["loss"])
  n = loss.shape[-1]
  start = 0
  for end in range(1, n + 1):
    step = first_step + end
    if step % every and end != n:
      continue
    row = {f"train/{k.removeprefix('loss/')}" if k.startswith("loss/")
           else f"train/{k}": float(np.mean(np.asarray(v)[..., start:end]))
           for k, v in metrics.items()}
    row["train/lr"] = float(lr_fn(step - 1))
    if loss.ndim == 2:
      for k, value in enumerate(np.mean(loss[:, start:end], axis=1)):
        row[f"seed_{k}/train/loss"] = float(value)
    writer.write(step, row)
    start = end


def write_config(workdir: str, config) -> None:
  """<workdir>/config.json on process 0 (workdir.write_config's format),
  after workdir.check_config: a run called without launch.py's claim (a
  notebook, a test) also never overwrites the config of another run."""
  if os.path.abspath(workdir) != os.path.abspath(config.workdir):
    raise ValueError(f"write_config({workdir!r}) of a config whose workdir"
                     f" is {config.workdir!r}.")
  workdir_lib.check_config(config)
  if jax.process_index() != 0:
    return
  workdir_lib.write_config(config)


def _optimizer_for(config, num_train: int, mesh):
  """(mesh, steps per epoch, tx, lr_fn) of a fit: the default mesh, the
  batch checked against it, the optimizer and its schedule."""
  mesh = mesh if mesh is not None else sharding_lib.make_mesh()
  sharding_lib.check_batch_size(config.batch_size, mesh=mesh)
  spe = pipeline.steps_per_epoch(num_train, config.batch_size)
  tx, lr_fn = make_optimizer(config.optim, spe, config.total_epochs)
  return mesh, spe, tx, lr_fn


def _open_run(config, make_model, tx):
  """(writer, checkpointer, graphdef, abstract TrainState) of a fit, after
  recording config.json."""
  writer = writer_lib.MetricWriter(
      config.workdir, tensorboard=config.get("tensorboard", False))
  write_config(config.workdir, config)
  ckpt = ckpt_lib.Checkpointer(config.workdir)
  graphdef, abstract = ts_lib.abstract_train_state(make_model, tx)
  return writer, ckpt, graphdef, abstract


def _progress(config, start_epoch: int, total_epochs: int):
  """The epochs still to run, as a tqdm bar on process 0 (config.progress)."""
  return tqdm.tqdm(range(start_epoch, total_epochs), desc=config.stage,
                   initial=start_epoch, total=total_epochs,
                   disable=not config.get("progress", True)
                   or jax.process_index() != 0)


def fit(
    config,
    *,
    make_model: Callable[[], nnx.Module],
    loss_fn: LossFn,
    make_batch: MakeBatch,
    train_data: PyTree,
    num_train: int,
    evaluate: Callable[[dict], dict] | None = None,
    best_metric: str | None = None,
    meta: dict | None = None,
    mesh=None,
    loss_args: PyTree = None,
    seed_axes: SeedAxes | None = None,
) -> FitResult:
  """Trains with resume; returns the best (or last) weights.

  config.num_seeds = N > 1 trains seeds config.seed + k, k < N, as one
  vmapped program (`_fit_seeds`; `seed_axes` says which of train_data and
  loss_args are stacked over seeds); N = 1 is the path below, unchanged.

  `loss_args` (a pytree of arrays, e.g. thresholds) reaches the jitted step
  as an argument and `loss_fn(model, batch, key, loss_args)`: new values
  never recompile.

  Checkpoints go to <workdir>/checkpoints every `checkpoint_every_epochs` and
  at the end; the best weights by `best_metric` (strict >, from 0) are kept
  on device and written to <workdir>/best at those same times, so a killed
  and re-run job ends exactly as an uninterrupted one.
  """
  seeds = seed_list(config)
  if len(seeds) > 1:
    return _fit_seeds(
        config, seeds, make_model=make_model, loss_fn=loss_fn,
        make_batch=make_batch, train_data=train_data, num_train=num_train,
        evaluate=evaluate, best_metric=best_metric, meta=meta, mesh=mesh,
        loss_args=loss_args, seed_axes=seed_axes or SeedAxes())
  mesh, spe, tx, lr_fn = _optimizer_for(config, num_train, mesh)
  repl = sharding_lib.replicated(mesh)
  batch_size = config.batch_size
  total_epochs = config.total_epochs
  root = jax.random.key(config.seed)
  init_key, train_key = jax.random.split(root)
  del init_key  # Models are built from config.seed through nnx.Rngs.

  writer, ckpt, graphdef, abstract = _open_run(config, make_model, tx)
  abstract = ckpt_lib.abstract_with_sharding(abstract, repl)
  n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract.params))
  logging.info("%s: %.2fM parameters, %d devices (%d processes), %d steps"
               " per epoch", config.stage, n_params / 1e6, jax.device_count(),
               jax.process_count(), spe)

  restored = ckpt.restore_latest(abstract)
  best_value, best_step, best_weights = None, None, None
  if restored is not None:
    state, saved_meta = restored
    start_epoch = int(saved_meta["epoch"])
    best_value = saved_meta.get("best_value")
    best_step = saved_meta.get("best_step")
    writer.truncate_after(int(state.step))
    if best_step is not None:
      best_weights = ckpt.restore_best(abstract, saved_meta)
    logging.info("resumed from step %d (epoch %d)", int(state.step),
                 start_epoch)
  else:
    start_epoch = 0
    writer.truncate_after(0)  # rows of a run killed before its checkpoint
    state = init_state(make_model, tx, config.seed, repl)

  data_dev = sharding_lib.put_replicated(train_data, mesh)
  consts = sharding_lib.put_replicated(step_consts(train_key, loss_args), mesh)
  epoch_fn = cached_epoch_fn(
      graphdef, tx, _optimizer_key(config.optim, spe, total_epochs), loss_fn,
      make_batch, mesh)
  eval_every = config.get("eval_every_epochs", 1)
  ckpt_every = config.get("checkpoint_every_epochs", 10)
  base_meta = dict(meta or {}, stage=config.stage,
                   steps_per_epoch=spe, total_epochs=total_epochs)

  bar = _progress(config, start_epoch, total_epochs)
  t0 = time.perf_counter()
  for epoch in bar:
    first_step = int(state.step)
    idx, mask = pipeline.index_batches(
        pipeline.epoch_order(config.seed, epoch, num_train), batch_size)
    state, metrics = epoch_fn(state, data_dev, consts, idx, mask)
    metrics = jax.device_get(metrics)
    _nonfinite_check(np.asarray(metrics["loss"]), first_step)
    _log_rows(writer, metrics, first_step, config.log_every_steps, lr_fn)
    step = first_step + len(idx)
    postfix = {"loss": f"{float(np.mean(metrics['loss'])):.4f}"}
    last = epoch + 1 == total_epochs
    if evaluate is not None and ((epoch + 1) % eval_every == 0 or last):
      weights = dict(params=state.params, model_state=state.model_state)
      results = evaluate(weights)
      writer.write(step, {**results, "epoch": epoch + 1})
      if best_metric is not None:
        if best_metric not in results:
          raise KeyError(f"best_metric {best_metric!r} not in evaluation "
                         f"results {sorted(results)}")
        value = float(results[best_metric])
        postfix[best_metric] = f"{value:.4f}"
        if value > (best_value if best_value is not None else 0.0):
          best_value, best_step = value, step
          best_weights = jax.tree.map(jnp.copy, weights)
    bar.set_postfix(postfix)
    if (epoch + 1) % ckpt_every == 0 or last:
      epoch_meta = dict(base_meta, epoch=epoch + 1, step=step,
                        best_value=best_value, best_step=best_step)
      if best_weights is not None:
        ckpt.save_best(best_step, best_weights, epoch_meta)
      ckpt.save(step, state, epoch_meta)
  ckpt.wait()
  ckpt.close()
  writer.close()
  logging.info("%s: %d epochs in %.1f s", config.stage,
               total_epochs - start_epoch, time.perf_counter() - t0)
  final = dict(params=state.params, model_state=state.model_state)
  if best_weights is None:
    best_weights = final
  return FitResult(weights=best_weights, best_step=best_step,
                   best_value=best_value, final_step=int(state.step))


def _nonfinite_check_seeds(losses_NxS: np.ndarray, first_step: int,
                           seeds) -> None:
  for k, seed in enumerate(seeds):
    try:
      _nonfinite_check(losses_NxS[k], first_step)
    except FloatingPointError as e:
      raise FloatingPointError(f"seed {seed} (k={k}): {e}") from None


def _evaluate_seeds(evaluate, weights_N, num_seeds: int) -> tuple[dict, list]:
  """(row, per-seed results): `evaluate` on each seed's slice of the
  stacked weights; the row holds the mean of each key over seeds and
  `seed_<k>/<key>` each seed's value."""
  per_seed = [evaluate(seed_slice(weights_N, k)) for k in range(num_seeds)]
  row = {key: float(np.mean([float(r[key]) for r in per_seed]))
         for key in per_seed[0]}
  for k, r in enumerate(per_seed):
    row.update({f"seed_{k}/{key}": float(v) for key, v in r.items()})
  return row, per_seed


def _fit_seeds(config, seeds, *, make_model, loss_fn, make_batch, train_data,
               num_train, evaluate, best_metric, meta, mesh, loss_args,
               seed_axes: SeedAxes) -> FitResult:
  """fit() for N seeds in one program: state, keys, data order (and the
  inputs named by `seed_axes`) carry a leading seed axis; seed k computes
  what fit() with config.seed + k computes. Model selection is per seed;
  best/ keeps the N selected models stacked (a slot whose seed never
  improved is unused: that seed's selection is its last weights)."""
  n = len(seeds)
  mesh, spe, tx, lr_fn = _optimizer_for(config, num_train, mesh)
  repl = sharding_lib.replicated(mesh)
  batch_size = config.batch_size
  total_epochs = config.total_epochs
  missing = sorted(set(seed_axes.data_keys) - set(train_data))
  if missing:
    raise KeyError(f"seed_axes.data_keys {missing} are not in train_data"
                   f" {sorted(train_data)}.")
  for key in seed_axes.data_keys:
    if len(train_data[key]) != n:
      raise ValueError(f"train_data[{key!r}] has {len(train_data[key])} rows"
                       f" on its seed axis; expected num_seeds={n}.")
  if seed_axes.loss_args:
    for x in jax.tree.leaves(loss_args):
      if np.shape(x)[:1] != (n,):
        raise ValueError(f"loss_args leaf of shape {np.shape(x)}: with"
                         f" seed_axes.loss_args every leaf is [{n}, ...].")

  writer, ckpt, graphdef, abstract = _open_run(config, make_model, tx)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct((n,) + x.shape, x.dtype, sharding=repl),
      abstract)
  n_params = sum(math.prod(x.shape[1:])
                 for x in jax.tree.leaves(abstract.params))
  logging.info("%s: %d seeds %s, %.2fM parameters each, %d devices (%d"
               " processes), %d steps per epoch", config.stage, n, seeds,
               n_params / 1e6, jax.device_count(), jax.process_count(), spe)

  newest = ckpt.latest.latest_step()
  if newest is not None:  # before restoring: a one-seed checkpoint of an
    # older config.json (no num_seeds) must not be taken for a broken one
    try:
      saved_seeds = ckpt_lib.read_meta(ckpt.latest.directory, newest).get(
          "seeds")
    except ckpt_lib.CheckpointError:  # unreadable: restore_latest decides
      saved_seeds = seeds
    if saved_seeds != seeds:
      raise ckpt_lib.CheckpointError(
          f"{ckpt.latest.directory}/{newest} holds the run of seed(s)"
          f" {saved_seeds or [config.seed]}; this run trains seeds {seeds}"
          " (config.num_seeds). Use a new --config.workdir.")
  restored = ckpt.restore_latest(abstract)
  best_value, best_step = [None] * n, [None] * n
  best_weights = None
  if restored is not None:
    state, saved_meta = restored
    start_epoch = int(saved_meta["epoch"])
    best_value = list(saved_meta["best_value"])
    best_step = list(saved_meta["best_step"])
    writer.truncate_after(int(state.step[0]))
    if any(b is not None for b in best_step):
      best_weights = ckpt.restore_best(abstract, saved_meta)
    logging.info("resumed from step %d (epoch %d)", int(state.step[0]),
                 start_epoch)
  else:
    start_epoch = 0
    writer.truncate_after(0)
    state = init_states(make_model, tx, seeds, repl)

  data_dev = sharding_lib.put_replicated(train_data, mesh)
  keys = jnp.stack([jax.random.key_data(train_key(s)) for s in seeds])
  consts = sharding_lib.put_replicated(
      step_consts(jax.random.wrap_key_data(keys), loss_args), mesh)
  data_axes = {k: 0 if k in seed_axes.data_keys else None
               for k in train_data}
  consts_axes = {"key": 0, "loss": 0 if seed_axes.loss_args else None}
  epoch_fn = cached_epoch_fn(
      graphdef, tx, _optimizer_key(config.optim, spe, total_epochs), loss_fn,
      make_batch, mesh, seed_axes=(data_axes, consts_axes,
                                   config.get("seed_mode", "vmap")))
  eval_every = config.get("eval_every_epochs", 1)
  ckpt_every = config.get("checkpoint_every_epochs", 10)
  base_meta = dict(meta or {}, stage=config.stage, steps_per_epoch=spe,
                   total_epochs=total_epochs, num_seeds=n, seeds=seeds)

  bar = _progress(config, start_epoch, total_epochs)
  t0 = time.perf_counter()
  for epoch in bar:
    first_step = int(state.step[0])
    batches = [pipeline.index_batches(
        pipeline.epoch_order(s, epoch, num_train), batch_size) for s in seeds]
    idx = np.stack([b[0] for b in batches])
    mask = np.stack([b[1] for b in batches])
    state, metrics = epoch_fn(state, data_dev, consts, idx, mask)
    metrics = jax.device_get(metrics)
    _nonfinite_check_seeds(np.asarray(metrics["loss"]), first_step, seeds)
    _log_rows(writer, metrics, first_step, config.log_every_steps, lr_fn)
    step = first_step + idx.shape[1]
    postfix = {"loss": f"{float(np.mean(metrics['loss'])):.4f}"}
    last = epoch + 1 == total_epochs
    if evaluate is not None and ((epoch + 1) % eval_every == 0 or last):
      weights = dict(params=state.params, model_state=state.model_state)
      row, per_seed = _evaluate_seeds(evaluate, weights, n)
      writer.write(step, {**row, "epoch": epoch + 1})
      if best_metric is not None:
        if best_metric not in per_seed[0]:
          raise KeyError(f"best_metric {best_metric!r} not in evaluation "
                         f"results {sorted(per_seed[0])}")
        postfix[best_metric] = f"{row[best_metric]:.4f}"
        for k, results in enumerate(per_seed):
          value = float(results[best_metric])
          if value > (best_value[k] if best_value[k] is not None else 0.0):
            best_value[k], best_step[k] = value, step
            if best_weights is None:
              best_weights = jax.tree.map(jnp.copy, weights)
            else:
              best_weights = jax.tree.map(
                  lambda b, w, k=k: b.at[k].set(w[k]), best_weights, weights)
    bar.set_postfix(postfix)
    if (epoch + 1) % ckpt_every == 0 or last:
      epoch_meta = dict(base_meta, epoch=epoch + 1, step=step,
                        best_value=best_value, best_step=best_step)
      if best_weights is not None:
        # best/<step of the newest improvement of any seed>.
        ckpt.save_best(max(b for b in best_step if b is not None),
                       best_weights, epoch_meta)
      ckpt.save(step, state, epoch_meta)
  ckpt.wait()
  ckpt.close()
  writer.close()
  logging.info("%s: %d epochs of %d seeds in %.1f s", config.stage,
               total_epochs - start_epoch, n, time.perf_counter() - t0)
  final = dict(params=state.params, model_state=state.model_state)
  if best_weights is None:
    selected = final
  else:  # seeds that never improved keep their last weights
    improved = jnp.asarray([b is not None for b in best_step])
    selected = jax.tree.map(
        lambda b, f: jnp.where(
            improved.reshape((n,) + (1,) * (b.ndim - 1)), b, f),
        best_weights, final)
  return FitResult(weights=selected, best_step=best_step,
                   best_value=best_value, final_step=int(state.step[0]),
                   seeds=seeds)


def merge(graphdef, weights: dict) -> nnx.Module:
  """The model of `weights` ({"params", "model_state"}) and its graphdef."""
  return nnx.merge(graphdef, weights["params"], weights["model_state"])
