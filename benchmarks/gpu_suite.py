r"""Everything to measure on one GPU, in one command; writes one JSON file.

  bash benchmarks/gpu_suite.sh [--uwav_root=UWAV]    # on the GPU machine
  python benchmarks/gpu_suite.py --out=gpu_suite.json --budget_s=450
  python benchmarks/gpu_suite.py --dry_run --out=/tmp/s.json  # CPU, tiny

Sections, in this order (the JSON is rewritten after each, so a run cut
short keeps what it measured; a section that would not fit the remaining
`--budget_s` is skipped with its estimate):
  env          devices, versions, what had to be installed from .whl/.
  steps        stage-3 EAR and HAN steps (batch 64, T 10, paper widths) and
               the stage-1 generator step (batch 64, T 60, d 1024, 5
               layers) in float32 (matmul precision "highest"), TF32
               ("tensorfloat32") and bfloat16 (model.dtype); compile seconds
               and ms/step (median of 3 calls of `--steps` scanned steps).
  stage3_run   a whole stage-3 EAR run at LLP size: 10,000 synthetic train
               videos, 80 epochs (157 steps each), validation on 649 videos
               after every epoch with the official metrics, then val + test
               (1,200) scores; wall seconds with compilation (cold cache).
  stage1_run   a whole stage-1 run at UnAV-100 size (6,489 train videos,
               T 60, 80 epochs, on-device Seg-AV on 2,134 validation videos
               every epoch, final official scores).
  seeds        stage-3 EAR and HAN steps for N = 1, 4, 8 seeds trained as
               one vmapped program (config.num_seeds): ms per step and per
               seed-step.
  inference    HAN and EAR over the 1,200 LLP test videos (batch 256).
  export       CLIP ViT-L/14 and CLAP (HTSAT-fused) feature throughput with
               random weights (no checkpoint is needed or downloaded).
  torch        with torch and --uwav_root: UWAV's HAN and TemporalTransformer
               train steps (benchmarks/peer_bench.py) on the same GPU.
Synthetic data are random arrays of the real shapes built in memory (speed
does not depend on values; file loading is not timed). `--dry_run` runs
every section at tiny sizes (CPU, ~a minute): tests/gpu_suite_test.py.

A bare GPU machine may lack grain / ml_collections (or other pure
dependencies): wheels in `.whl/` (benchmarks/fetch_gpu_wheels.sh) are
installed with pip --no-index --target into a temporary folder first.
"""
# pylint: disable=g-import-not-at-top,invalid-name

from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
NEEDED = ("ml_collections", "grain", "orbax.checkpoint", "optax", "flax")
PRECISIONS = {  # name -> (model.dtype, jax_default_matmul_precision)
    "float32": ("float32", "highest"),
    "tf32": ("float32", "tensorfloat32"),
    "bfloat16": ("bfloat16", "default"),
}
LLP = dict(train=10000, val=649, test=1200, T=10, C=25)
UNAV = dict(train=6489, val=2134, T=60, C=100)


def _args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="gpu_suite.json")
  p.add_argument("--uwav_root", default=None)
  p.add_argument("--budget_s", type=float, default=450.0)
  p.add_argument("--steps", type=int, default=20,
                 help="scanned train steps per timed call")
  p.add_argument("--epochs", type=int, default=80)
  p.add_argument("--only", default="steps,stage3_run,stage1_run,seeds,"
                 "inference,export,torch")
  p.add_argument("--wheels", default=os.path.join(REPO, ".whl"))
  p.add_argument("--dry_run", action="store_true",
                 help="tiny sizes on any backend (a test of the script)")
  return p.parse_args(argv)


# ------------------------------------------------------------ dependencies --
def ensure_deps(wheels: str) -> dict:
  """Installs missing pure dependencies from `wheels` (pip --no-index)."""
  missing = []
  for mod in NEEDED:
    try:
      importlib.import_module(mod)
    except ImportError:
      missing.append(mod)
  info = dict(missing=missing, installed_from=None)
  if not missing:
    return info
  files = sorted(glob.glob(os.path.join(wheels, "*.whl")))
  if not files:
    raise ImportError(
        f"missing {missing} and no wheels in {wheels!r}: run"
        " benchmarks/fetch_gpu_wheels.sh on a machine with PyPI access and"
        " carry .whl/ along, or pip install them.")
  target = os.path.join(tempfile.gettempdir(), "ear_jax_site")
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                  "--no-deps", "--no-compile", "--upgrade", "--target", target]
                 + files, check=True)
  sys.path.insert(0, target)
  importlib.invalidate_caches()
  for mod in missing:
    importlib.import_module(mod)
  info["installed_from"] = [os.path.basename(f) for f in files]
  return info


