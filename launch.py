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
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if config.get("distributed", False):
    jax.distributed.initialize()
  logging.info("stage %s, workdir %s", config.stage, config.workdir)
  module, fn = _STAGES[config.stage].split(":")
  getattr(importlib.import_module(module), fn)(config)


if __name__ == "__main__":
  jax.config.parse_flags_with_absl()  # --jax_platforms, --jax_debug_nans, ...
  app.run(main)
