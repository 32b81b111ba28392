r"""Stage-1 train-step speed at the paper's full size; prints one JSON line.

  python benchmarks/stage1_bench.py                 # full size (B=64, T=60)
  python benchmarks/stage1_bench.py --steps=3 --tiny

Random features stand in for UnAV (speed does not depend on values). The
step is the real one: generator forward, label migration, EAR loss, AdamW,
scanned over `--steps` steps in one jitted call, as the trainer runs it.
Full-run estimate: 102 steps/epoch (6,489 train videos) x 80 epochs, plus
one batched validation pass (2,134 videos) per epoch.
"""

import argparse
import json
import time

import jax
import numpy as np

from ear_jax.configs import stage1 as stage1_config
from ear_jax import generator_lib
from ear_jax import sharding as sharding_lib
from ear_jax import train_state as ts_lib
from ear_jax import trainer as trainer_lib


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=4)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--t", type=int, default=60)
  ap.add_argument("--videos", type=int, default=256)
  ap.add_argument("--tiny", action="store_true")
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--precision", default="default")
  args = ap.parse_args()
  jax.config.update("jax_default_matmul_precision", args.precision)
  config = stage1_config.get_config("tiny" if args.tiny else None)
  config.model.dtype = args.dtype
  rng = np.random.default_rng(0)
  n, t, c = args.videos, args.t, 100

  def unit(*shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)

  data = dict(clip=unit(n, t, 768), clap=unit(n, t, 512),
              y_av=(rng.random((n, t, c)) < 0.03).astype(np.uint8),
              valid=np.ones((n, t), np.uint8))
  text_a, text_v = unit(c, 512), unit(c, 768)

  make_model = generator_lib.model_factory(config)
  loss_fn = generator_lib.make_loss_fn(config)

  mesh = sharding_lib.make_mesh()
  tx, _ = trainer_lib.make_optimizer(config.optim, 102, 80)
  graphdef, state = ts_lib.create_train_state(make_model, tx)
  data_dev = sharding_lib.put_replicated(data, mesh)
  step = trainer_lib.make_train_step(graphdef, tx, loss_fn,
                                     generator_lib.make_batch, mesh)
  epoch_fn = trainer_lib.make_epoch_fn(step)
  consts = trainer_lib.step_consts(jax.random.key(0),
                                  generator_lib.loss_args(text_a, text_v))
  idx = rng.integers(0, n, (args.steps, args.batch)).astype(np.int32)
  mask = np.ones((args.steps, args.batch), np.float32)

  t0 = time.perf_counter()
  state, m = epoch_fn(state, data_dev, consts, idx, mask)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  state, m = epoch_fn(state, data_dev, consts, idx, mask)
  jax.block_until_ready(m)
  dt = (time.perf_counter() - t0) / args.steps
  est = dt * 102 * 80
  print(json.dumps(dict(
      bench="stage1_train_step", device=jax.devices()[0].device_kind,
      devices=jax.device_count(), batch=args.batch, segments=t,
      hidden=config.model.hidden_dim, layers=config.model.num_layers,
      dtype=args.dtype, precision=args.precision,
      ms_per_step=round(dt * 1e3, 2), steps_per_s=round(1 / dt, 2),
      videos_per_s=round(args.batch / dt, 1),
      first_call_s_incl_compile=round(compile_s, 1),
      est_80_epochs_train_s=round(est, 1),
      loss=float(np.asarray(m["loss"])[-1]))))


if __name__ == "__main__":
  main()
