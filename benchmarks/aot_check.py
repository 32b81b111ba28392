r"""Compiles ear-jax's programs for a GPU or TPU ahead of time, on a CPU host.

  pip install -e ".[aot]"        # libtpu: the TPU compiler (TPU targets)
  pip install "jax[cuda12]==$(python -c 'import jax; print(jax.__version__)')"
  python benchmarks/aot_check.py --target=v5e:2x2 --out=aot_v5e.json
  python benchmarks/aot_check.py --target=h100 --out=aot_h100.json
  python benchmarks/aot_check.py --target=h100 --programs=han_train \
      --dtypes=float32 --host_cost   # flops counted on the host CPU

No accelerator is needed: the target's compiler (libtpu, or the CUDA plugin
with a GPU description from benchmarks/gpu_targets/) runs on this host and
compiles for compile-only devices of the target's topology. Each program is
the one a run executes, built by the recipes a run uses (trainer's scanned
epoch over make_train_step, evaluator.predict_program), lowered with
ShapeDtypeStruct arguments (no data) on a data-parallel mesh of those
devices: parameters and the device-resident dataset replicated, batches
split over the devices.

Programs (PROGRAMS, a registry: add a builder to add a row), each in
float32 (matmul precision "default": TF32 on GPUs, one bfloat16 pass on
TPUs, the configs' default) and bfloat16 (model.dtype):
  generator_ear_train   stage-1 epoch, UnAV-100 train set (6,489 x T 60)
  generator_uwav_train  the same with the UWAV computation (Table IV "UWAV")
  ear_train, han_train  stage-3 epoch, LLP train set (10,000 x T 10)
  ear_predict, han_predict  the stage-3 predictor over LLP test (1,200)
  *_seeds4_train        the generator, EAR and HAN epochs with
                        config.num_seeds=4 (one vmapped program)
`--size=tiny` compiles the :tiny configs on small sets instead.

J = {"rows": [...]}: per program target, program, dtype, ok, error,
compile_s, per-device memory in GB (arguments, temporaries, outputs, the
total live at once = arguments + outputs + temporaries - donated aliases)
beside the device's memory, `conditional` ops in the compiled program, and
XLA's flop and byte counts where the backend gives them (the scanned loop's
body counted once: per step, or per batch for predictors; XLA:GPU without
a device gives none, `--host_cost` then counts the same program compiled
for the host CPU) with the step-time lower bound they imply against the
device's published peaks (an estimate). Train rows also estimate the
largest batch and number of seeds (vmapped over one copy of the dataset)
that fit one device. A table is printed too. A program whose total exceeds
the device's memory is not ok; exit status 1 if any row is not ok.
"""
# pylint: disable=g-import-not-at-top,invalid-name

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import sys
import time
import traceback
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SPECS = os.path.join(HERE, "gpu_targets")
GB = 1e9
GIB = 2.0**30


@dataclasses.dataclass(frozen=True)
class Target:
  """A compile target: topology and the device's published figures."""
  name: str
  platform: str            # "tpu" | "cuda"
  topology: str            # jax.experimental.topologies name
  hosts: int
  memory_bytes: float      # per device
  peak_tflops: dict        # {"float32": matmul "default", "bfloat16": ...}
  hbm_gbps: float          # memory bandwidth, GB/s
  spec: str | None = None  # GPU: GpuTargetConfig text in gpu_targets/
  gpu_topology: str | None = None  # GPU: slices x hosts x devices per host
  source: str = ""


# Published per-chip figures (dense): NVIDIA H100 SXM datasheet (TF32 495,
# BF16 989 TFLOP/s, 3.35 TB/s; memory from the XLA description); Google
# Cloud TPU system architecture pages (v5e 197 TFLOP/s bf16, 16 GiB, 819
# GB/s; v4 275, 32 GiB, 1,200 GB/s; v5p 459, 95 GiB, 2,765 GB/s). TPUs run
# a float32 matmul at precision "default" as one bfloat16 pass.
_H100 = dict(platform="cuda", topology="h100", hosts=1,
             memory_bytes=84942979072.0,
             peak_tflops={"float32": 494.7, "bfloat16": 989.4},
             hbm_gbps=3352.0, spec="h100_sxm.txtpb",
             source="NVIDIA H100 SXM datasheet; XLA h100_sxm.txtpb")
_V5E = dict(platform="tpu", memory_bytes=16 * GIB,
            peak_tflops={"float32": 197.0, "bfloat16": 197.0}, hbm_gbps=819.0,
            source="Cloud TPU v5e system architecture")
