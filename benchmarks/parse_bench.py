r"""Parsing throughput: videos/s from features, and raw video end to end.

  python benchmarks/parse_bench.py                    # from features only
  python benchmarks/parse_bench.py --video_seconds=20 # + raw video

From features: the configs/stage3.py EAR parser (random weights: values do
not change the speed) parses `--num_videos` random-feature videos of 10 s
(one window each) and of `--long_seconds` s (sliding windows, stride 5)
through ear_jax.Parser.parse_many; compile time is excluded (one warm-up
call). End to end: a generated `--video_seconds` s MP4 (320x240, 25 fps,
AAC) through Parser.parse_video_full with the full-size HAN-set exporter
(VGGish, ResNet-152, R(2+1)D-18 of configs/export_han.py, JAX, random
weights), decoding and preprocessing included; a parser on the HAN feature
set. (CLIP/CLAP model speeds: benchmarks/export_bench.py --hf.) The same
script runs unchanged on a GPU. Prints one JSON line.
"""
# pylint: disable=invalid-name

from __future__ import annotations

import argparse
import fractions
import json
import os
import tempfile
import time

from flax import nnx
import jax
import numpy as np

from ear_jax.configs import stage3 as stage3_config
from ear_jax import parser_lib
from ear_jax import parsing


def make_parser(features: str, batch_size: int) -> parsing.Parser:
  cfg = stage3_config.get_config()
  cfg.data.features = features
  make_model = parser_lib.model_factory(cfg)
  graphdef, params, model_state = nnx.split(
      jax.jit(lambda: make_model())(), nnx.Param, ...)
  weights = dict(params=params, model_state=model_state)
  return parsing.Parser(cfg, graphdef, weights, batch_size=batch_size,
                        info=dict(model=cfg.model.name))


def bench_features(parser, num_videos: int, seconds: int, repeats: int):
  rng = np.random.default_rng(0)
  da, dv = parser.in_dims
  videos = [(f"v{i}", rng.standard_normal((seconds, da), np.float32),
             rng.standard_normal((seconds, dv), np.float32))
            for i in range(num_videos)]
  t0 = time.perf_counter()
  parser.parse_many(videos)  # compiles the step (once per window length)
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(repeats):
    parsed = parser.parse_many(videos)
  per = (time.perf_counter() - t0) / repeats
  windows = sum(len(p.merged.starts) for p in parsed)
  return dict(seconds=seconds, num_videos=num_videos, windows=windows,
              first_call_s=round(first, 2), call_s=round(per, 3),
              videos_per_s=round(num_videos / per, 1),
              windows_per_s=round(windows / per, 1))


def write_video(path: str, seconds: float, fps: int = 25,
                size=(320, 240), rate: int = 44100) -> str:
  """A moving textured scene with a tone, `seconds` long (PyAV)."""
  import av  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  w, h = size
  texture = np.kron(rng.integers(0, 256, (h // 8, w // 8, 3), np.uint8),
                    np.ones((8, 8, 1), np.uint8))
  with av.open(path, "w") as c:
    vs = c.add_stream("mpeg4", rate=fractions.Fraction(fps))
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    a = c.add_stream("aac", rate=rate, layout="stereo")
    for i in range(int(seconds * fps)):
      img = np.roll(texture, 4 * i, axis=1)
      for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
        c.mux(p)
    for p in vs.encode():
      c.mux(p)
    n = int(seconds * rate)
    wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)
    both = np.stack([wave, wave]).astype(np.float32)
    for s in range(0, n, 1024):
      fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(both[:, s:s + 1024]),
                                      format="fltp", layout="stereo")
      fr.sample_rate, fr.pts = rate, s
      for p in a.encode(fr):
        c.mux(p)
    for p in a.encode():
      c.mux(p)
  return path


def full_size_exporters():
  """The HAN-set exporter at full size (configs/export_han.py), random."""
  # pylint: disable=g-import-not-at-top
  from ear_jax.configs import export_han
  from feature_export import registry
  c = export_han.get_config()
  c.random_init_for_testing = True
  c.num_segments, c.num_workers = 0, 0
  return [registry.get_exporter(c)]


def bench_video(parser, seconds: float):
  with tempfile.TemporaryDirectory() as tmp:
    path = write_video(os.path.join(tmp, "bench.mp4"), seconds)
    exporters = full_size_exporters()
    warm = write_video(os.path.join(tmp, "warm.mp4"), 2.0)
    t0 = time.perf_counter()
    parser.parse_video_full(warm, exporters)  # compiles the nets (jit)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    parsed = parser.parse_video_full(path, exporters)
    wall = time.perf_counter() - t0
  return dict(features=parser.feature_set, video_seconds=seconds,
              num_segments=parsed.merged.num_segments, warmup_s=round(
                  warm_s, 1), wall_s=round(wall, 1),
              video_minutes_per_minute=round(seconds / wall, 3),
              weights="random (full-size architectures)")


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--features", default="vggish_res152_r2plus1d")
  p.add_argument("--num_videos", type=int, default=256)
  p.add_argument("--long_seconds", type=int, default=60)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--video_seconds", type=float, default=0.0,
                 help="> 0: also time raw video end to end")
  args = p.parse_args()
  parser = make_parser(args.features, args.batch_size)
  out = dict(bench="parse", backend=jax.default_backend(),
             device=jax.devices()[0].device_kind,
             num_devices=jax.device_count(), parser="ear (configs/stage3.py)",
             features=args.features, batch_size=args.batch_size,
             window=parser.window, stride=parser.stride,
             weights="random (speed does not depend on values)")
  out["from_features_10s"] = bench_features(parser, args.num_videos, 10,
                                            args.repeats)
  out[f"from_features_{args.long_seconds}s"] = bench_features(
      parser, max(1, args.num_videos // 4), args.long_seconds, args.repeats)
  if args.video_seconds > 0:
    if args.features != "vggish_res152_r2plus1d":
      raise SystemExit("--video_seconds times the HAN feature set only")
    out["end_to_end"] = bench_video(parser, args.video_seconds)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
