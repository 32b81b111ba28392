"""The unrolled CPU threefry lowering draws exactly JAX's default bits."""

import jax
import jax.numpy as jnp
import numpy as np

from ear_jax import cpu_prng


def test_unrolled_threefry_equals_the_rolled_default():
  assert cpu_prng.install()
  from jax._src.random import threefry2x32 as threefry  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  k1, k2 = (jnp.uint32(v) for v in rng.integers(0, 2**32, 2))
  # Above the size where the unrolled lowering takes over.
  shape = (3, cpu_prng.MIN_UNROLLED // 2 + 7)
  x1, x2 = (jnp.asarray(rng.integers(0, 2**32, shape), jnp.uint32)
            for _ in range(2))
  rolled = jax.jit(lambda *a: threefry._threefry2x32_lowering(  # pylint: disable=protected-access
      *a, use_rolled_loops=True))(k1, k2, x1, x2)
  installed = jax.jit(lambda *a: threefry.threefry2x32_p.bind(*a))(
      k1, k2, x1, x2)
  for a, b in zip(rolled, installed):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Large draws are unrolled (no loop), small ones keep the rolled loop.
  big = (2, cpu_prng.MIN_UNROLLED)
  hlo = jax.jit(lambda k: jax.random.bits(k, big)).lower(
      jax.random.key(3)).as_text()
  assert "while" not in hlo
  hlo = jax.jit(lambda k: jax.random.bits(k, (64, 33))).lower(
      jax.random.key(3)).as_text()
  assert "while" in hlo


def test_dropout_masks_unchanged_on_known_key():
  # jax.random.bits of key(0) as documented by JAX's threefry (partitionable).
  bits = np.asarray(jax.random.bits(jax.random.key(0), (4,)))
  from jax._src.random import threefry2x32 as threefry  # pylint: disable=g-import-not-at-top
  kd = jax.random.key_data(jax.random.key(0))
  hi, lo = jnp.zeros((4,), jnp.uint32), jnp.arange(4, dtype=jnp.uint32)
  ref = jax.jit(lambda a, b, c, d: threefry._threefry2x32_lowering(  # pylint: disable=protected-access
      a, b, c, d, use_rolled_loops=True))(kd[0], kd[1], hi, lo)
  np.testing.assert_array_equal(bits, np.asarray(ref[0]) ^ np.asarray(ref[1]))