TARGETS = {
    "h100": Target("h100", gpu_topology="1x1x1", **_H100),
    "h100x8": Target("h100x8", gpu_topology="1x1x8", **_H100),
    "v5e:2x2": Target("v5e:2x2", topology="v5e:2x2", hosts=1, **_V5E),
    "v5e:4x4": Target("v5e:4x4", topology="v5e:4x4", hosts=4, **_V5E),
    "v4:2x2x1": Target(
        "v4:2x2x1", platform="tpu", topology="v4:2x2x1", hosts=1,
        memory_bytes=32 * GIB,
        peak_tflops={"float32": 275.0, "bfloat16": 275.0}, hbm_gbps=1200.0,
        source="Cloud TPU v4 system architecture"),
    "v5p:2x2x1": Target(
        "v5p:2x2x1", platform="tpu", topology="v5p:2x2x1", hosts=1,
        memory_bytes=95 * GIB,
        peak_tflops={"float32": 459.0, "bfloat16": 459.0}, hbm_gbps=2765.0,
        source="Cloud TPU v5p system architecture"),
}
DTYPES = ("float32", "bfloat16")
# Paper sizes: UnAV-100 train (stage 1), LLP train and test (stage 3).
PAPER = dict(unav_train=6489, unav_T=60, llp_train=10000, llp_test=1200)
TINY = dict(unav_train=48, unav_T=12, llp_train=48, llp_test=40)
# The XLA:GPU flag the tool sets when a GPU compile fails to tile a GEMM
# (docs/PERFORMANCE.md, "Ahead-of-time compilation"): without a device XLA
# cannot autotune, and its default Triton tiling finds no tile for the
# attention output projection of narrow models whose T is not a multiple
# of 16 (the :tiny and :small configs, e.g. dot f32[80,32] at B 8, T 10,
# d 32); cuBLAS compiles those dots. The row records the flag.
TILE_ERROR = "Couldn't find output tile sizes"
GPU_TILE_FLAGS = {"xla_gpu_enable_triton_gemm": False}


class AotError(Exception):
  """A missing piece (compiler, target, program) named in one line."""


# ------------------------------------------------------------------ devices
def _setup_env():
  # Compile here, never run: keep JAX on the host CPU whatever is installed.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
  for p in (REPO, HERE):
    if p not in sys.path:
      sys.path.insert(0, p)


def _jax_version() -> str:
  import jax
  return jax.__version__


def get_target(name: str) -> Target:
  if name not in TARGETS:
    raise AotError(f"--target={name!r} is not a known target; use one of"
                   f" {sorted(TARGETS)} (or add it to TARGETS in"
                   " benchmarks/aot_check.py).")
  return TARGETS[name]


def target_devices(target: Target) -> list:
  """The compile-only devices of `target`; AotError names what is missing."""
  from jax.experimental import topologies
  if target.platform == "tpu":
    if importlib.util.find_spec("libtpu") is None:
      raise AotError(
          f"--target={target.name}: no libtpu (the TPU compiler); install it"
          f" with pip install -e \".[aot]\" or pip install"
          f" \"jax[tpu]=={_jax_version()}\".")
    # Compile-only: no TPU to guard, so several processes (pytest workers,
    # a benchmark beside them) may load libtpu at once; no metadata server.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    return list(topologies.get_topology_desc(target.topology, "tpu").devices)
  if (importlib.util.find_spec("jax_cuda12_plugin") is None
      and importlib.util.find_spec("jax_cuda13_plugin") is None):
    raise AotError(
        f"--target={target.name}: no CUDA plugin (the GPU compiler); install"
        f" it with pip install \"jax[cuda12]=={_jax_version()}\" (~6 GB).")
  path = os.path.join(SPECS, target.spec)
  if not os.path.exists(path):
    raise AotError(f"--target={target.name}: GPU description {path} is"
                   " missing; restore it from the repository.")
  with open(path) as f:
    spec = f.read()
  return list(topologies.get_topology_desc(
      target.topology, "cuda", target_config=spec,
      topology=target.gpu_topology).devices)


# ----------------------------------------------------------------- programs
@dataclasses.dataclass
class Program:
  """A jitted function and its abstract arguments, ready to lower."""
  fn: Callable
  args: tuple
  kwargs: dict
  batch: int
  data_bytes: float  # global bytes of the device-resident dataset
  train: bool
  num_seeds: int = 1  # seeds trained together (config.num_seeds)


