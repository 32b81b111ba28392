"""Tests for models/generator.py: shapes, masking, static branch, stable
AV log-probabilities, determinism, jit."""

# pylint: disable=invalid-name

from flax import nnx
import jax
import jax.numpy as jnp
from ml_collections import config_dict
import numpy as np
import pytest

from ear_jax import models as models_lib
from ear_jax.models import generator as generator_lib

B, T, C, DA, DV = 4, 10, 5, 8, 12


def _cfg(**kw):
  c = dict(
      name="generator",
      asymmetric=True,
      clip_dim=DV,
      clap_dim=DA,
      proj_hidden=32,
      hidden_dim=16,
      num_layers=2,
      num_heads=2,
      ffn_dim=32,
      dropout=0.3,
      logit_scale_a=3.2912,
      logit_scale_v=4.6052,
      static_mode="frozen_zeroshot",
      static_logit_scale_a=None,
      static_logit_scale_v=None,
      identical_layer_init=False,
      dtype="float32",
  )
  c.update(kw)
  return config_dict.ConfigDict(c)


def _batch(seed=0, lengths=(10, 7, 4, 0)):
  r = np.random.default_rng(seed)
  valid = np.zeros((B, T), np.float32)
  for b, n in enumerate(lengths):
    valid[b, :n] = 1
  return dict(
      clap=r.normal(size=(B, T, DA)).astype(np.float32) * valid[..., None],
      clip=r.normal(size=(B, T, DV)).astype(np.float32) * valid[..., None],
      valid=valid,
      video_mask=(valid.sum(1) > 0).astype(np.float32),
  )


def _text(seed=1):
  r = np.random.default_rng(seed)
  ta, tv = r.normal(size=(C, DA)), r.normal(size=(C, DV))
  ta /= np.linalg.norm(ta, axis=1, keepdims=True)
  tv /= np.linalg.norm(tv, axis=1, keepdims=True)
  return jnp.asarray(ta, jnp.float32), jnp.asarray(tv, jnp.float32)


# Cheap XLA compile for the jit-vs-eager check; eager calls share the per-op
# compile cache across tests (all tests use the same shapes).
FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}


def _functional(model, jit=False):
  graphdef, state = nnx.split(model)

  def apply(state, batch, ta, tv, key):
    m = nnx.merge(graphdef, state)
    if key is None:
      return m(batch, ta, tv, deterministic=True)
    return m(batch, ta, tv, deterministic=False, rngs=nnx.Rngs(dropout=key))

  if jit:
    apply = jax.jit(apply, compiler_options=FAST_COMPILE)
  return apply, state


ASYM_KEYS = {
    "z_a",
    "z_v",
    "z_a_sta",
    "z_v_sta",
    "logp_av1",
    "log1mp_av1",
    "logp_av2",
    "log1mp_av2",
    "p_av",
}
SYM_KEYS = {"z_a", "z_v", "z_a_sta", "z_v_sta", "logp_av", "log1mp_av", "p_av"}


@pytest.mark.parametrize("asymmetric", [True, False])
@pytest.mark.parametrize(
    "static_mode", ["frozen_zeroshot", "shared_mlp_no_temporal"]
)
def test_shapes_and_keys(asymmetric, static_mode):
  cfg = _cfg(asymmetric=asymmetric, static_mode=static_mode, num_layers=1)
  model = models_lib.get_model("generator", cfg, rngs=nnx.Rngs(0))
  apply, state = _functional(model)
  out = apply(state, _batch(), *_text(), jax.random.key(0))
  assert set(out) == (ASYM_KEYS if asymmetric else SYM_KEYS)
  for k, v in out.items():
    assert v.shape == (B, T, C), k
    assert np.isfinite(np.asarray(v)).all(), k
  p = np.asarray(out["p_av"])
  assert ((p >= 0) & (p <= 1)).all()


def test_jit_matches_eager_and_dropout():
  model = generator_lib.Generator(_cfg(num_layers=1), rngs=nnx.Rngs(0))
  batch, (ta, tv) = _batch(), _text()
  apply, state = _functional(model)
  jitted, _ = _functional(model, jit=True)
  eager = apply(state, batch, ta, tv, None)
  out_jit = jitted(state, batch, ta, tv, None)
  for k in eager:
    np.testing.assert_allclose(eager[k], out_jit[k], rtol=1e-4, atol=1e-5)
  again = apply(state, batch, ta, tv, None)
  np.testing.assert_array_equal(eager["z_a"], again["z_a"])
  d1 = apply(state, batch, ta, tv, jax.random.key(1))
  d2 = apply(state, batch, ta, tv, jax.random.key(1))
  d3 = apply(state, batch, ta, tv, jax.random.key(2))
  np.testing.assert_array_equal(d1["z_v"], d2["z_v"])
  assert not np.allclose(d1["z_v"], d3["z_v"])
  assert not np.allclose(d1["z_v"], eager["z_v"])


def test_padding_content_does_not_change_valid_outputs():
  model = generator_lib.Generator(_cfg(), rngs=nnx.Rngs(0))
  apply, state = _functional(model)
  batch, text = _batch(), _text()
  noisy = dict(batch)
  r = np.random.default_rng(7)
  pad = (1 - batch["valid"])[..., None]
  noisy["clap"] = batch["clap"] + 50 * pad * r.normal(size=(B, T, DA))
  noisy["clip"] = batch["clip"] + 50 * pad * r.normal(size=(B, T, DV))
  noisy = {k: jnp.asarray(v, jnp.float32) for k, v in noisy.items()}
  o1, o2 = apply(state, batch, *text, None), apply(state, noisy, *text, None)
  ok = batch["valid"] > 0
  for k in o1:
    np.testing.assert_allclose(
        np.asarray(o1[k])[ok], np.asarray(o2[k])[ok], rtol=1e-5, atol=1e-5
    )
  # The features did change on the padding, so the check is not vacuous.
  assert not np.allclose(np.asarray(o1["z_a"])[~ok], np.asarray(o2["z_a"])[~ok])


