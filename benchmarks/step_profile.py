r"""Where a train step's time goes: jitted pieces timed one by one.

  python benchmarks/step_profile.py --model=han        # stage 3, batch 64
  python benchmarks/step_profile.py --model=ear --reps=5
  python benchmarks/step_profile.py --model=generator --batch=8

Pieces (each its own jitted function, median of `--reps` calls after a
warm-up): the whole step as the trainer scans it; the forward pass with the
loss (dropout on); forward + backward (value_and_grad), with and without
dropout (the difference is the PRNG and masking cost); the optimizer update
alone; and one attention block forward + backward at the model's shapes.
Prints one JSON line.

  python benchmarks/step_profile.py --model=ear --ops   # + per-op breakdown

`--ops` also traces two forward + backward calls with XLA's per-thunk
trace events (jax.profiler; XLA_FLAGS gets
--xla_cpu_enable_xprof_traceme=true) and adds "ops": thread-milliseconds
per call of each kind of XLA op (ynn_fusion = matmuls, dot = batched
matmuls, copy/transpose fusions = layout changes, ...), summed over the
threads, and the fraction of the call with 0, 1 and 2+ ops running. That
is how the dropout-mask recomputation and the ERM transposes were found.
"""
# pylint: disable=invalid-name

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time

if "--ops" in sys.argv:  # read when the CPU client starts: set it first
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_enable_xprof_traceme=true")

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import peer_bench  # benchmarks/ is on sys.path when run as a script
from ear_jax import generator_lib
from ear_jax import losses as losses_lib
from ear_jax import parser_lib
from ear_jax import train_state as ts_lib
from ear_jax import trainer as trainer_lib
from ear_jax.models import layers as layers_lib


def _time(fn, reps):
  jax.block_until_ready(fn())
  out = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    out.append(time.perf_counter() - t0)
  return round(statistics.median(out), 4)


