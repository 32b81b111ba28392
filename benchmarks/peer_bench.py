r"""ear-jax vs the public PyTorch UWAV code, timed side by side.

  python benchmarks/peer_bench.py --uwav_root=/path/to/UWAV   # ~6 min, 2 CPUs
  python benchmarks/peer_bench.py --uwav_root=... --only=han,ear --reps=5
  python benchmarks/peer_bench.py --tiny --reps=1             # smoke, seconds

`--uwav_root` is a checkout of the public UWAV code (obtained separately;
nothing of it is in this repository); it needs torch and einops
(`pip install -e ".[bench]"`). Without it only ear-jax is timed.

Stage-3 steps (batch 64, T = 10, paper widths, VGGish + ResNet-152 +
R(2+1)D inputs): the PyTorch reference is UWAV's `main.py` train-loop body
as `scripts/train_han.sh` runs it (HybridAttentionNet forward with the
all-true attention mask of LLP, every UWAV loss term: clamped video BCE,
uncertainty-aware class-balanced segment BCE and uncertainty mixup for both
modalities, backward, clip_grad_norm_(1.0), the per-parameter grad-norm
read-out, AdamW), written here around the checkout's model class. ear-jax's
HAN and EAR steps are the trainer's jitted step (batch gather, dropout,
parser loss, clipping, AdamW), scanned over `--steps` steps in one call.

Stage-1 steps (paper widths: d = 1024, 5 layers, 16 heads, FFN 2048, T = 60,
`--s1_batch` videos): UWAV's TemporalTransformer train step as
`scripts/train_transformer.sh` runs it, against ear-jax's generator with the
same computation (`generator_uwav`: asymmetric=False, no label migration) and
with EAR's (`generator_ear`: asymmetric probabilities + label migration).

Each PyTorch/JAX pair runs alternately (`--reps` rounds of `--steps` steps
each, after a warm-up round), with torch's and XLA's intra-op threads both set
to `--threads`. Inference: the 1,200 videos of LLP test (T = 10) in batches
of 256, HAN and EAR (ear-jax's jitted Predictor, PyTorch under no_grad and
eval(); UWAV itself evaluates one video per batch, timed too).

Prints one JSON line: per path the median, min and max seconds per step over
the reps, the per-rep times, ear-jax's trace and compile seconds, and
`speedup` = PyTorch median / ear-jax median (paired per rep as well). Each
ear-jax step also carries XLA's cost analysis of one step (`gflop_per_step`,
`gb_per_step`: floating-point work, bytes read + written) and the GFLOP/s
its median achieves; the `gemm` section (`gemm_peak`) times one lone float32
matmul per model shape in XLA and torch, the machine's practical ceiling to
read those rates against.
"""
# pylint: disable=invalid-name,g-import-not-at-top,wrong-import-position

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time


SECTIONS = ("gemm", "han", "ear", "generator", "infer")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--uwav_root", default=None,
                 help="checkout of the public UWAV code (torch reference)")
  p.add_argument("--threads", type=int, default=os.cpu_count(),
                 help="intra-op threads for torch and XLA alike")
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--steps", type=int, default=2, help="train steps per rep")
  p.add_argument("--batch", type=int, default=64, help="stage-3 batch")
  p.add_argument("--s1_batch", type=int, default=8, help="stage-1 batch")
  p.add_argument("--s1_t", type=int, default=60, help="stage-1 segments")
  p.add_argument("--infer_videos", type=int, default=1200)
  p.add_argument("--infer_batch", type=int, default=256)
  p.add_argument("--only", default=",".join(SECTIONS),
                 help=f"subset of {','.join(SECTIONS)}")
  p.add_argument("--dtype", default="float32",
                 help="ear-jax model.dtype (float32 | bfloat16)")
  p.add_argument("--tiny", action="store_true",
                 help="tiny widths and shapes (a smoke test, not a figure)")
  p.add_argument("--out", default=None, help="also write the JSON here")
  return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
  # XLA reads its thread count when the CPU client starts: set it first.
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "")
      + " --xla_cpu_multi_thread_eigen=true"
      + f" intra_op_parallelism_threads={ARGS.threads}")

