r"""Runs one ear-jax stage from a config file.

  python launch.py --config=configs/stage1.py --config.workdir=/runs/s1 \
      --config.data.unav_root=/data/UnAV
  python launch.py --config=configs/demo.py --config.workdir=/tmp/demo

Re-running the same command resumes the run in its workdir.
"""

import importlib

from absl import app
from absl import logging
import jax
from ml_collections import config_flags

from ear_jax import config_lib
from ear_jax import validate as validate_lib
from ear_jax import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Stage config file, e.g. configs/stage1.py:tiny.",
    lock_config=True,
)

# config.stage -> "module:function", imported only when chosen (so torch is
# only imported by the feature exporters).
_STAGES = {
    "pretrain_generator": "ear_jax.stages.pretrain_generator:run",
    "generate_pseudo_labels": "ear_jax.stages.generate_pseudo_labels:run",
    "train_parser": "ear_jax.stages.train_parser:run",
    "evaluate": "ear_jax.stages.evaluate:run",
    "parse": "ear_jax.stages.parse:run",
    "demo": "ear_jax.stages.demo:run",
    "export_features": "feature_export.driver:run",
}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/<stage>.py is required.")
  if config.stage not in _STAGES:
    raise app.UsageError(
        f"config.stage={config.stage!r}; expected one of {sorted(_STAGES)}"
    )
  try:
    config_lib.check_required(config)
    validate_lib.check(config)  # before any data is loaded
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if config.get("distributed", False):
    try:
      jax.distributed.initialize()
    except (ValueError, RuntimeError) as e:
      raise app.UsageError(
          f"--config.distributed=True: jax.distributed.initialize() failed"
          f" ({e}). Launch every process under a job manager (SLURM, Open"
          " MPI, Kubernetes, Cloud TPU), or use --config.distributed=False."
      ) from e
  try:
    validate_lib.check_devices(config, jax.device_count())
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  logging.info("stage %s, workdir %s", config.stage, config.workdir)
  module, fn = _STAGES[config.stage].split(":")
  run = getattr(importlib.import_module(module), fn)
  # Refuses a busy workdir or one of an incompatible run before writing.
  try:
    with workdir_lib.claim(config, primary=jax.process_index() == 0):
      run(config)
  except workdir_lib.WorkdirError as e:
    raise SystemExit(f"error: {e}") from e


if __name__ == "__main__":
  jax.config.parse_flags_with_absl()  # --jax_platforms, --jax_debug_nans, ...
  app.run(main)