def _sds(shape, dtype, sharding):
  import jax
  return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


def _abstract(tree, sharding):
  import jax
  return jax.tree.map(lambda x: _sds(x.shape, x.dtype, sharding), tree)


def _nbytes(tree) -> float:
  import jax
  import numpy as np
  return float(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree)))


def _train_program(config, make_model, loss_fn, loss_args, make_batch,
                   data_shapes: dict, num_train: int, mesh,
                   num_seeds: int = 1) -> Program:
  """trainer.fit's epoch program at `config.batch_size`, abstract; with
  num_seeds > 1 the N-seed program of config.num_seeds (seed_mode vmap:
  stacked state, keys and batch order, the dataset and loss_args shared)."""
  import jax
  import jax.numpy as jnp
  from ear_jax import sharding as sharding_lib
  from ear_jax import train_state as ts_lib
  from ear_jax import trainer as trainer_lib
  from ear_jax.data import pipeline
  batch = config.batch_size
  sharding_lib.check_batch_size(batch, mesh=mesh)
  spe = pipeline.steps_per_epoch(num_train, batch)
  tx, _ = trainer_lib.make_optimizer(config.optim, spe, config.total_epochs)
  graphdef, abstract = ts_lib.abstract_train_state(make_model, tx)
  repl = sharding_lib.replicated(mesh)
  state = _abstract(abstract, repl)
  data = {k: _sds(s, d, repl) for k, (s, d) in data_shapes.items()}
  consts = _abstract(jax.eval_shape(lambda: trainer_lib.step_consts(
      jax.random.key(0), loss_args)), repl)
  idx = _sds((spe, batch), jnp.int32, repl)
  mask = _sds((spe, batch), jnp.float32, repl)
  seed_axes = None
  if num_seeds > 1:
    stack = lambda x: _sds((num_seeds,) + tuple(x.shape), x.dtype, repl)
    state = jax.tree.map(stack, state)
    consts = dict(consts, key=stack(consts["key"]))
    idx, mask = stack(idx), stack(mask)
    seed_axes = ({k: None for k in data}, {"key": 0, "loss": None}, "vmap")
  epoch_fn = trainer_lib.make_epoch_fn(trainer_lib.make_train_step(
      graphdef, tx, loss_fn, make_batch, mesh), seed_axes)
  return Program(epoch_fn, (state, data, consts, idx, mask), {}, batch,
                 _nbytes(data), True, num_seeds)


def _stage3_config(name, size, dtype, batch):
  from ear_jax.configs import stage3
  config = stage3.get_config("tiny" if size == "tiny" else None)
  config.model.name = name
  config.model.dtype = dtype
  if batch:
    config.batch_size = batch
  return config


def _stage3_shapes(config, n, train: bool) -> dict:
  import numpy as np
  from ear_jax.data import llp_features
  dim_a, dim_v = llp_features.parser_input_dims(config.data.features)
  T, C = 10, 25
  shapes = dict(audio=((n, T, dim_a), np.float32),
                visual=((n, T, dim_v), np.float32))
  if train:
    shapes.update(weak=((n, C), np.float32), a_logit=((n, T, C), np.float32),
                  v_logit=((n, T, C), np.float32))
  return shapes


def parser_train(name, num_seeds=1):
  def build(size, dtype, mesh, batch=None):
    import numpy as np
    from ear_jax import evaluator as evaluator_lib
    from ear_jax import parser_lib
    sizes = TINY if size == "tiny" else PAPER
    config = _stage3_config(name, size, dtype, batch)
    z = np.zeros(25, np.float32)
    return _train_program(
        config, parser_lib.model_factory(config),
        parser_lib.make_loss_fn(config), parser_lib.loss_args(z, z, z, z),
        evaluator_lib.gather,
        _stage3_shapes(config, sizes["llp_train"], True),
        sizes["llp_train"], mesh, num_seeds)
  return build


