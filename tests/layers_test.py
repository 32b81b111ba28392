"""Tests for models/layers.py: PyTorch init, attention, post-LN blocks,
masked BatchNorm with torch running statistics."""

# pylint: disable=invalid-name

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ear_jax.models import layers as layers_lib

B, T, D, H = 4, 10, 16, 2


def _np(x):
  return np.asarray(x, np.float64)


def test_dense_torch_init_bounds():
  layer = layers_lib.Dense(256, 128, rngs=nnx.Rngs(0))
  bound = 1 / np.sqrt(256)
  k, b = _np(layer.kernel[...]), _np(layer.bias[...])
  assert k.shape == (256, 128) and b.shape == (128,)
  assert np.abs(k).max() <= bound and np.abs(b).max() <= bound
  assert np.abs(k).max() > 0.98 * bound
  # U(-a, a) has std a / sqrt(3).
  np.testing.assert_allclose(k.std(), bound / np.sqrt(3), rtol=0.02)
  assert abs(k.mean()) < 0.01 * bound * 10


def test_attention_torch_init():
  d = 64
  mha = layers_lib.MultiHeadAttention(d, 4, rngs=nnx.Rngs(0))
  xavier = np.sqrt(6 / (4 * d))
  for proj in (mha.q_proj, mha.k_proj, mha.v_proj):
    k = _np(proj.kernel[...])
    assert np.abs(k).max() <= xavier and np.abs(k).max() > 0.95 * xavier
    np.testing.assert_array_equal(_np(proj.bias[...]), 0)
  k = _np(mha.out_proj.kernel[...])
  assert np.abs(k).max() <= 1 / np.sqrt(d)
  assert np.abs(k).max() > 0.95 / np.sqrt(d)
  np.testing.assert_array_equal(_np(mha.out_proj.bias[...]), 0)


def _np_mha(mha, q, kv, mask=None):
  """numpy reference of torch multi-head attention (no dropout)."""
  p = lambda l, x: x @ _np(l.kernel[...]) + _np(l.bias[...])
  Bq, Q, d = q.shape
  K = kv.shape[1]
  h = mha.num_heads
  dh = d // h
  qh = p(mha.q_proj, q).reshape(Bq, Q, h, dh).transpose(0, 2, 1, 3)
  kh = p(mha.k_proj, kv).reshape(Bq, K, h, dh).transpose(0, 2, 1, 3)
  vh = p(mha.v_proj, kv).reshape(Bq, K, h, dh).transpose(0, 2, 1, 3)
  s = qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(dh)
  if mask is not None:
    s = np.where(mask, s, -1e10)
  s = s - s.max(-1, keepdims=True)
  w = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
  o = (w @ vh).transpose(0, 2, 1, 3).reshape(Bq, Q, d)
  return p(mha.out_proj, o), w


def test_attention_matches_numpy_reference():
  mha = layers_lib.MultiHeadAttention(D, H, dropout=0.5, rngs=nnx.Rngs(1))
  q = jax.random.normal(jax.random.key(0), (B, 3, D))
  kv = jax.random.normal(jax.random.key(1), (B, 5, D))
  got = mha(q, kv, deterministic=True)
  want, _ = _np_mha(mha, _np(q), _np(kv))
  np.testing.assert_allclose(_np(got), want, atol=1e-5)


def test_attention_mask_padded_rows_uniform_no_nan():
  mha = layers_lib.MultiHeadAttention(D, H, rngs=nnx.Rngs(1))
  x = jax.random.normal(jax.random.key(0), (B, T, D))
  valid = np.ones((B, T), bool)
  valid[1, 6:] = False
  valid[3, :] = False  # a dummy video: every row masked
  mask = valid[:, None, :, None] & valid[:, None, None, :]
  w, _ = mha.attention_weights(x, x, jnp.asarray(mask))
  w = _np(w)
  assert np.isfinite(w).all()
  np.testing.assert_allclose(w.sum(-1), 1, atol=1e-6)
  assert (w[1, :, :6, 6:] == 0).all()  # valid queries ignore padded keys
  np.testing.assert_allclose(w[1, :, 7], 1 / T, atol=1e-6)  # padded query
  np.testing.assert_allclose(w[3], 1 / T, atol=1e-6)
  out = mha(x, x, jnp.asarray(mask), deterministic=True)
  want, _ = _np_mha(mha, _np(x), _np(x), mask)
  np.testing.assert_allclose(_np(out), want, atol=1e-5)


