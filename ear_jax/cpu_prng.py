"""Faster dropout masks on CPU: large threefry draws lowered unrolled.

JAX lowers its threefry2x32 hash on CPU as a rolled loop (five passes over
memory per draw, for faster compiles); on GPU/TPU it is unrolled. Dropout
draws ~25M numbers per full-size stage-3 step, and the rolled form made that
~20% of the CPU step (25 ns per number vs 1.5 ns unrolled). `install()`
registers a CPU rule that uses JAX's own unrolled lowering for draws of at
least `MIN_UNROLLED` numbers and the rolled one below: the same arithmetic
either way, so every random bit is unchanged; only speed differs. Small draws
(tiny configs, tests) stay rolled, because the unrolled form costs several
times the compile time per draw site. Installed when ear_jax.models is
imported; a JAX without these internals keeps its default.
"""

from __future__ import annotations

import math

from absl import logging

MIN_UNROLLED = 1 << 16  # numbers per draw; below it the rolled loop is kept
_INSTALLED = []


def install() -> bool:
  """Registers the size-dependent threefry lowering for CPU; True if on."""
  if _INSTALLED:
    return _INSTALLED[0]
  try:
    # pylint: disable=g-import-not-at-top,protected-access
    from jax._src.interpreters import mlir
    from jax._src.random import threefry2x32 as threefry
    unrolled = threefry._threefry2x32_lowering_rule
    rolled = threefry._threefry2x32_cpu_lowering_rule

    def rule(ctx, *args):
      size = math.prod(ctx.avals_out[0].shape)
      big = isinstance(size, int) and size >= MIN_UNROLLED
      return (unrolled if big else rolled)(ctx, *args)

    mlir.register_lowering(threefry.threefry2x32_p, rule, platform="cpu")
    ok = True
  except (ImportError, AttributeError) as e:  # a JAX with other internals
    logging.info("ear_jax.cpu_prng: default threefry lowering kept (%s)", e)
    ok = False
  _INSTALLED.append(ok)
  return ok