def parser_predict(name):
  def build(size, dtype, mesh, batch=None):
    import optax
    from ear_jax import evaluator as evaluator_lib
    from ear_jax import parser_lib
    from ear_jax import sharding as sharding_lib
    from ear_jax import train_state as ts_lib
    from ear_jax.data import pipeline
    sizes = TINY if size == "tiny" else PAPER
    config = _stage3_config(name, size, dtype, None)
    eval_batch = batch or config.eval_batch_size
    sharding_lib.check_batch_size(eval_batch, "eval batch size", mesh)
    graphdef, abstract = ts_lib.abstract_train_state(
        parser_lib.model_factory(config), optax.identity())
    repl = sharding_lib.replicated(mesh)
    weights = _abstract(dict(params=abstract.params,
                             model_state=abstract.model_state), repl)
    n = sizes["llp_test"]
    data = {k: _sds(s, d, repl)
            for k, (s, d) in _stage3_shapes(config, n, False).items()}
    idx, mask = pipeline.eval_batches(n, eval_batch)
    run = evaluator_lib.predict_program(graphdef, parser_lib.predict_fn, mesh)
    return Program(run, (weights, data, _sds(idx.shape, idx.dtype, repl),
                         _sds(mask.shape, mask.dtype, repl)),
                   dict(keys=None), eval_batch, _nbytes(data), False)
  return build


def generator_train(variant, num_seeds=1):
  def build(size, dtype, mesh, batch=None):
    import numpy as np
    from ear_jax.configs import stage1
    from ear_jax import generator_lib
    sizes = TINY if size == "tiny" else PAPER
    config = stage1.get_config("tiny" if size == "tiny" else None)
    config.model.dtype = dtype
    if variant == "uwav":  # Table IV "UWAV": UWAV's computation
      config.model.asymmetric = False
      config.migration.enabled = False
    if batch:
      config.batch_size = batch
    n, T, C = sizes["unav_train"], sizes["unav_T"], 100
    m = config.model
    shapes = dict(clip=((n, T, m.clip_dim), np.float32),
                  clap=((n, T, m.clap_dim), np.float32),
                  y_av=((n, T, C), np.uint8), valid=((n, T), np.uint8))
    text = generator_lib.loss_args(np.zeros((C, m.clap_dim), np.float32),
                                   np.zeros((C, m.clip_dim), np.float32))
    return _train_program(
        config, generator_lib.model_factory(config),
        generator_lib.make_loss_fn(config), text, generator_lib.make_batch,
        shapes, n, mesh, num_seeds)
  return build


# name -> build(size, dtype, mesh, batch=None) -> Program (train programs
# also in PROGRAMS_TRAIN: their rows get the batch and seed estimates). The
# *_seeds4_train programs are config.num_seeds=4 epochs (seed_mode vmap).
PROGRAMS = {
    "generator_ear_train": generator_train("ear"),
    "generator_uwav_train": generator_train("uwav"),
    "ear_train": parser_train("ear"),
    "han_train": parser_train("han"),
    "ear_predict": parser_predict("ear"),
    "han_predict": parser_predict("han"),
    "generator_ear_seeds4_train": generator_train("ear", num_seeds=4),
    "ear_seeds4_train": parser_train("ear", num_seeds=4),
    "han_seeds4_train": parser_train("han", num_seeds=4),
}
PROGRAMS_TRAIN = {name: name.endswith("_train") for name in PROGRAMS}


# ---------------------------------------------------------------- compiling
def _no_cache_writes():
  """Compile-only executables cannot be loaded back from JAX's persistent
  compilation cache (no client): keep them out of it."""
  try:
    # pylint: disable-next=protected-access
    from jax._src import config as jax_config
    return jax_config.persistent_cache_min_compile_time_secs(1e12)
  except (ImportError, AttributeError, TypeError):
    return contextlib.nullcontext()


def compile_program(prog: Program, target: Target):
  """(compiled, compile seconds, {compiler options used, why}) of `prog`."""
  t0 = time.perf_counter()
  lowered = prog.fn.trace(*prog.args, **prog.kwargs).lower()
  with _no_cache_writes():
    try:
      return lowered.compile(), time.perf_counter() - t0, {}
    except Exception as e:  # pylint: disable=broad-except
      if target.platform != "cuda" or TILE_ERROR not in str(e):
        raise
      why = str(e).split("metadata=")[0].strip()[:200]
    compiled = lowered.compile(compiler_options=GPU_TILE_FLAGS)
  return compiled, time.perf_counter() - t0, dict(GPU_TILE_FLAGS, why=why)


def memory(compiled) -> dict:
  """Per-device bytes of a compiled program, in GB."""
  m = compiled.memory_analysis()
  if m is None:
    return {}
  arg, out = m.argument_size_in_bytes, m.output_size_in_bytes
  tmp, alias = m.temp_size_in_bytes, m.alias_size_in_bytes
  return dict(arguments_gb=arg / GB, temporaries_gb=tmp / GB,
              outputs_gb=out / GB, aliased_gb=alias / GB,
              total_gb=(arg + out + tmp - alias) / GB)


