"""Shared config pieces: the base every stage starts from, tiny/small variants."""

from __future__ import annotations

from ml_collections import config_dict

from ear_jax import config_lib

parse_arg = config_lib.parse_arg
placeholder = config_dict.placeholder
# Training stages (1 and 3): seeds config.seed + k, k < num_seeds, trained
# as one program (SEED_MODE); eval/<split>.json holds the mean over seeds and
# eval/<split>_seeds.json the spread (docs/SEEDS.md). 1: one run, as always.
NUM_SEEDS = 1
# How N > 1 seeds share the program: "vmap" (batched: fastest, seed k equals
# its one-seed run up to float32 summation order, ~1e-7 per step, which
# grows over a run like any float noise) | "map" (one after another inside
# the program, compiled once: bit-identical to the one-seed runs on CPU,
# tests/seeds_test.py).
SEED_MODE = "vmap"


def base(stage: str) -> config_dict.ConfigDict:
  """Fields every stage has: run dir, seed, data roots, logging, platform."""
  c = config_dict.ConfigDict()
  c.stage = stage
  c.workdir = placeholder(str)
  c.required = ("workdir",)
  c.seed = 0
  # Multi-host: call jax.distributed.initialize() (coordinator from the env).
  c.distributed = False
  c.log_every_steps = 50
  c.progress = True  # tqdm progress bars on process 0
  # Re-running in a workdir whose config.json differs only in fields that
  # change no result (data paths of moved data, eval batch size, checkpoint
  # cadence): True accepts them. Other differences are always refused.
  c.override_config = False
  # jax_default_matmul_precision for the whole run (ear_jax/cli.py):
  # "default" | "high" | "highest" | "bfloat16" | "tensorfloat32" |
  # "float32". "default" lets GPUs use TF32 and TPUs one bf16 pass, like the
  # PyTorch TF32 baseline; "highest" is float32 everywhere (docs/USAGE.md).
  c.matmul_precision = "default"
  # Persistent XLA compilation cache: "auto" ($JAX_COMPILATION_CACHE_DIR, or
  # ~/.cache/ear_jax/xla), a folder, or "none". A re-run (resume, a second
  # seed, another workdir) then loads its programs instead of compiling.
  c.compilation_cache_dir = "auto"
  c.compilation_cache_min_compile_secs = 1.0  # cache only slower compiles
  # TensorBoard event files in <workdir>/tensorboard beside metrics.jsonl
  # (needs the tensorboard extra: pip install "ear-jax[tensorboard]").
  c.tensorboard = False
  c.data = config_dict.ConfigDict()
  # LLP: AVVP_*.csv and the feature folders (feats/..., feats_CLIP/...).
  c.data.llp_root = placeholder(str)
  # Optional: where the AVVP_*.csv live, if not in llp_root.
  c.data.llp_annotations_dir = placeholder(str)
  # UnAV-100: unav100_annotations.json and feats_CLIP/ feats_CLAP/.
  c.data.unav_root = placeholder(str)
  # Optional: the annotation JSON, if not at unav_root/unav100_annotations.json.
  c.data.unav_annotations = placeholder(str)
  c.data.num_load_workers = 8
  return c


def optim(**overrides) -> config_dict.ConfigDict:
  """AdamW + epoch-wise warm-up/cosine; the stage configs set the values."""
  o = dict(
      lr=1e-4,
      min_lr=1e-5,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=1e-4,
      clip_norm=1.0,
      warmup_epochs=10,
  )
  o.update(overrides)
  return config_dict.ConfigDict(o)
