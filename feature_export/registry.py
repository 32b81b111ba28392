"""The exporters by name (config.exporter); each implements common.Exporter.

A new feature extractor: its module (a class with the `common.Exporter`
methods), one entry here, its layout in ear_jax/data/features.py and a
config in configs/.
"""

from __future__ import annotations

from typing import Callable

from feature_export import clip_clap
from feature_export import common
from feature_export import han

# name -> constructor(config); torch is imported only by clip_clap's.
EXPORTERS: dict[str, Callable[..., common.Exporter]] = {
    "clip_clap": clip_clap.Exporter,
    "han": han.Exporter,
}

# The segment features (ear_jax/data/features.py names) each one writes.
FEATURES = {"clip_clap": clip_clap.FEATURES, "han": han.FEATURES}

# The config that builds each exporter, for error messages.
CONFIGS = {"clip_clap": "configs/export_clip_clap.py",
           "han": "configs/export_han.py"}


def get_exporter(config) -> common.Exporter:
  """The exporter named by config.exporter, built from config."""
  name = config.exporter
  if name not in EXPORTERS:
    raise ValueError(
        f"config.exporter={name!r}; expected one of {sorted(EXPORTERS)} ("
        + ", ".join(CONFIGS.values()) + ")")
  return EXPORTERS[name](config)


def exporters_for(features) -> dict[str, tuple[str, ...]]:
  """{exporter name: the features of `features` it writes}, in order."""
  out: dict[str, tuple[str, ...]] = {}
  for f in features:
    name = next((n for n, fs in FEATURES.items() if f in fs), None)
    if name is None:
      raise ValueError(f"no exporter writes feature {f!r}; they write"
                       f" {FEATURES}")
    out[name] = out.get(name, ()) + (f,)
  return out