def cost(compiled) -> dict:
  """XLA's flop and byte counts (per device), where the backend gives them."""
  try:
    ca = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    ca = None
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else None
  if not ca or "flops" not in ca:
    return {}
  return dict(gflop=ca["flops"] / 1e9,
              gb_accessed=ca.get("bytes accessed", 0.0) / 1e9)


def host_cost(name: str, dtype: str, size: str, batch=None) -> dict:
  """XLA's counts of the same program compiled for one host CPU device, for
  backends that give none (XLA:GPU without a device): the same arithmetic;
  bytes follow XLA:CPU's fusion, so they are an estimate."""
  import jax
  from ear_jax import sharding as sharding_lib
  try:
    mesh = sharding_lib.make_mesh(jax.devices("cpu")[:1])
    prog = PROGRAMS[name](size, dtype, mesh, batch)
    return cost(prog.fn.trace(*prog.args, **prog.kwargs).lower().compile())
  except Exception:  # pylint: disable=broad-except
    return {}


def count_conditionals(compiled) -> int:
  text = compiled.as_text() or ""
  return sum(1 for line in text.splitlines() if " conditional(" in line)


def lower_bound_ms(target: Target, dtype: str, c: dict) -> float | None:
  """max(flops / peak, bytes / bandwidth) of one step: an estimate."""
  if not c:
    return None
  flop_s = c["gflop"] * 1e9 / (target.peak_tflops[dtype] * 1e12)
  byte_s = c["gb_accessed"] * 1e9 / (target.hbm_gbps * 1e9)
  return 1e3 * max(flop_s, byte_s)


def check_program(target: Target, name: str, dtype: str, size: str, mesh,
                  batch=None, host_cost_too: bool = False) -> dict:
  """One row: compile `name`, read memory and cost, check it fits."""
  row = dict(target=target.name, program=name, dtype=dtype, size=size,
             devices=mesh.size, hosts=target.hosts, ok=False, error=None,
             device_memory_gb=target.memory_bytes / GB)
  try:
    prog = PROGRAMS[name](size, dtype, mesh, batch)
    row["batch"] = prog.batch
    row["num_seeds"] = prog.num_seeds
    compiled, row["compile_s"], opts = compile_program(prog, target)
    if opts:
      row["compiler_options"] = opts
  except Exception as e:  # pylint: disable=broad-except
    msg = f"{type(e).__name__}: {e}".splitlines()[0][:400]
    if "RESOURCE_EXHAUSTED" in msg or "out of memory" in msg.lower():
      msg = (f"{name} does not fit one {target.name} device's"
             f" {target.memory_bytes / GB:.1f} GB: lower the batch size."
             f" ({msg})")
    row["error"] = msg
    row["trace"] = traceback.format_exc()[-1500:]
    return row
  row.update(memory(compiled))
  counts = cost(compiled)
  if counts:
    row["cost_from"] = target.name
  elif host_cost_too and mesh.size == 1:  # XLA:GPU without a device
    counts = host_cost(name, dtype, size, batch)
    row["cost_from"] = "host cpu"
  row.update(counts)
  row["conditionals"] = count_conditionals(compiled)
  row["lower_bound_ms"] = lower_bound_ms(target, dtype, counts)
  row["data_gb"] = prog.data_bytes / GB
  total = row.get("total_gb")
  if total is not None and total * GB > target.memory_bytes:
    row["error"] = (f"{name} needs {total:.2f} GB per device, more than one"
                    f" {target.name} device's {target.memory_bytes / GB:.1f}"
                    " GB: lower the batch size or use more devices.")
    return row
  row["ok"] = True
  return row


