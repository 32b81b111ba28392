r"""Stage-3 train-step time and a full-run estimate at the paper size.

  python benchmarks/stage3_bench.py                 # ear and han, 1 device
  python benchmarks/stage3_bench.py --steps=1 --models=han   # quick, CPU

Random features (VGGish + ResNet-152 + R(2+1)D sizes), batch 64, T = 10,
d = 512, the configs/stage3.py model; timed as trainer.fit runs it (one
jitted scan per epoch). The estimate is 80 x (157 steps + validation on 649
videos) plus compilation. Prints one JSON line.
"""
# pylint: disable=invalid-name

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from ear_jax.configs import stage3 as stage3_config
from ear_jax import evaluator as evaluator_lib
from ear_jax import parser_lib
from ear_jax import sharding as sharding_lib
from ear_jax import train_state as ts_lib
from ear_jax import trainer as trainer_lib
from ear_jax.data import llp_features
from ear_jax.data import pipeline

C, T = 25, 10
PAPER = dict(num_train=10000, num_val=649, epochs=80)


def _random_split(rng, n, dim_a, dim_v):
  return dict(
      audio=rng.standard_normal((n, T, dim_a), np.float32),
      visual=rng.standard_normal((n, T, dim_v), np.float32),
      weak=(rng.random((n, C)) < 0.08).astype(np.float32),
      a_logit=rng.standard_normal((n, T, C), np.float32),
      v_logit=rng.standard_normal((n, T, C), np.float32),
  )


def _block(tree):
  return jax.tree.map(lambda x: x.block_until_ready(), tree)


def bench_model(name: str, steps: int, batch_size: int, eval_batch: int):
  config = stage3_config.get_config()
  config.model.name = name
  config.batch_size = batch_size
  mesh = sharding_lib.make_mesh()
  rng = np.random.default_rng(0)
  dim_a, dim_v = llp_features.parser_input_dims(config.data.features)
  spe = pipeline.steps_per_epoch(PAPER["num_train"], batch_size)
  # Only `steps` batches live on device; their values do not change timing.
  train = _random_split(rng, steps * batch_size, dim_a, dim_v)
  th = np.where(rng.random(C) < 0.1, -np.inf, rng.standard_normal(C))
  freq = rng.random(C).astype(np.float32) * 0.1
  loss_fn = parser_lib.make_loss_fn(config)
  consts = trainer_lib.step_consts(
      jax.random.key(0), parser_lib.loss_args(th, th, freq, freq))
  make_model = parser_lib.model_factory(config)

  tx, _ = trainer_lib.make_optimizer(config.optim, spe, PAPER["epochs"])
  repl = sharding_lib.replicated(mesh)
  graphdef, state = ts_lib.create_train_state(make_model, tx)
  state = jax.device_put(state, repl)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  step_fn = trainer_lib.make_train_step(
      graphdef, tx, loss_fn, evaluator_lib.gather, mesh)
  epoch_fn = trainer_lib.make_epoch_fn(step_fn)
  data = sharding_lib.put_replicated(train, mesh)
  idx, mask = pipeline.index_batches(np.arange(steps * batch_size), batch_size)

  t0 = time.perf_counter()
  # Compile + run.
  state, metrics = _block(epoch_fn(state, data, consts, idx, mask))
  first_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  state, metrics = _block(epoch_fn(state, data, consts, idx, mask))
  step_s = (time.perf_counter() - t0) / steps
  loss = float(np.mean(jax.device_get(metrics["loss"])))

  val = {k: v for k, v in _random_split(rng, PAPER["num_val"], dim_a,
                                        dim_v).items()
         if k in ("audio", "visual")}
  predictor = parser_lib.make_predictor(graphdef, val, eval_batch)
  weights = dict(params=state.params, model_state=state.model_state)
  t0 = time.perf_counter()
  predictor(weights)
  val_first_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  predictor(weights)
  val_s = time.perf_counter() - t0
  compile_s = max(first_s - steps * step_s, 0.0) + max(val_first_s - val_s, 0)
  epoch_s = spe * step_s + val_s
  return dict(
      params_m=round(n_params / 1e6, 3), ms_per_step=round(1e3 * step_s, 2),
      val_s=round(val_s, 3), compile_s=round(compile_s, 1),
      epoch_s=round(epoch_s, 2),
      full_run_estimate_s=round(compile_s + PAPER["epochs"] * epoch_s, 1),
      timed_steps=steps, loss=round(loss, 4))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="ear,han")
  p.add_argument("--steps", type=int, default=None,
                 help="timed steps (default: 2 on CPU, 50 on accelerators)")
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--eval_batch_size", type=int, default=256)
  args = p.parse_args()
  steps = args.steps or (2 if jax.default_backend() == "cpu" else 50)
  out = dict(bench="stage3_train_parser", backend=jax.default_backend(),
             device=jax.devices()[0].device_kind,
             num_devices=jax.device_count(), batch_size=args.batch_size,
             steps_per_epoch=pipeline.steps_per_epoch(PAPER["num_train"],
                                                      args.batch_size),
             epochs=PAPER["epochs"], num_val=PAPER["num_val"], models={})
  for name in args.models.split(","):
    out["models"][name] = bench_model(name, steps, args.batch_size,
                                      args.eval_batch_size)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