from flax import nnx
import jax
import numpy as np

from ear_jax.configs import stage1 as stage1_config
from ear_jax.configs import stage3 as stage3_config
from ear_jax import evaluator as evaluator_lib
from ear_jax import generator_lib
from ear_jax import models as models_lib
from ear_jax import parser_lib
from ear_jax import sharding as sharding_lib
from ear_jax import train_state as ts_lib
from ear_jax import trainer as trainer_lib

C3, T3, C1 = 25, 10, 100
# UWAV's scripts/train_han.sh and scripts/train_transformer.sh.
UWAV_HAN = dict(hidden_dim=512, nhead=16, ff_dim=2048, num_han_layers=5,
                num_proj_layers=1, num_MMIL_layers=1, dropout=0.1,
                input_v_2d_dim=2048, input_v_3d_dim=512, input_a_dim=128)
UWAV_HAN_LOSS = dict(
    cal_video_loss=True, cal_segment_loss=True, apply_uncertainty=True,
    apply_reweighting=True, reweight_type="inverse_freq", pos_weight=0.5,
    neg_weight=1.0, cal_mixup_loss=True, alpha=1.7,
    apply_uncertainty_mixup=True, segment_loss_weight=1.0,
    mixup_loss_weight=1.0)
UWAV_HAN_OPT = dict(lr=1e-4, weight_decay=1e-4, betas=(0.9, 0.999), eps=1e-8,
                    grad_norm=1.0)
UWAV_GEN = dict(input_v_2d_dim=768, input_v_3d_dim=1024, input_a_dim=512,
                hidden_dim=1024, nhead=16, ff_dim=2048, num_layers=5,
                dropout=0.3)
UWAV_GEN_OPT = dict(lr=1e-4, weight_decay=1e-3, betas=(0.5, 0.999), eps=1e-8,
                    grad_norm=2.0, pos_weight=5.0, neg_weight=1.0)
TINY_HAN = dict(UWAV_HAN, hidden_dim=32, nhead=2, ff_dim=64, num_han_layers=1,
                input_v_2d_dim=24, input_v_3d_dim=8, input_a_dim=16)
# UWAV's final projections are hard-wired to CLAP 512 / CLIP 768.
TINY_GEN = dict(UWAV_GEN, hidden_dim=16, nhead=2, ff_dim=32, num_layers=1)


def _block(tree):
  return jax.block_until_ready(tree)