def test_av_log_probabilities_match_definitions():
  model = generator_lib.Generator(_cfg(num_layers=1), rngs=nnx.Rngs(0))
  out = model(_batch(), *_text(), deterministic=True)
  sig = lambda z: 1 / (1 + np.exp(-np.asarray(z, np.float64)))
  p1 = sig(out["z_v"]) * sig(out["z_a_sta"])  # Eq. (6)
  p2 = sig(out["z_a"]) * sig(out["z_v_sta"])  # Eq. (7)
  np.testing.assert_allclose(np.exp(out["logp_av1"]), p1, rtol=1e-5)
  np.testing.assert_allclose(np.exp(out["logp_av2"]), p2, rtol=1e-5)
  np.testing.assert_allclose(np.exp(out["log1mp_av1"]), 1 - p1, rtol=1e-5)
  np.testing.assert_allclose(np.exp(out["log1mp_av2"]), 1 - p2, rtol=1e-5)
  np.testing.assert_allclose(out["p_av"], (p1 + p2) / 2, rtol=1e-5)


def test_frozen_static_branch_is_zero_shot_and_constant():
  cfg = _cfg(num_layers=1, static_logit_scale_a=2.0)
  model = generator_lib.Generator(cfg, rngs=nnx.Rngs(0))
  batch, (ta, tv) = _batch(), _text()
  out = model(batch, ta, tv, deterministic=True)
  fa = batch["clap"] / np.maximum(
      np.linalg.norm(batch["clap"], axis=-1, keepdims=True), 1e-12
  )
  fv = batch["clip"] / np.maximum(
      np.linalg.norm(batch["clip"], axis=-1, keepdims=True), 1e-12
  )
  np.testing.assert_allclose(
      out["z_a_sta"], 2.0 * fa @ np.asarray(ta).T, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
      out["z_v_sta"], 4.6052 * fv @ np.asarray(tv).T, rtol=1e-5, atol=1e-6
  )
  # Eq. (5) is a constant of the loss: no gradient through it.
  g = jax.grad(
      lambda x: jnp.sum(
          model(dict(batch, clap=x), ta, tv, deterministic=True)["z_a_sta"]
      )
  )(jnp.asarray(batch["clap"]))
  np.testing.assert_array_equal(np.asarray(g), 0)


def test_shared_mlp_static_branch_is_trainable():
  cfg = _cfg(num_layers=1, static_mode="shared_mlp_no_temporal")
  model = generator_lib.Generator(cfg, rngs=nnx.Rngs(0))
  batch, (ta, tv) = _batch(), _text()
  graphdef, params = nnx.split(model)

  def f(params):
    m = nnx.merge(graphdef, params)
    return jnp.sum(m(batch, ta, tv, deterministic=True)["z_a_sta"])

  g = jax.grad(f)(params)
  assert np.abs(np.asarray(g["audio"]["proj"]["fc1"]["kernel"][...])).sum() > 0
  enc = jax.tree.leaves(g["audio"]["layers"])
  assert all(np.all(np.asarray(x) == 0) for x in enc)  # no encoder


def test_log1mexp_is_stable():
  z = jnp.array([-200.0, -30.0, -1.0, 0.0, 1.0, 30.0, 200.0])
  f = lambda z: generator_lib.log1mexp(jax.nn.log_sigmoid(z) * 2)
  v = f(z)
  p = (1 / (1 + np.exp(-np.asarray(z, np.float64)))) ** 2
  np.testing.assert_allclose(v[1:5], np.log1p(-p[1:5]), rtol=1e-5)
  assert np.isfinite(np.asarray(v)).all() and v[-1] >= -70
  g = jax.grad(lambda z: jnp.sum(f(z)))(z)
  assert np.isfinite(np.asarray(g)).all()


def test_identical_layer_init_and_errors():
  model = generator_lib.Generator(
      _cfg(identical_layer_init=True), rngs=nnx.Rngs(0)
  )
  l0, l1 = model.audio.layers
  np.testing.assert_array_equal(
      l0.attn.q_proj.kernel[...], l1.attn.q_proj.kernel[...]
  )
  with pytest.raises(ValueError, match="static_mode"):
    generator_lib.Generator(_cfg(static_mode="x"), rngs=nnx.Rngs(0))
  ta, tv = _text()
  with pytest.raises(ValueError, match="same encoder"):
    model(_batch(), tv, tv, deterministic=True)
  with pytest.raises(ValueError, match="generator"):
    models_lib.get_model("nope", _cfg(), rngs=nnx.Rngs(0))


def test_params_are_float32_with_bfloat16_compute():
  model = generator_lib.Generator(
      _cfg(num_layers=1, dtype="bfloat16"), rngs=nnx.Rngs(0)
  )
  leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert all(x.dtype == jnp.float32 for x in leaves)
  apply, state = _functional(model)
  out = apply(state, _batch(), *_text(), None)
  assert out["z_a"].dtype == jnp.float32
  assert np.isfinite(np.asarray(out["logp_av1"])).all()
