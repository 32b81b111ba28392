"""ear-jax: EAR weakly supervised audio-visual video parsing in JAX/Flax.

`ear_jax.Parser` (ear_jax/parsing.py) parses features or raw videos of any
length with a finished stage-3 run; imported on first use, so that the
numpy-only modules (metrics, data/) stay free of JAX.
"""

__version__ = "0.1.0"


def __getattr__(name):
  if name == "Parser":
    from ear_jax import parsing  # pylint: disable=g-import-not-at-top
    return parsing.Parser
  raise AttributeError(f"module 'ear_jax' has no attribute {name!r}")
