"""Paired comparison of two finished runs: b - a with 95% CIs and p-values.

The statistics: ear_jax/compare.py. Writes <workdir>/compare_<split>.json
and .md when a workdir is given; always prints the table.
"""

from __future__ import annotations

import os

from absl import logging

from ear_jax import compare as compare_lib
from ear_jax import jsonio


def run(config):
  name_a, name_b = compare_lib.run_names([config.a, config.b])
  name_a = config.get("name_a") or name_a
  name_b = config.get("name_b") or name_b
  if name_a == name_b:
    name_a, name_b = f"a:{name_a}", f"b:{name_b}"
  for split in config.split.split(","):
    result = compare_lib.compare(compare_lib.load(config.a, split),
                                 compare_lib.load(config.b, split),
                                 pair_by=config.pair_by)
    result.update(name_a=name_a, name_b=name_b)
    table = compare_lib.format_comparison(result, name_a, name_b)
    print(table, flush=True)
    logging.info("comparison written for %s", split)
    if config.workdir is not None:
      base = os.path.join(config.workdir, f"compare_{split}")
      compare_lib.write(base + ".json", result)
      jsonio.write_text_atomic(
          base + ".md",
          compare_lib.markdown_comparison(result, name_a, name_b) + "\n")
