"""Stage runners, one `run(config)` per `config.stage`.

Runners build on the library (generator_lib, parser_lib, ...) and never
import each other; whoever runs several stages (launch.py, the demo) looks
them up here. Modules are imported only when chosen.
"""

from __future__ import annotations

import importlib
from typing import Callable

# config.stage -> module under ear_jax/stages with a run(config).
RUNNERS = {
    "pretrain_generator": "ear_jax.stages.pretrain_generator",
    "generate_pseudo_labels": "ear_jax.stages.generate_pseudo_labels",
    "train_parser": "ear_jax.stages.train_parser",
    "evaluate": "ear_jax.stages.evaluate",
    "parse": "ear_jax.stages.parse",
    "compare": "ear_jax.stages.compare",
    "demo": "ear_jax.stages.demo",
}


def get_runner(stage: str) -> Callable:
  """run(config) of `stage` (a key of RUNNERS)."""
  if stage not in RUNNERS:
    raise ValueError(f"config.stage={stage!r}; expected one of"
                     f" {sorted(RUNNERS)}.")
  return importlib.import_module(RUNNERS[stage]).run