def _unit(rng, *shape):
  x = rng.standard_normal(shape).astype(np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ------------------------------------------------------------------ data --
def stage3_data(rng, n, dim_a, dim_v2, dim_v3):
  """One random LLP-shaped split (values do not change timing)."""
  th = np.where(rng.random(C3) < 0.1, -np.inf, rng.standard_normal(C3))
  return dict(
      audio=rng.standard_normal((n, T3, dim_a), np.float32),
      visual_2d=rng.standard_normal((n, T3, dim_v2), np.float32),
      visual_3d=rng.standard_normal((n, T3, dim_v3), np.float32),
      weak=(rng.random((n, C3)) < 0.08).astype(np.float32),
      a_logit=rng.standard_normal((n, T3, C3), np.float32),
      v_logit=rng.standard_normal((n, T3, C3), np.float32),
      thresholds_a=th.astype(np.float32), thresholds_v=th.astype(np.float32),
      freq_a=rng.random(C3).astype(np.float32) * 0.1,
      freq_v=rng.random(C3).astype(np.float32) * 0.1,
  )


def stage1_data(rng, n, t, dim_a, dim_v):
  return dict(clap=_unit(rng, n, t, dim_a), clip=_unit(rng, n, t, dim_v),
              y_av=(rng.random((n, t, C1)) < 0.03).astype(np.uint8),
              valid=np.ones((n, t), np.uint8),
              text_a=_unit(rng, C1, dim_a), text_v=_unit(rng, C1, dim_v))


# ---------------------------------------------------------------- ear-jax --
class JaxSteps:
  """`steps` jitted train steps in one scanned call, compiled ahead of time."""

  def __init__(self, make_model, loss_fn, loss_args, make_batch, optim, data,
               batch, steps, num_seeds=1):
    mesh = sharding_lib.make_mesh()
    tx, _ = trainer_lib.make_optimizer(optim, 157, 80)
    graphdef, state = ts_lib.create_train_state(make_model, tx)
    self.n_params = sum(x.size for x in jax.tree.leaves(state.params))
    step_fn = trainer_lib.make_train_step(graphdef, tx, loss_fn, make_batch,
                                          mesh)
    n = len(next(iter(data.values())))
    rng = np.random.default_rng(1)
    self.idx = rng.integers(0, n, (steps, batch)).astype(np.int32)
    self.mask = np.ones((steps, batch), np.float32)
    key = jax.random.key(0)
    if num_seeds == 1:
      epoch_fn = trainer_lib.make_epoch_fn(step_fn)
    else:  # the trainer's N-seed program (shared data and loss_args)
      epoch_fn = trainer_lib.make_epoch_fn(step_fn, seed_axes=(
          {k: None for k in data}, {"key": 0, "loss": None}))
      state = jax.tree.map(lambda x: np.stack([x] * num_seeds), state)
      key = jax.random.split(key, num_seeds)
      self.idx = np.stack([self.idx] * num_seeds)
      self.mask = np.stack([self.mask] * num_seeds)
    self.state = jax.device_put(state, sharding_lib.replicated(mesh))
    self.data = sharding_lib.put_replicated(data, mesh)
    self.consts = sharding_lib.put_replicated(
        trainer_lib.step_consts(key, loss_args), mesh)
    t0 = time.perf_counter()
    lowered = epoch_fn.lower(self.state, self.data, self.consts, self.idx,
                             self.mask)
    self.trace_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    self.compiled = lowered.compile()
    self.compile_s = time.perf_counter() - t0
    self.cost = xla_cost(self.compiled)
    self.steps = steps
    self.loss = None

  def __call__(self) -> float:
    """Seconds per step of one scanned call."""
    t0 = time.perf_counter()
    self.state, metrics = _block(
        self.compiled(self.state, self.data, self.consts, self.idx,
                      self.mask))
    dt = (time.perf_counter() - t0) / self.steps
    self.loss = float(np.mean(jax.device_get(metrics["loss"])))
    return dt


def parser_config(name, tiny, dtype):
  config = stage3_config.get_config("tiny" if tiny else None)
  config.model.name = name
  config.model.dtype = dtype
  return config


def jax_parser(name, d3, batch, steps, tiny, dtype, num_seeds=1):
  config = parser_config(name, tiny, dtype)
  train = dict(audio=d3["audio"],
               visual=np.concatenate([d3["visual_2d"], d3["visual_3d"]], -1),
               weak=d3["weak"], a_logit=d3["a_logit"], v_logit=d3["v_logit"])
  loss_args = parser_lib.loss_args(d3["thresholds_a"], d3["thresholds_v"],
                                   d3["freq_a"], d3["freq_v"])
  make_model = _parser_factory(config, train)
  return JaxSteps(make_model, parser_lib.make_loss_fn(config), loss_args,
                  evaluator_lib.gather, config.optim, train, batch, steps,
                  num_seeds)


def _parser_factory(config, train):
  dim_a, dim_v = train["audio"].shape[-1], train["visual"].shape[-1]

  def make_model():
    return models_lib.get_model(
        config.model.name, config.model, rngs=nnx.Rngs(config.seed),
        in_dim_a=dim_a, in_dim_v=dim_v, num_classes=C3)

  return make_model


def jax_generator(variant, d1, batch, steps, tiny, dtype):
  config = stage1_config.get_config("tiny" if tiny else None)
  config.model.dtype = dtype
  if variant == "uwav":  # Table IV "UWAV": the PyTorch model's computation.
    config.model.asymmetric = False
    config.migration.enabled = False
  data = {k: d1[k] for k in ("clip", "clap", "y_av", "valid")}
  return JaxSteps(generator_lib.model_factory(config),
                  generator_lib.make_loss_fn(config),
                  generator_lib.loss_args(d1["text_a"], d1["text_v"]),
                  generator_lib.make_batch, config.optim, data, batch, steps)


class JaxInfer:
  """ear-jax's Predictor over the whole split (one jitted, scanned call)."""

  def __init__(self, name, d3, batch, tiny, dtype):
    config = parser_config(name, tiny, dtype)
    inputs = dict(audio=d3["audio"], visual=np.concatenate(
        [d3["visual_2d"], d3["visual_3d"]], -1))
    make_model = _parser_factory(config, inputs)
    model = make_model()
    graphdef, params, rest = ts_lib.split_model(model)
    self.weights = dict(params=params, model_state=rest)
    self.predictor = parser_lib.make_predictor(graphdef, inputs, batch)
    t0 = time.perf_counter()
    self.predictor(self.weights)
    self.first_s = time.perf_counter() - t0

  def __call__(self) -> float:
    t0 = time.perf_counter()
    self.predictor(self.weights)
    return time.perf_counter() - t0


def xla_cost(compiled) -> dict:
  """XLA's own count of one train step: GFLOP and GB read + written.

  The scanned program is a while loop whose body XLA's cost analysis counts
  once (not times the trip count), so this is per step for any `steps`.
  """
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  ca = ca or {}
  return dict(gflop=ca.get("flops", 0.0) / 1e9,
              gb=ca.get("bytes accessed", 0.0) / 1e9)


# GEMMs of the benchmarked models: stage 3 (B*T = 640 tokens, d 512, FFN
# 2048) and stage 1 (B*T = 480 tokens, d 1024, FFN 2048).
GEMM_SHAPES = ((640, 512, 512), (640, 512, 2048), (480, 1024, 2048))
TINY_GEMM_SHAPES = ((64, 32, 32),)


def gemm_peak(shapes, reps: int, torch=None) -> dict:
  """float32 GFLOP/s of one lone [M,K]x[K,N] matmul, XLA and torch (when
  given), best of `reps` x 5 calls: the machine's practical ceiling, against
  which each step's achieved GFLOP/s can be read."""
  out = {}
  rng = np.random.default_rng(0)
  for m, k, n in shapes:
    a = rng.standard_normal((m, k), np.float32)
    b = rng.standard_normal((k, n), np.float32)
    flop = 2.0 * m * k * n
    fns = {"jax": (jax.jit(lambda x, y: x @ y), jax.device_put(a),
                   jax.device_put(b), _block)}
    if torch is not None:
      fns["torch"] = (torch.mm, torch.from_numpy(a), torch.from_numpy(b),
                      lambda r: r)
    row = {}
    for name, (f, x, y, sync) in fns.items():
      sync(f(x, y))
      best = float("inf")
      for _ in range(max(reps, 1) * 5):
        t0 = time.perf_counter()
        sync(f(x, y))
        best = min(best, time.perf_counter() - t0)
      row[f"{name}_gflops"] = round(flop / best / 1e9, 1)
    out[f"{m}x{k}x{n}"] = row
  return out


def _jax_entry(fn, times) -> dict:
  """trace/compile seconds and XLA's FLOP and byte counts of a jax runner,
  with the GFLOP/s its median step achieves."""
  med = statistics.median(times)
  return dict(trace_s=round(fn.trace_s, 2), compile_s=round(fn.compile_s, 2),
              gflop_per_step=round(fn.cost["gflop"], 4),
              gb_per_step=round(fn.cost["gb"], 4),
              achieved_gflops=round(fn.cost["gflop"] / med, 3))


# ---------------------------------------------------------------- PyTorch --
def import_uwav(root):
  """The checkout's model package (its modules import einops and torch)."""
  root = os.path.abspath(root)
  if not os.path.isfile(os.path.join(root, "model", "HAN.py")):
    raise FileNotFoundError(
        f"--uwav_root={root!r} has no model/HAN.py; pass a checkout of the"
        " public UWAV code.")
  sys.dont_write_bytecode = True  # the checkout may be read-only
  sys.path.insert(0, root)
  # model/__init__.py re-exports the classes under the module names.
  return tuple(importlib.import_module(m) for m in
               ("model.HAN", "model.TemporalTransformer", "utils.train_utils"))


class _TorchSteps:
  """`steps` PyTorch train steps timed together; subclasses define step()."""

  def finish(self, loss, loss_dict):
    """UWAV's loop tail: backward, clip_grad_norm_, grad-norm read-out,
    AdamW step; the step's loss_all."""
    loss.backward()
    self.torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                        self.grad_norm)
    self.train_utils.calculate_grad_norm(self.model)
    self.opt.step()
    return loss_dict["loss_all"]

  def __call__(self) -> float:
    _sync(self.torch, self.device)
    t0 = time.perf_counter()
    losses = [self.step(b) for b in self.batches]
    _sync(self.torch, self.device)
    self.loss = float(np.mean(losses))
    return (time.perf_counter() - t0) / len(self.batches)


