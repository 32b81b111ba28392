"""Model registry: generator (stage 1) and the parsers HAN and EAR (stage 3).

The one registry of models: a new parser is a model file plus one entry in
PARSERS (config.model.name selects it).
"""

from __future__ import annotations

from flax import nnx

from ear_jax.models import generator
from ear_jax.models import han
from ear_jax.models import parser

# Stage-3 parsers: cls(cfg, *, in_dim_a, in_dim_v, num_classes, rngs).
PARSERS = {
    "han": han.HAN,
    "ear": parser.EARParser,
}
# Every model, by name: cls(cfg, **dims, rngs).
MODELS = {
    "generator": generator.Generator,
    **PARSERS,
}


def get_model(name: str, cfg, *, rngs: nnx.Rngs, **dims) -> nnx.Module:
  """Builds MODELS[name](cfg, **dims, rngs=rngs).

  dims: none for "generator"; in_dim_a, in_dim_v, num_classes for parsers.
  """
  if name not in MODELS:
    raise ValueError(
        f"unknown model {name!r}; expected one of {sorted(MODELS)}."
    )
  return MODELS[name](cfg, rngs=rngs, **dims)