def test_attention_rejects_bad_mask_and_heads():
  with pytest.raises(ValueError, match="divisible"):
    layers_lib.MultiHeadAttention(10, 3, rngs=nnx.Rngs(0))
  mha = layers_lib.MultiHeadAttention(D, H, rngs=nnx.Rngs(0))
  x = jnp.ones((B, T, D))
  with pytest.raises(ValueError, match="Tq, Tk"):
    mha(x, x, jnp.ones((B, T, T), bool), deterministic=True)


def _np_ln(x, ln):
  m = x.mean(-1, keepdims=True)
  v = ((x - m) ** 2).mean(-1, keepdims=True)
  return (x - m) / np.sqrt(v + 1e-5) * _np(ln.scale[...]) + _np(ln.bias[...])


def test_encoder_layer_is_post_ln():
  layer = layers_lib.EncoderLayer(D, H, 32, dropout=0.3, rngs=nnx.Rngs(2))
  x = jax.random.normal(jax.random.key(0), (B, T, D))
  got = _np(layer(x, deterministic=True))
  a, _ = _np_mha(layer.attn, _np(x), _np(x))
  x1 = _np_ln(_np(x) + a, layer.norm1)
  f = layer.ffn
  h = np.maximum(x1 @ _np(f.linear1.kernel[...]) + _np(f.linear1.bias[...]), 0)
  h = h @ _np(f.linear2.kernel[...]) + _np(f.linear2.bias[...])
  want = _np_ln(x1 + h, layer.norm2)
  np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("kind", ["encoder", "unit", "decoder"])
def test_dropout_deterministic_and_keyed(kind):
  r = nnx.Rngs(3)
  if kind == "encoder":
    m = layers_lib.EncoderLayer(D, H, 32, dropout=0.3, rngs=r)
    f = lambda **kw: m(x, **kw)
  elif kind == "unit":
    m = layers_lib.CrossAttentionUnit(D, H, 32, dropout=0.3, rngs=r)
    f = lambda **kw: m(x, y, **kw)
  else:
    m = layers_lib.DecoderLayer(D, H, 32, dropout=0.3, rngs=r)
    f = lambda **kw: m(x, y, **kw)
  x = jax.random.normal(jax.random.key(0), (B, T, D))
  y = jax.random.normal(jax.random.key(1), (B, 7, D))
  d1, d2 = f(deterministic=True), f(deterministic=True)
  np.testing.assert_array_equal(_np(d1), _np(d2))
  s1 = f(deterministic=False, rngs=nnx.Rngs(dropout=5))
  s2 = f(deterministic=False, rngs=nnx.Rngs(dropout=5))
  s3 = f(deterministic=False, rngs=nnx.Rngs(dropout=6))
  np.testing.assert_array_equal(_np(s1), _np(s2))
  assert not np.allclose(_np(s1), _np(s3))
  assert not np.allclose(_np(s1), _np(d1))
  assert d1.shape == (B, T, D)
  with pytest.raises(ValueError, match="rngs"):
    f(deterministic=False)


def test_masked_batchnorm_equals_plain_bn_on_real_subset():
  bn = layers_lib.MaskedBatchNorm(6, momentum=0.9)
  bn.scale[...] = jnp.arange(1.0, 7.0)
  bn.bias[...] = jnp.linspace(-1, 1, 6)
  x = np.random.default_rng(0).normal(size=(5, T, 3, 6)).astype(np.float32)
  real = np.array([1, 1, 0, 1, 0], bool)
  x[~real] = 1e3  # dummy content must not matter
  mask = np.broadcast_to(real[:, None, None], (5, T, 3))
  y = _np(bn(jnp.asarray(x), jnp.asarray(mask), use_running_average=False))
  xr = _np(x[real]).reshape(-1, 6)
  n = xr.shape[0]
  mu, var = xr.mean(0), xr.var(0)  # biased, for normalisation
  want = (_np(x[real]) - mu) / np.sqrt(var + 1e-5) * np.arange(1, 7)
  want += np.linspace(-1, 1, 6)
  np.testing.assert_allclose(y[real], want, rtol=1e-4, atol=1e-4)
  # torch running update: momentum 0.1, unbiased variance.
  np.testing.assert_allclose(_np(bn.mean[...]), 0.1 * mu, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      _np(bn.var[...]), 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5
  )
  # A second step composes the same way.
  m1, v1 = _np(bn.mean[...]), _np(bn.var[...])
  bn(jnp.asarray(x), jnp.asarray(mask), use_running_average=False)
  np.testing.assert_allclose(_np(bn.mean[...]), 0.9 * m1 + 0.1 * mu, rtol=1e-5)
  np.testing.assert_allclose(
      _np(bn.var[...]), 0.9 * v1 + 0.1 * var * n / (n - 1), rtol=1e-5
  )


