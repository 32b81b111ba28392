r"""Feature-export throughput at full size (random weights); one JSON line.

  python benchmarks/export_bench.py         # VGGish, ResNet-152, R(2+1)D-18
  python benchmarks/export_bench.py --hf    # + CLIP ViT-L/14, CLAP (torch)
  python benchmarks/export_bench.py \
      --video=CLIP.mp4  # + decoding of a 10-s clip

Runs the exporters' own jitted encoders (configs/export_han.py at full size,
random_init_for_testing) on random inputs of the real shapes: ResNet frames
224x224, R(2+1)D clips of 8 frames at 112x112, VGGish 96x64 log-mel examples.
Values do not change the speed. `--video` also times decoding + preprocessing
of one clip on one thread (PyAV). The same script runs unchanged on GPU.
`sec_per_llp_video` = model time for one 10-s LLP clip (80 + 10 + 10 rows).
"""

import argparse
import json
import os
import time

import jax
import numpy as np

from ear_jax.configs import export_han
from feature_export import decode as decode_lib
from feature_export import han

# Rows of one 10-s LLP clip per feature.
_LLP_ROWS = dict(vggish=10, res152=80, r2plus1d_18=10, clip=10, clap=10)


def _time(fn, x, batches):
  t0 = time.perf_counter()
  fn(x)  # compile (JAX) / warm-up (torch)
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(batches):
    fn(x)
  return first, (time.perf_counter() - t0) / batches


def bench_han(args, out):
  c = export_han.get_config("tiny" if args.tiny else None)
  c.random_init_for_testing = True
  c.matmul_precision = args.precision
  c.batch_sizes = dict(vggish=args.vggish_batch, res152=args.res152_batch,
                       r2plus1d_18=args.r2plus1d_batch)
  t0 = time.perf_counter()
  exporter = han.Exporter(c)
  out["han_init_s"] = round(time.perf_counter() - t0, 2)
  rng = np.random.default_rng(0)
  k = c.r2plus1d_crop
  inputs = dict(
      vggish=rng.normal(size=(args.vggish_batch, 96, 64)).astype(np.float32),
      res152=rng.integers(0, 256, (args.res152_batch, c.resnet_crop,
                                   c.resnet_crop, 3), np.uint8),
      r2plus1d_18=rng.integers(0, 256, (args.r2plus1d_batch,
                                        c.r2plus1d_frames, k, k, 3), np.uint8),
  )
  for f, x in inputs.items():
    first, per = _time(exporter.encoder(f), x, args.batches)
    rows = x.shape[0]
    out[f] = dict(batch=rows, compile_s=round(first - per, 2),
                  batch_s=round(per, 4), rows_per_s=round(rows / per, 2),
                  params=exporter.param_counts[f])
  out["res152"]["frames_per_s"] = out["res152"]["rows_per_s"]
  out["r2plus1d_18"]["clips_per_s"] = out["r2plus1d_18"]["rows_per_s"]
  out["r2plus1d_18"]["frames_per_s"] = round(
      out["r2plus1d_18"]["rows_per_s"] * c.r2plus1d_frames, 2)
  out["vggish"]["examples_per_s"] = out["vggish"]["rows_per_s"]
  return exporter


def bench_hf(args, out):
  """Full-size CLIP ViT-L/14 and CLAP HTSAT-fused, random init (torch)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(0)
  clip = transformers.CLIPModel(transformers.CLIPConfig(
      vision_config=dict(hidden_size=1024, intermediate_size=4096,
                         num_hidden_layers=24, num_attention_heads=16,
                         patch_size=14, image_size=224),
      projection_dim=768)).eval().to(device)
  clap = transformers.ClapModel(transformers.ClapConfig(
      audio_config=dict(enable_fusion=True),
      projection_dim=512)).eval().to(device)
  x_img = torch.randn(args.clip_batch, 3, 224, 224, device=device)
  x_aud = torch.randn(args.clap_batch, 4, 1001, 64, device=device)
  longer = torch.zeros(args.clap_batch, 1, dtype=torch.bool, device=device)

  def run_clip(x):
    with torch.inference_mode():
      clip.get_image_features(pixel_values=x)
    if device == "cuda":
      torch.cuda.synchronize()

  def run_clap(x):
    with torch.inference_mode():
      clap.get_audio_features(input_features=x, is_longer=longer)
    if device == "cuda":
      torch.cuda.synchronize()

  for name, fn, x in (("clip", run_clip, x_img), ("clap", run_clap, x_aud)):
    first, per = _time(fn, x, args.batches)
    out[name] = dict(batch=x.shape[0], warmup_s=round(first, 2),
                     batch_s=round(per, 4),
                     rows_per_s=round(x.shape[0] / per, 2), device=device)


def bench_decode(args, out, exporter):
  info = decode_lib.probe(args.video)
  t0 = time.perf_counter()
  for _ in range(args.decode_repeats):
    errors = {}
    for prep in exporter.prepare("x", args.video, exporter.features):
      errors.update(prep.errors)
  per = (time.perf_counter() - t0) / args.decode_repeats
  out["decode_han"] = dict(video=os.path.basename(args.video),
                           seconds=round(info.duration, 2),
                           sec_per_video_one_thread=round(per, 3),
                           errors=errors)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batches", type=int, default=2)
  ap.add_argument("--res152_batch", type=int, default=16)
  ap.add_argument("--r2plus1d_batch", type=int, default=4)
  ap.add_argument("--vggish_batch", type=int, default=64)
  ap.add_argument("--clip_batch", type=int, default=8)
  ap.add_argument("--clap_batch", type=int, default=8)
  ap.add_argument("--precision", default="default")
  ap.add_argument("--tiny", action="store_true")
  ap.add_argument("--hf", action="store_true")
  ap.add_argument("--video", default="")
  ap.add_argument("--decode_repeats", type=int, default=3)
  args = ap.parse_args()
  out = dict(bench="export", backend=jax.default_backend(),
             device=str(jax.devices()[0].device_kind), tiny=args.tiny,
             precision=args.precision, batches=args.batches)
  exporter = bench_han(args, out)
  if args.hf:
    bench_hf(args, out)
  if args.video:
    bench_decode(args, out, exporter)
  out["sec_per_llp_video"] = {
      f: round(_LLP_ROWS[f] / out[f]["rows_per_s"], 4)
      for f in _LLP_ROWS if f in out
  }
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