def op_breakdown(fn, calls: int = 2) -> dict:
  """Thread-ms per call of each XLA op kind while running `fn` (traced)."""
  jax.block_until_ready(fn())
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d)
    for _ in range(calls):
      jax.block_until_ready(fn())
    jax.profiler.stop_trace()
    path = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)[0]
    data = jax.profiler.ProfileData.from_file(path)
    events = []
    for plane in data.planes:
      for line in plane.lines:
        if "XLA" not in line.name:  # XLA's executor and intra-op threads
          continue
        for ev in line.events:
          if (ev.name.startswith(("Thunk", "end:", "Slinky", "Threadpool"))
              or ev.duration_ns <= 0):
            continue
          events.append((ev.start_ns, ev.duration_ns, ev.name))
  if not events:
    return {"error": "no XLA op events in the trace (CPU backend only)"}
  per_kind = collections.Counter()
  for _, dur, name in events:
    per_kind[re.sub(r"(\.\d+)*(\.clone)?$", "", name)] += dur
  t0 = min(s for s, _, _ in events)
  t1 = max(s + d for s, d, _ in events)
  bins = [0] * (int((t1 - t0) // 100_000) + 1)  # 0.1 ms bins
  for start, dur, _ in events:
    for b in range(int((start - t0) // 100_000),
                   int((start + dur - t0) // 100_000)):
      bins[b] += 1
  n = len(bins)
  return dict(
      thread_ms_per_call={k: round(v / calls / 1e6, 1)
                          for k, v in per_kind.most_common(15)},
      busy_fraction={"0": round(bins.count(0) / n, 3),
                     "1": round(bins.count(1) / n, 3),
                     "2+": round(sum(b >= 2 for b in bins) / n, 3)})


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="han", help="han | ear | generator")
  p.add_argument("--batch", type=int, default=None)
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--tiny", action="store_true")
  p.add_argument("--ops", action="store_true",
                 help="add the per-op-kind breakdown of forward + backward")
  args = p.parse_args()
  rng = np.random.default_rng(0)
  if args.model == "generator":
    batch = args.batch or 8
    d1 = peer_bench.stage1_data(rng, 2 * batch, 60, 512, 768)
    runner = peer_bench.jax_generator("ear", d1, batch, 2, args.tiny,
                                      args.dtype)
    config = peer_bench.stage1_config.get_config(
        "tiny" if args.tiny else None)
    config.model.dtype = args.dtype
    data = {k: d1[k] for k in ("clip", "clap", "y_av", "valid")}
    make_batch = generator_lib.make_batch
    text = generator_lib.loss_args(d1["text_a"], d1["text_v"])
    loss_cfg = generator_lib.generator_loss_config(config)

    def loss_fn(model, b, key, deterministic=False):
      out = model(b, text["a"], text["v"], deterministic=deterministic,
                  rngs=nnx.Rngs(dropout=key))
      return losses_lib.generator_loss(
          out, b, generator_lib.migrated_targets(b, config.migration),
          loss_cfg)

    make_model = generator_lib.model_factory(config)
    attn_shape = (batch, 60, config.model.hidden_dim, config.model.num_heads)
  else:
    batch = args.batch or 64
    cfg3 = peer_bench.TINY_HAN if args.tiny else peer_bench.UWAV_HAN
    d3 = peer_bench.stage3_data(rng, 2 * batch, cfg3["input_a_dim"],
                                cfg3["input_v_2d_dim"],
                                cfg3["input_v_3d_dim"])
    runner = peer_bench.jax_parser(args.model, d3, batch, 2, args.tiny,
                                   args.dtype)
    config = peer_bench.parser_config(args.model, args.tiny, args.dtype)
    data = dict(audio=d3["audio"], visual=np.concatenate(
        [d3["visual_2d"], d3["visual_3d"]], -1), weak=d3["weak"],
                a_logit=d3["a_logit"], v_logit=d3["v_logit"])
    make_batch = peer_bench.evaluator_lib.gather
    stats = parser_lib.loss_args(d3["thresholds_a"], d3["thresholds_v"],
                                 d3["freq_a"], d3["freq_v"])

    def loss_fn(model, b, key, deterministic=False):
      k_drop, k_loss = jax.random.split(key)
      out = model(b, deterministic=deterministic,
                  rngs=nnx.Rngs(dropout=k_drop))
      return losses_lib.parser_loss(
          out, b, classify=model.classify, key=k_loss, cfg=config.loss,
          **{k: jnp.asarray(v) for k, v in stats.items()})

    make_model = peer_bench._parser_factory(config, data)  # pylint: disable=protected-access
    attn_shape = (batch, 10, config.model.hidden_dim, config.model.num_heads)

  res = dict(bench="step_profile", model=args.model, batch=batch,
             dtype=args.dtype, compile_s=round(runner.compile_s, 2))
  res["step_scanned_s"] = round(statistics.median(
      [runner() for _ in range(args.reps)]), 4)

  tx, _ = trainer_lib.make_optimizer(config.optim, 157, 80)
  graphdef, state = ts_lib.create_train_state(make_model, tx)
  idx = jnp.arange(batch, dtype=jnp.int32) % len(next(iter(data.values())))
  b = make_batch(jax.device_put(data), idx, jnp.ones((batch,), jnp.float32))
  key = jax.random.key(0)

  def objective(params, deterministic):
    model = nnx.merge(graphdef, params, jax.tree.map(lambda x: x,
                                                     state.model_state))
    return loss_fn(model, b, key, deterministic)[0]

  fwd = jax.jit(lambda p: objective(p, False))
  grad = jax.jit(jax.value_and_grad(lambda p: objective(p, False)))
  grad_nodrop = jax.jit(jax.value_and_grad(lambda p: objective(p, True)))
  res["forward_s"] = _time(lambda: fwd(state.params), args.reps)
  res["fwd_bwd_s"] = _time(lambda: grad(state.params), args.reps)
  res["fwd_bwd_no_dropout_s"] = _time(lambda: grad_nodrop(state.params),
                                      args.reps)
  if args.ops:
    res["ops"] = op_breakdown(lambda: grad(state.params))
  _, g = grad(state.params)

  @jax.jit
  def update(params, opt_state, g):
    u, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, u), opt_state

  res["optimizer_s"] = _time(lambda: update(state.params, state.opt_state, g),
                             args.reps)

  B, T, D, H = attn_shape
  mha = layers_lib.MultiHeadAttention(D, H, dtype=args.dtype,
                                      rngs=nnx.Rngs(0))
  mg, mp = nnx.split(mha)
  x = jnp.asarray(rng.standard_normal((B, T, D), np.float32))

  @jax.jit
  def attn(mp, x):
    def f(mp, x):
      return jnp.sum(nnx.merge(mg, mp)(x, x, deterministic=True) ** 2)
    return jax.value_and_grad(f, argnums=(0, 1))(mp, x)

  res["attention_block_fwd_bwd_s"] = _time(lambda: attn(mp, x), args.reps)
  print(json.dumps(res))


if __name__ == "__main__":
  main()