def test_masked_batchnorm_eval_uses_running_stats_and_no_update():
  bn = layers_lib.MaskedBatchNorm(4)
  bn.mean[...] = jnp.array([1.0, 2.0, 3.0, 4.0])
  bn.var[...] = jnp.array([4.0, 1.0, 0.25, 9.0])
  x = jnp.ones((2, 3, 4)) * 5
  y = bn(x, use_running_average=True)
  want = (5 - np.array([1, 2, 3, 4])) / np.sqrt(
      np.array([4, 1, 0.25, 9]) + 1e-5
  )
  np.testing.assert_allclose(_np(y[0, 0]), want, rtol=1e-5)
  np.testing.assert_array_equal(_np(bn.mean[...]), [1, 2, 3, 4])
  # No real entry: statistics stay, output stays finite.
  bn(x, jnp.zeros((2, 3), bool), use_running_average=False)
  np.testing.assert_array_equal(_np(bn.mean[...]), [1, 2, 3, 4])
  np.testing.assert_array_equal(_np(bn.var[...]), [4, 1, 0.25, 9])


def test_masked_batchnorm_is_a_batch_stat():
  bn = layers_lib.MaskedBatchNorm(4)
  _, stats, params = nnx.split(bn, nnx.BatchStat, nnx.Param)
  assert set(stats.keys()) == {"mean", "var"}
  assert set(params.keys()) == {"scale", "bias"}


def test_stack_layers_identical_init():
  make = lambda r: layers_lib.Dense(4, 4, rngs=r)
  same = layers_lib.stack_layers(make, 3, identical=True, rngs=nnx.Rngs(0))
  diff = layers_lib.stack_layers(make, 3, identical=False, rngs=nnx.Rngs(0))
  for l in same[1:]:
    np.testing.assert_array_equal(_np(l.kernel[...]), _np(same[0].kernel[...]))
  assert not np.allclose(_np(diff[1].kernel[...]), _np(diff[0].kernel[...]))


def test_bfloat16_compute_keeps_f32_params():
  layer = layers_lib.EncoderLayer(D, H, 32, dtype="bfloat16", rngs=nnx.Rngs(0))
  ref = layers_lib.EncoderLayer(D, H, 32, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (B, T, D))
  y = layer(x, deterministic=True)
  assert y.dtype == jnp.float32
  params = nnx.state(layer, nnx.Param)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  np.testing.assert_allclose(_np(y), _np(ref(x, deterministic=True)), atol=0.1)
  with pytest.raises(ValueError, match="bfloat16"):
    layers_lib.get_dtype("float16")


@pytest.mark.parametrize("shape,broadcast_dims", [
    ((4, 10, 2048), ()),      # a large draw (unrolled threefry on CPU)
    ((3, 5, 8), ()),          # a small one (rolled)
    ((4, 10, 2048), (1,)),    # a mask shared over time
])
def test_dropout_bit_identical_to_nnx(shape, broadcast_dims):
  x = jax.random.normal(jax.random.key(3), shape)
  ours = layers_lib.Dropout(0.3, broadcast_dims=broadcast_dims)
  ref = nnx.Dropout(0.3, broadcast_dims=broadcast_dims)

  def run(mod, x):
    def f(x):
      return jnp.sum(jnp.sin(mod(x, deterministic=False,
                                 rngs=nnx.Rngs(dropout=7))))
    return jax.jit(jax.value_and_grad(f))(x)

  (v1, g1), (v2, g2) = run(ours, x), run(ref, x)
  np.testing.assert_array_equal(_np(g1), _np(g2))
  assert float(v1) == float(v2)
  assert (_np(g1) == 0).mean() > 0.2  # the mask really drops entries
  y = ours(x, deterministic=False, rngs=jax.random.key(5))
  np.testing.assert_array_equal(
      _np(y), _np(ref(x, deterministic=False, rngs=jax.random.key(5))))
  np.testing.assert_array_equal(_np(ours(x, deterministic=True)), _np(x))


def test_dropout_without_rngs_is_a_clear_error():
  x = jnp.ones((2, 3))
  with pytest.raises(ValueError, match="rngs"):  # small: nnx.Dropout's path
    layers_lib.Dropout(0.5)(x, deterministic=False)
  with pytest.raises(TypeError, match="needs rngs"):  # large: the cond path
    layers_lib.Dropout(0.5)(jnp.ones((2, 1 << 16)), deterministic=False)
  # deterministic from the constructor, as in nnx.Dropout
  np.testing.assert_array_equal(
      _np(layers_lib.Dropout(0.5, deterministic=True)(x)), _np(x))