class TorchHANStep(_TorchSteps):
  """UWAV main.py's train-loop body (scripts/train_han.sh arguments)."""

  def __init__(self, uwav, d3, batch, steps, tiny, device="cpu"):
    import torch
    uwav_han, _, train_utils = uwav
    self.torch, self.train_utils = torch, train_utils
    self.device = torch.device(device)
    torch.manual_seed(0)
    cfg = TINY_HAN if tiny else UWAV_HAN
    self.model = uwav_han.HybridAttentionNet(num_classes=C3, **cfg)
    self.model.to(self.device).train()
    self.args = argparse.Namespace(**UWAV_HAN_LOSS)
    o = UWAV_HAN_OPT
    self.opt = torch.optim.AdamW(self.model.parameters(), lr=o["lr"],
                                 weight_decay=o["weight_decay"],
                                 betas=o["betas"], eps=o["eps"])
    self.grad_norm = o["grad_norm"]
    self.n_params = sum(p.numel() for p in self.model.parameters())
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
    rng = np.random.default_rng(1)
    self.batches = []
    n = len(d3["audio"])
    for _ in range(steps):
      i = rng.integers(0, n, batch)
      self.batches.append(dict(
          video_s=t(d3["visual_2d"][i]), video_st=t(d3["visual_3d"][i]),
          audio=t(d3["audio"][i]), weak_label=t(d3["weak"][i]),
          a_logit=t(d3["a_logit"][i]), v_logit=t(d3["v_logit"][i]),
          valid_mask=torch.ones(batch, T3, device=self.device),
          attn_mask=torch.ones(batch, T3, T3, dtype=torch.bool,
                               device=self.device)))
    self.consts = dict(
        a_thresholds=t(d3["thresholds_a"]), v_thresholds=t(d3["thresholds_v"]),
        a_class_freq=t(d3["freq_a"]), v_class_freq=t(d3["freq_v"]))
    self.loss = None

  def step(self, b):
    weak = b["weak_label"].float()
    self.opt.zero_grad()
    outputs = self.model(b["audio"], b["video_s"], vis_3d_feat=b["video_st"],
                         attn_mask=b["attn_mask"])
    # Pseudo-labels only feed the non-uncertainty variants; UWAV passes them.
    pl = (b["a_logit"] > 0).float()
    loss, loss_dict = self.model.calculate_loss(
        self.args, outputs, (weak, pl, pl), b["valid_mask"],
        a_logits=b["a_logit"], v_logits=b["v_logit"], **self.consts)
    return self.finish(loss, loss_dict)