def fits(target: Target, row: dict) -> dict:
  """The largest batch and number of seeds of a train row that fit one
  device, extrapolated from this one compile (estimates): the arguments and
  outputs (dataset, state, optimizer) stay, the temporaries (activations)
  grow with the batch; seeds vmapped over one replicated dataset each add
  everything but the dataset."""
  mem = target.memory_bytes / GB
  out = {}
  fixed = row["total_gb"] - row["temporaries_gb"]
  if row["temporaries_gb"] > 0:
    per_example = row["temporaries_gb"] / row["batch"]
    out["max_batch_est"] = (int((mem - fixed) / per_example)
                            // row["devices"] * row["devices"])
  per_seed = (row["total_gb"] - row["data_gb"]) / row.get("num_seeds", 1)
  if per_seed > 0:
    out["max_seeds_est"] = int((mem - row["data_gb"]) / per_seed)
  return out


# -------------------------------------------------------------------- table
def format_table(rows: list[dict]) -> str:
  head = ("target", "program", "dtype", "ok", "compile_s", "args_GB",
          "temp_GB", "out_GB", "total_GB", "device_GB", "cond", "GFLOP",
          "GB_acc", "bound_ms")
  lines = [" ".join(f"{h:>10}" if i > 2 else f"{h:<20}" if i == 1
                    else f"{h:<10}" for i, h in enumerate(head))]
  num = lambda v, f: "-" if v is None else format(v, f)
  for r in rows:
    cells = [f"{r['target']:<10}", f"{r['program']:<20}",
             f"{r['dtype']:<10}", f"{'ok' if r['ok'] else 'FAIL':>10}",
             f"{num(r.get('compile_s'), '.1f'):>10}",
             f"{num(r.get('arguments_gb'), '.3f'):>10}",
             f"{num(r.get('temporaries_gb'), '.3f'):>10}",
             f"{num(r.get('outputs_gb'), '.3f'):>10}",
             f"{num(r.get('total_gb'), '.3f'):>10}",
             f"{num(r.get('device_memory_gb'), '.1f'):>10}",
             f"{num(r.get('conditionals'), 'd'):>10}",
             f"{num(r.get('gflop'), '.2f'):>10}",
             f"{num(r.get('gb_accessed'), '.3f'):>10}",
             f"{num(r.get('lower_bound_ms'), '.3f'):>10}"]
    lines.append(" ".join(cells))
    if r.get("error"):
      lines.append(f"  error: {r['error']}")
    if r.get("max_batch_est") is not None:
      lines.append(f"  fits (estimate): batch <= {r['max_batch_est']},"
                   f" seeds <= {r.get('max_seeds_est')}")
  return "\n".join(lines)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--target", required=True, help=f"one of {sorted(TARGETS)}")
  p.add_argument("--out", default=None, help="JSON file of the rows")
  p.add_argument("--programs", default=",".join(PROGRAMS))
  p.add_argument("--dtypes", default=",".join(DTYPES))
  p.add_argument("--size", default="paper", choices=("paper", "tiny"))
  p.add_argument("--batch", type=int, default=None,
                 help="global batch of every program (default: the"
                 " config's, 64 for training, 256 for the predictors)")
  p.add_argument("--host_cost", action="store_true",
                 help="count flops and bytes on the host CPU where the"
                 " target's compiler gives none (one device)")
  args = p.parse_args(argv)
  for field, value, known in (("--programs", args.programs, PROGRAMS),
                              ("--dtypes", args.dtypes, DTYPES)):
    bad = [v for v in value.split(",") if v not in known]
    if bad:
      p.error(f"{field}: unknown {bad}; use some of {list(known)}.")
  return args


def run(args) -> dict:
  """The rows of `args` (also written to args.out)."""
  _setup_env()
  target = get_target(args.target)
  from ear_jax import sharding as sharding_lib
  mesh = sharding_lib.make_mesh(target_devices(target))
  rows = []
  for name in args.programs.split(","):
    for dtype in args.dtypes.split(","):
      row = check_program(target, name, dtype, args.size, mesh,
                          batch=args.batch, host_cost_too=args.host_cost)
      if row["ok"] and PROGRAMS_TRAIN.get(name):
        row.update(fits(target, row))
      rows.append(row)
      print(json.dumps({k: v for k, v in row.items() if k != "trace"}),
            flush=True)
  import jax
  import jaxlib
  out = dict(rows=rows, jax=jax.__version__, jaxlib=jaxlib.__version__,
             target=dataclasses.asdict(target), size=args.size,
             command="python benchmarks/aot_check.py " + " ".join(
                 sys.argv[1:]))
  if args.out:
    from ear_jax import jsonio
    jsonio.write_json_atomic(args.out, out)
  return out


def main(argv=None):
  args = parse_args(argv)
  try:
    out = run(args)
  except AotError as e:
    sys.exit(f"aot_check: {e}")
  print(format_table(out["rows"]))
  if not all(r["ok"] for r in out["rows"]):
    sys.exit(1)


if __name__ == "__main__":
  main()
