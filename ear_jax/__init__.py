"""ear-jax: EAR weakly supervised audio-visual video parsing in JAX/Flax.

`ear_jax.Parser` (ear_jax/parsing.py) parses features or raw videos of any
length with a finished stage-3 run; imported on first use, so that the
numpy-only modules (metrics, data/) stay free of JAX.

The stage configs live in `configs/` at the top of the repository and are
the package `ear_jax.configs` (pyproject.toml maps it; in a checkout that is
not installed, `_CheckoutConfigs` below maps it), so `ear-jax
--config=stage3` finds them from any folder and `configs` never lands in
site-packages as a top-level package.
"""

import importlib.abc
import importlib.util
import os
import sys

__version__ = "0.1.0"

_HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT_CONFIGS = os.path.join(os.path.dirname(_HERE), "configs")


class _CheckoutConfigs(importlib.abc.MetaPathFinder):
  """Finds `ear_jax.configs` in ../configs of a source checkout."""

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname != "ear_jax.configs":
      return None
    return importlib.util.spec_from_file_location(
        fullname, os.path.join(CHECKOUT_CONFIGS, "__init__.py"),
        submodule_search_locations=[CHECKOUT_CONFIGS])


# Last on the path: an installed ear_jax.configs (regular or editable) wins.
if (not os.path.isdir(os.path.join(_HERE, "configs"))
    and os.path.isfile(os.path.join(CHECKOUT_CONFIGS, "__init__.py"))
    and not any(isinstance(f, _CheckoutConfigs) for f in sys.meta_path)):
  sys.meta_path.append(_CheckoutConfigs())


def __getattr__(name):
  if name == "Parser":
    from ear_jax import parsing  # pylint: disable=g-import-not-at-top
    return parsing.Parser
  raise AttributeError(f"module 'ear_jax' has no attribute {name!r}")