class TorchGeneratorStep(_TorchSteps):
  """UWAV main_pretrain.py's train-loop body (train_transformer.sh)."""

  def __init__(self, uwav, d1, batch, steps, tiny, device="cpu"):
    import torch
    _, uwav_tt, train_utils = uwav
    self.torch, self.train_utils = torch, train_utils
    self.device = dev = torch.device(device)
    torch.manual_seed(0)
    cfg = TINY_GEN if tiny else UWAV_GEN
    self.model = uwav_tt.TemporalTransformer(
        clap_event_feats=torch.from_numpy(d1["text_a"]).to(dev),
        clip_event_feats=torch.from_numpy(d1["text_v"]).to(dev), **cfg)
    self.model.to(dev).train()
    o = UWAV_GEN_OPT
    self.args = argparse.Namespace(pos_weight=o["pos_weight"],
                                   neg_weight=o["neg_weight"])
    self.opt = torch.optim.AdamW(self.model.parameters(), lr=o["lr"],
                                 weight_decay=o["weight_decay"],
                                 betas=o["betas"], eps=o["eps"])
    self.grad_norm = o["grad_norm"]
    self.n_params = sum(p.numel() for p in self.model.parameters())
    rng = np.random.default_rng(1)
    n, t = d1["clip"].shape[:2]
    self.batches = []
    for _ in range(steps):
      i = rng.integers(0, n, batch)
      self.batches.append(dict(
          clip=torch.from_numpy(d1["clip"][i]).to(dev),
          clap=torch.from_numpy(d1["clap"][i]).to(dev),
          gt=torch.from_numpy(d1["y_av"][i].astype(np.float32)).to(dev),
          valid=torch.from_numpy(d1["valid"][i].astype(np.float32)).to(dev),
          attn_mask=torch.ones(batch, t, t, dtype=torch.bool, device=dev)))
    self.loss = None

  def step(self, b):
    self.opt.zero_grad()
    outputs = self.model(b["clap"], b["clip"], valid_mask=b["valid"],
                         attn_mask=b["attn_mask"])
    loss, loss_dict = self.model.calculate_loss(self.args, outputs, b["gt"],
                                                b["valid"])
    return self.finish(loss, loss_dict)


