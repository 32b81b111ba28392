"""Faster dropout masks on CPU: the threefry hash lowered unrolled.

JAX lowers its threefry2x32 hash on CPU as a rolled loop (five passes over
memory per draw, for faster compiles); on GPU/TPU it is unrolled. Dropout
draws ~25M numbers per stage-3 step, and the rolled form made that ~20% of
the CPU step (25 ns per number vs 1.5 ns unrolled). `install()` registers
JAX's own unrolled lowering for CPU too: the same arithmetic, so every random
bit (and every number of a run) is unchanged; only speed differs. Installed
when ear_jax is imported; a JAX without these internals keeps its default.
"""

from __future__ import annotations

from absl import logging

_INSTALLED = []


def install() -> bool:
  """Registers the unrolled threefry lowering for CPU; True if active."""
  if _INSTALLED:
    return _INSTALLED[0]
  try:
    # pylint: disable=g-import-not-at-top
    from jax._src.interpreters import mlir
    from jax._src.random import threefry2x32 as threefry
    mlir.register_lowering(threefry.threefry2x32_p,
                           threefry._threefry2x32_lowering_rule,  # pylint: disable=protected-access
                           platform="cpu")
    ok = True
  except (ImportError, AttributeError) as e:  # a JAX with other internals
    logging.info("ear_jax.cpu_prng: default threefry lowering kept (%s)", e)
    ok = False
  _INSTALLED.append(ok)
  return ok