# ----------------------------------------------------------------- helpers --
class Suite:
  """Runs sections within a time budget and rewrites the JSON after each."""

  def __init__(self, args):
    self.args, self.t0 = args, time.perf_counter()
    self.out = dict(bench="gpu_suite", dry_run=args.dry_run, sections={})

  def left(self) -> float:
    return self.args.budget_s - (time.perf_counter() - self.t0)

  def write(self):
    self.out["wall_s"] = round(time.perf_counter() - self.t0, 1)
    path = self.args.out
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(self.out, f, indent=1)
    os.replace(tmp, path)

  def run(self, name, fn, estimate_s=0.0):
    if name not in self.args.only.split(",") and name != "env":
      return None
    if not self.args.dry_run and estimate_s > self.left():
      self.out["sections"][name] = dict(
          skipped=f"estimated {estimate_s:.0f} s > {self.left():.0f} s left"
          " of --budget_s")
      self.write()
      return None
    t0 = time.perf_counter()
    try:
      res = fn()
    except Exception as e:  # pylint: disable=broad-except
      import traceback
      res = dict(error=f"{type(e).__name__}: {e}",
                 trace=traceback.format_exc()[-2000:])
    res = dict(res or {}, section_s=round(time.perf_counter() - t0, 1))
    self.out["sections"][name] = res
    self.write()
    print(json.dumps({name: res}), flush=True)
    return res


def _median_time(fn, reps=3):
  fn()  # warm-up
  return statistics.median(fn() for _ in range(reps))


def _precision_ctx(precision):
  import jax
  return jax.default_matmul_precision(precision)


# ---------------------------------------------------------------- sections --
def section_env(deps):
  import jax
  import jaxlib
  info = dict(deps=deps, jax=jax.__version__, jaxlib=jaxlib.__version__,
              backend=jax.default_backend(),
              devices=[d.device_kind for d in jax.devices()],
              python=sys.version.split()[0])
  try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.cuda.is_available()
  except ImportError:
    info["torch"] = None
  return info


def section_steps(pb, args):
  import numpy as np
  tiny = args.dry_run
  rng = np.random.default_rng(0)
  batch3, batch1 = (8, 8) if tiny else (64, 64)
  t1 = 12 if tiny else UNAV["T"]
  cfg3 = pb.TINY_HAN if tiny else pb.UWAV_HAN
  d3 = pb.stage3_data(rng, 2 * batch3, cfg3["input_a_dim"],
                      cfg3["input_v_2d_dim"], cfg3["input_v_3d_dim"])
  d1 = pb.stage1_data(rng, 2 * batch1, t1, 512, 768)
  steps = 2 if tiny else args.steps
  res = dict(batch_stage3=batch3, batch_stage1=batch1, segments_stage1=t1,
             steps_per_call=steps)
  combos = [(p, n) for p in PRECISIONS for n in ("ear", "han", "generator")]
  if tiny:  # each code path once (parser, generator), HAN compiles fastest
    combos = [("float32", "han"), ("bfloat16", "generator")]
  for prec, name in combos:
    dtype, matmul = PRECISIONS[prec]
    with _precision_ctx(matmul):
      if name == "generator":
        runner = pb.jax_generator("ear", d1, batch1, steps, tiny, dtype)
      else:
        runner = pb.jax_parser(name, d3, batch3, steps, tiny, dtype)
      ms = 1e3 * _median_time(runner)
    res[f"{name}_{prec}"] = dict(
        ms_per_step=round(ms, 3), compile_s=round(runner.compile_s, 2),
        trace_s=round(runner.trace_s, 2), loss=round(runner.loss, 4),
        dtype=dtype, matmul_precision=matmul)
    del runner
  return res


def section_seeds(pb, args):
  """Stage-3 steps (batch 64, paper widths, TF32) for N seeds in one
  program (the trainer's vmapped epoch): ms per step of all N seeds and
  per seed, against N = 1."""
  import numpy as np
  tiny = args.dry_run
  rng = np.random.default_rng(0)
  batch = 8 if tiny else 64
  cfg3 = pb.TINY_HAN if tiny else pb.UWAV_HAN
  d3 = pb.stage3_data(rng, 2 * batch, cfg3["input_a_dim"],
                      cfg3["input_v_2d_dim"], cfg3["input_v_3d_dim"])
  steps = 2 if tiny else args.steps
  res = dict(batch=batch, steps_per_call=steps, matmul_precision="default")
  names = ("han",) if tiny else ("ear", "han")
  for name in names:
    for n in ((1, 2) if tiny else (1, 4, 8)):
      runner = pb.jax_parser(name, d3, batch, steps, tiny, "float32",
                             num_seeds=n)
      ms = 1e3 * _median_time(runner)
      res[f"{name}_seeds{n}"] = dict(
          ms_per_step=round(ms, 3), ms_per_seed_step=round(ms / n, 3),
          compile_s=round(runner.compile_s, 2), num_seeds=n)
      del runner
  return res