class TorchHANInfer:
  """HybridAttentionNet forward over the split (eval(), no_grad)."""

  def __init__(self, uwav, d3, batch, tiny, device="cpu"):
    import torch
    self.torch = torch
    self.device = torch.device(device)
    torch.manual_seed(0)
    cfg = TINY_HAN if tiny else UWAV_HAN
    self.model = uwav[0].HybridAttentionNet(num_classes=C3, **cfg).eval().to(
        self.device)
    self.x = [torch.from_numpy(d3[k]).to(self.device) for k in
              ("audio", "visual_2d", "visual_3d")]
    self.batch = batch

  def __call__(self) -> float:
    torch = self.torch
    n = len(self.x[0])
    t0 = time.perf_counter()
    with torch.no_grad():
      for s in range(0, n, self.batch):
        a, v2, v3 = (x[s:s + self.batch] for x in self.x)
        mask = torch.ones(len(a), T3, T3, dtype=torch.bool,
                          device=self.device)
        out = self.model(a, v2, vis_3d_feat=v3, attn_mask=mask)
        _ = [o.cpu().numpy() for o in out[:5]]
    return time.perf_counter() - t0


def _sync(torch, device):
  if device.type == "cuda":
    torch.cuda.synchronize(device)


# ------------------------------------------------------------------ timing --
def summary(times):
  return dict(median_s=round(statistics.median(times), 4),
              min_s=round(min(times), 4), max_s=round(max(times), 4),
              reps_s=[round(x, 4) for x in times])


def alternate(runners: dict, reps: int) -> dict:
  """Warm-up round, then `reps` rounds running every runner in turn."""
  for fn in runners.values():
    fn()
  times = {k: [] for k in runners}
  for _ in range(reps):
    for k, fn in runners.items():
      times[k].append(fn())
  return times


def ratios(times, ref: str, fast: str) -> dict:
  paired = [a / b for a, b in zip(times[ref], times[fast])]
  return dict(
      speedup=round(statistics.median(times[ref])
                    / statistics.median(times[fast]), 3),
      speedup_paired_min=round(min(paired), 3),
      speedup_paired_max=round(max(paired), 3))


def main(args) -> dict:
  only = set(args.only.split(","))
  unknown = sorted(only - set(SECTIONS))
  if unknown:
    raise ValueError(f"--only={args.only!r}: unknown {unknown}; choose from"
                     f" {','.join(SECTIONS)}.")
  uwav = import_uwav(args.uwav_root) if args.uwav_root else None
  torch = None
  if uwav is not None:
    import torch
    torch.set_num_threads(args.threads)
  rng = np.random.default_rng(0)
  tiny = args.tiny
  cfg3 = TINY_HAN if tiny else UWAV_HAN
  d3 = stage3_data(rng, max(args.steps * args.batch, 4 * args.batch),
                   cfg3["input_a_dim"], cfg3["input_v_2d_dim"],
                   cfg3["input_v_3d_dim"])
  out = dict(bench="peer_bench", backend=jax.default_backend(),
             device=jax.devices()[0].device_kind, threads=args.threads,
             torch=None, reps=args.reps, steps_per_rep=args.steps,
             dtype=args.dtype, tiny=tiny, results={})
  if uwav is not None:
    import torch
    out["torch"] = dict(version=torch.__version__,
                        threads=torch.get_num_threads())
  res = out["results"]
  if "gemm" in only:
    res["gemm_peak"] = gemm_peak(TINY_GEMM_SHAPES if tiny else GEMM_SHAPES,
                                 args.reps, torch)

  # Stage 3: the HAN pair, then EAR against the same PyTorch HAN step.
  s3 = {}
  if only & {"han", "ear"}:
    if uwav is not None:
      s3["torch_han"] = TorchHANStep(uwav, d3, args.batch, args.steps, tiny)
    for name in ("han", "ear"):
      if name in only:
        s3[f"jax_{name}"] = jax_parser(name, d3, args.batch, args.steps, tiny,
                                       args.dtype)
    times = alternate(s3, args.reps)
    sec = dict(batch=args.batch, segments=T3)
    for k, fn in s3.items():
      sec[k] = dict(summary(times[k]), params_m=round(fn.n_params / 1e6, 3),
                    loss=round(fn.loss, 4))
      if k.startswith("jax_"):
        sec[k].update(_jax_entry(fn, times[k]))
        if "torch_han" in times:
          sec[k].update(ratios(times, "torch_han", k))
    res["stage3_step"] = sec
  s3.clear()

  if "generator" in only:
    dims = (TINY_GEN if tiny else UWAV_GEN)
    d1 = stage1_data(rng, max(args.steps * args.s1_batch, 16), args.s1_t,
                     dims["input_a_dim"], dims["input_v_2d_dim"])
    s1 = {}
    if uwav is not None:
      s1["torch_generator"] = TorchGeneratorStep(uwav, d1, args.s1_batch,
                                                 args.steps, tiny)
    for variant in ("uwav", "ear"):
      s1[f"jax_generator_{variant}"] = jax_generator(
          variant, d1, args.s1_batch, args.steps, tiny, args.dtype)
    times = alternate(s1, args.reps)
    sec = dict(batch=args.s1_batch, segments=args.s1_t)
    for k, fn in s1.items():
      sec[k] = dict(summary(times[k]), params_m=round(fn.n_params / 1e6, 3),
                    loss=round(fn.loss, 4))
      if k.startswith("jax_"):
        sec[k].update(_jax_entry(fn, times[k]))
        if "torch_generator" in times:
          sec[k].update(ratios(times, "torch_generator", k))
    res["stage1_step"] = sec

  if "infer" in only:
    di = stage3_data(rng, args.infer_videos, cfg3["input_a_dim"],
                     cfg3["input_v_2d_dim"], cfg3["input_v_3d_dim"])
    inf = {}
    if uwav is not None:
      inf["torch_han"] = TorchHANInfer(uwav, di, args.infer_batch, tiny)
      inf["torch_han_batch1"] = TorchHANInfer(uwav, di, 1, tiny)
    for name in ("han", "ear"):
      inf[f"jax_{name}"] = JaxInfer(name, di, args.infer_batch, tiny,
                                    args.dtype)
    times = alternate(inf, args.reps)
    sec = dict(videos=args.infer_videos, batch=args.infer_batch)
    for k, fn in inf.items():
      sec[k] = summary(times[k])
      if k.startswith("jax_"):
        sec[k]["first_call_s"] = round(fn.first_s, 2)
        if "torch_han" in times:
          sec[k].update(ratios(times, "torch_han", k))
    res["llp_test_inference"] = sec
  line = json.dumps(out)
  print(line)
  if args.out:
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
      f.write(line + "\n")
    os.replace(tmp, args.out)
  return out


if __name__ == "__main__":
  main(ARGS)