def _gt(rng, n, T, C, density=0.1):
  return (rng.random((n, C, T)) < density).astype("uint8")


def section_stage3_run(args, workdir, name="ear"):
  """parser_lib + trainer.fit as stages/train_parser.run does, in memory."""
  import jax
  import numpy as np
  from flax import nnx
  from ear_jax.configs import stage3
  from ear_jax import evaluator as evaluator_lib
  from ear_jax import metrics as metrics_lib
  from ear_jax import parser_lib
  from ear_jax import trainer as trainer_lib
  from ear_jax.data import llp_features
  tiny = args.dry_run
  config = stage3.get_config("tiny" if tiny else None)
  config.model.name = name
  config.workdir = os.path.join(workdir, f"stage3_{name}")
  config.progress = False
  config.total_epochs = 2 if tiny else args.epochs
  config.checkpoint_every_epochs = 10
  sizes = dict(train=48, val=16, test=16) if tiny else LLP
  T, C = LLP["T"], LLP["C"]
  dim_a, dim_v = llp_features.parser_input_dims(config.data.features)
  rng = np.random.default_rng(0)
  t_data = time.perf_counter()

  def inputs(n):
    return dict(audio=rng.standard_normal((n, T, dim_a), np.float32),
                visual=rng.standard_normal((n, T, dim_v), np.float32))

  n = sizes["train"]
  train = dict(inputs(n), weak=(rng.random((n, C)) < 0.08).astype(np.float32),
               a_logit=rng.standard_normal((n, T, C), np.float32),
               v_logit=rng.standard_normal((n, T, C), np.float32))
  th = np.where(rng.random(C) < 0.1, -np.inf, rng.standard_normal(C))
  loss_args = parser_lib.loss_args(th, th, rng.random(C) * 0.1,
                                   rng.random(C) * 0.1)
  recs = {s: types.SimpleNamespace(gt_a=_gt(rng, sizes[s], T, C),
                                   gt_v=_gt(rng, sizes[s], T, C))
          for s in ("val", "test")}
  split_inputs = {s: inputs(sizes[s]) for s in ("val", "test")}
  data_s = time.perf_counter() - t_data

  t0 = time.perf_counter()
  make_model = parser_lib.model_factory(config)
  graphdef = nnx.graphdef(nnx.eval_shape(make_model))
  predictors = {s: parser_lib.make_predictor(graphdef, split_inputs[s],
                                             config.eval_batch_size)
                for s in ("val", "test")}
  val_times = []

  def evaluate(weights):
    t = time.perf_counter()
    scores = parser_lib.score(predictors["val"], weights, recs["val"], True)
    val_times.append(time.perf_counter() - t)
    return evaluator_lib.prefixed("val", scores)

  result = trainer_lib.fit(
      config, make_model=make_model, loss_fn=parser_lib.make_loss_fn(config),
      loss_args=loss_args, make_batch=evaluator_lib.gather, train_data=train,
      num_train=n, evaluate=evaluate, best_metric=config.best_metric)
  fit_s = time.perf_counter() - t0
  t1 = time.perf_counter()
  final = {s: parser_lib.score(predictors[s], result.weights, recs[s], True)
           for s in ("val", "test")}
  jax.block_until_ready(result.weights)
  test_s = time.perf_counter() - t1
  return dict(
      model=name, epochs=config.total_epochs, train_videos=n,
      val_videos=sizes["val"], test_videos=sizes["test"],
      steps_per_epoch=-(-n // config.batch_size),
      wall_s=round(fit_s + test_s, 1), fit_s=round(fit_s, 1),
      final_val_test_s=round(test_s, 2),
      val_first_s=round(val_times[0], 2) if val_times else None,
      val_median_s=round(statistics.median(val_times), 3) if val_times
      else None, data_build_s=round(data_s, 1),
      test_avg=round(metrics_lib.with_avg(final["test"])["avg"], 2),
      metrics_ok=bool(np.isfinite(metrics_lib.with_avg(final["test"])["avg"])),
      note="random features and GT: the score is noise; time is the point")


def section_stage1_run(args, workdir):
  """generator_lib + trainer.fit as stages/pretrain_generator.run does."""
  import numpy as np
  from flax import nnx
  from ear_jax.configs import stage1
  from ear_jax import generator_lib
  from ear_jax import trainer as trainer_lib
  tiny = args.dry_run
  config = stage1.get_config("tiny" if tiny else None)
  config.workdir = os.path.join(workdir, "stage1")
  config.progress = False
  config.total_epochs = 2 if tiny else args.epochs
  config.checkpoint_every_epochs = 10
  sizes = dict(train=48, val=16, T=12) if tiny else UNAV
  C, T = UNAV["C"], sizes["T"]
  rng = np.random.default_rng(0)
  t_data = time.perf_counter()

  def split(n):
    def unit(*shape):
      x = rng.standard_normal(shape, np.float32)
      return x / np.linalg.norm(x, axis=-1, keepdims=True)
    valid = np.ones((n, T), np.uint8)
    valid[:, T // 2:] = rng.random((n, 1)) < 0.5  # some shorter videos
    return dict(clip=unit(n, T, 768), clap=unit(n, T, 512),
                y_av=(rng.random((n, T, C)) < 0.03).astype(np.uint8),
                valid=valid)

  train, val = split(sizes["train"]), split(sizes["val"])
  text_a = rng.standard_normal((C, 512), np.float32)
  text_v = rng.standard_normal((C, 768), np.float32)
  data_s = time.perf_counter() - t_data
  t0 = time.perf_counter()
  make_model = generator_lib.model_factory(config)
  graphdef = nnx.graphdef(nnx.eval_shape(make_model))
  predictor = generator_lib.make_unav_predictor(
      graphdef, val, text_a, text_v, config.eval_batch_size)
  result = trainer_lib.fit(
      config, make_model=make_model, loss_fn=generator_lib.make_loss_fn(config),
      loss_args=generator_lib.loss_args(text_a, text_v),
      make_batch=generator_lib.make_batch, train_data=train,
      num_train=sizes["train"],
      evaluate=lambda w: generator_lib.seg_av_on_device(predictor, w),
      best_metric=config.best_metric)
  final = generator_lib.unav_scores(predictor, result.weights, val["y_av"])
  wall = time.perf_counter() - t0
  return dict(epochs=config.total_epochs, train_videos=sizes["train"],
              val_videos=sizes["val"], segments=T,
              steps_per_epoch=-(-sizes["train"] // config.batch_size),
              wall_s=round(wall, 1), data_build_s=round(data_s, 1),
              final=final)


def section_inference(pb, args):
  import numpy as np
  tiny = args.dry_run
  rng = np.random.default_rng(0)
  cfg3 = pb.TINY_HAN if tiny else pb.UWAV_HAN
  n, b = (40, 16) if tiny else (LLP["test"], 256)
  di = pb.stage3_data(rng, n, cfg3["input_a_dim"], cfg3["input_v_2d_dim"],
                      cfg3["input_v_3d_dim"])
  res = dict(videos=n, batch=b)
  combos = [(p, m) for p in ("tf32", "bfloat16") for m in ("han", "ear")]
  if tiny:
    combos = [("bfloat16", "han")]
  for prec, name in combos:
    dtype, matmul = PRECISIONS[prec]
    with _precision_ctx(matmul):
      inf = pb.JaxInfer(name, di, b, tiny, dtype)
      s = _median_time(inf)
    res[f"{name}_{prec}"] = dict(seconds=round(s, 4),
                                 videos_per_s=round(n / s, 1),
                                 first_call_s=round(inf.first_s, 2))
  return res


def section_export(args):
  """CLIP ViT-L/14 / CLAP HTSAT-fused image/audio towers, random weights."""
  import torch
  import transformers
  tiny = args.dry_run
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(0)
  if tiny:
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, patch_size=16, image_size=64)
    audio = dict(enable_fusion=True, depths=[1, 1, 1, 1])
    img, batch, reps = 64, 1, 1
  else:
    vision = dict(hidden_size=1024, intermediate_size=4096,
                  num_hidden_layers=24, num_attention_heads=16,
                  patch_size=14, image_size=224)
    audio = dict(enable_fusion=True)
    img, batch, reps = 224, 64, 5
  res = dict(device=device, weights="random (no checkpoint needed)",
             dtype="float16" if device == "cuda" else "float32")
  dtype = torch.float16 if device == "cuda" else torch.float32
  clip = transformers.CLIPModel(transformers.CLIPConfig(
      vision_config=vision, projection_dim=768)).eval().to(device, dtype)
  x = torch.randn(batch, 3, img, img, device=device, dtype=dtype)
  res["clip"] = _torch_rate(torch, device, lambda: clip.get_image_features(
      pixel_values=x), batch, reps)
  del clip
  try:
    clap = transformers.ClapModel(transformers.ClapConfig(
        audio_config=audio, projection_dim=512)).eval().to(device, dtype)
    frames = 1001  # 10 s of 48 kHz audio, HTSAT's input
    xa = torch.randn(batch, 4, frames, 64, device=device, dtype=dtype)
    longer = torch.zeros(batch, 1, dtype=torch.bool, device=device)
    res["clap"] = _torch_rate(torch, device, lambda: clap.get_audio_features(
        input_features=xa, is_longer=longer), batch, reps)
  except Exception as e:  # pylint: disable=broad-except
    res["clap"] = dict(error=f"{type(e).__name__}: {e}"[:500])
  res["rows"] = "CLIP: frames (1 per LLP segment); CLAP: 1-s chunks"
  return res


def _torch_rate(torch, device, fn, batch, reps):
  def once():
    t = time.perf_counter()
    with torch.inference_mode():
      fn()
    if device == "cuda":
      torch.cuda.synchronize()
    return time.perf_counter() - t
  first = once()
  per = statistics.median(once() for _ in range(reps))
  return dict(batch=batch, warmup_s=round(first, 2), batch_s=round(per, 4),
              rows_per_s=round(batch / per, 1))


def section_torch(pb, args):
  import numpy as np
  import torch
  if not args.uwav_root:
    return dict(skipped="no --uwav_root")
  device = "cuda" if torch.cuda.is_available() else "cpu"
  uwav = pb.import_uwav(args.uwav_root)
  tiny = args.dry_run
  rng = np.random.default_rng(0)
  cfg3 = pb.TINY_HAN if tiny else pb.UWAV_HAN
  batch = 8 if tiny else 64
  steps = 2 if tiny else args.steps
  d3 = pb.stage3_data(rng, 2 * batch, cfg3["input_a_dim"],
                      cfg3["input_v_2d_dim"], cfg3["input_v_3d_dim"])
  t1 = 12 if tiny else UNAV["T"]
  d1 = pb.stage1_data(rng, 2 * batch, t1, 512, 768)
  res = dict(device=device, torch=torch.__version__)
  for tf32 in (False, True):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    key = "tf32" if tf32 else "float32"
    han = pb.TorchHANStep(uwav, d3, batch, steps, tiny, device)
    res[f"uwav_han_{key}"] = dict(ms_per_step=round(1e3 * _median_time(han),
                                                    3), loss=han.loss)
    del han
    gen = pb.TorchGeneratorStep(uwav, d1, batch, steps, tiny, device)
    res[f"uwav_generator_{key}"] = dict(
        ms_per_step=round(1e3 * _median_time(gen), 3), loss=gen.loss)
    del gen
  return res


# -------------------------------------------------------------------- main --
def main(argv=None) -> dict:
  args = _args(argv)
  deps = ensure_deps(args.wheels)
  for p in (REPO, HERE):
    if p not in sys.path:
      sys.path.insert(0, p)
  import peer_bench as pb  # benchmarks/peer_bench.py
  suite = Suite(args)
  workdir = tempfile.mkdtemp(prefix="ear_jax_gpu_suite_")
  suite.run("env", lambda: section_env(deps))
  steps = suite.run("steps", lambda: section_steps(pb, args)) or {}

  def estimate(key, spe, epochs, eval_s):
    ms = steps.get(key, {}).get("ms_per_step")
    if ms is None:
      return 0.0
    return epochs * (spe * ms / 1e3 + eval_s) + 60.0

  suite.run("stage3_run", lambda: section_stage3_run(
      args, workdir, "han" if args.dry_run else "ear"),
            estimate("ear_tf32", 157, args.epochs, 0.3))
  suite.run("stage1_run", lambda: section_stage1_run(args, workdir),
            estimate("generator_tf32", 102, args.epochs, 0.3))
  suite.run("seeds", lambda: section_seeds(pb, args), 60.0)
  suite.run("inference", lambda: section_inference(pb, args), 30.0)
  suite.run("export", lambda: section_export(args), 30.0)
  suite.run("torch", lambda: section_torch(pb, args), 30.0)
  suite.write()
  return suite.out


if __name__ == "__main__":
  main()
