"""Tests for models/han.py and models/parser.py: shapes of every switch, HAN
sequential update, MMIL axes, ERM adjacency and masked BatchNorm, jit."""

# pylint: disable=invalid-name

import functools

from flax import nnx
import jax
import jax.numpy as jnp
from ml_collections import config_dict
import numpy as np
import pytest

from ear_jax import models as models_lib
from ear_jax.models import han as han_lib
from ear_jax.models import parser as parser_lib

B, T, C, DA, DV, D = 4, 10, 5, 8, 12, 16
OUT_SHAPES = dict(
    global_prob=(B, C),
    a_prob=(B, C),
    v_prob=(B, C),
    a_logits=(B, T, C),
    v_logits=(B, T, C),
    a_feat=(B, T, D),
    v_feat=(B, T, D),
)


def _cfg(**kw):
  c = dict(
      name="ear",
      hidden_dim=D,
      num_heads=2,
      ffn_dim=32,
      dropout=0.1,
      audio_proj_hidden=32,
      han_layers=2,
      temporal_layers=1,
      fusion_layers=1,
      amdf="asymmetric",
      aggregation="decoder",
      erm="alternate",
      erm_layers=2,
      node_dim=4,
      leaky_slope=0.2,
      erm_keep_aggregation=True,
      erm_attention_heads=2,
      bn_momentum=0.9,
      adjacency_init="identity",
      dtype="float32",
  )
  c.update(kw)
  return config_dict.ConfigDict(c)


def _model(name="ear", seed=0, **kw):
  return models_lib.get_model(
      name,
      _cfg(name=name, **kw),
      rngs=nnx.Rngs(seed),
      in_dim_a=DA,
      in_dim_v=DV,
      num_classes=C,
  )


def _batch(n=B, seed=0, video_mask=None):
  r = np.random.default_rng(seed)
  return dict(
      audio=jnp.asarray(r.normal(size=(n, T, DA)), jnp.float32),
      visual=jnp.asarray(r.normal(size=(n, T, DV)), jnp.float32),
      video_mask=jnp.asarray(
          np.ones(n) if video_mask is None else video_mask, jnp.float32
      ),
  )


# Cheap XLA compiles for the jit-vs-eager checks; eager calls share the
# per-op compile cache across tests (all tests use the same shapes).
FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}


def _apply(graphdef, params, rest, batch, key):
  """Fresh model from the state; returns outputs and the new BatchStats."""
  # Copies: an eager merge would otherwise share (and mutate) the Variables.
  copy = lambda tree: jax.tree.map(jnp.array, tree)
  m = nnx.merge(graphdef, copy(params), copy(rest))
  if key is None:
    out = m(batch, deterministic=True)
  else:
    out = m(batch, deterministic=False, rngs=nnx.Rngs(dropout=key))
  return out, copy(nnx.state(m, nnx.BatchStat))


def _functional(model, jit=False):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  fn = functools.partial(_apply, graphdef)
  if jit:
    fn = jax.jit(fn, compiler_options=FAST_COMPILE)
  return fn, params, rest


def _check_outputs(out):
  assert set(out) == set(OUT_SHAPES)
  for k, shape in OUT_SHAPES.items():
    assert out[k].shape == shape, k
    assert np.isfinite(np.asarray(out[k])).all(), k
  g = np.asarray(out["global_prob"])
  assert ((g >= 0) & (g <= 1)).all()


# ------------------------------------------------------------------- HAN --


def test_han_shapes_jit_and_dropout():
  model = _model("han", han_layers=1)
  batch = _batch()
  apply, params, rest = _functional(model)
  jitted, params, rest = _functional(model, jit=True)
  eager, _ = apply(params, rest, batch, None)
  _check_outputs(eager)
  out_jit, _ = jitted(params, rest, batch, None)
  for k in eager:
    np.testing.assert_allclose(eager[k], out_jit[k], rtol=1e-4, atol=1e-5)
  again, _ = apply(params, rest, batch, None)
  np.testing.assert_array_equal(eager["a_logits"], again["a_logits"])
  d1, _ = apply(params, rest, batch, jax.random.key(1))
  d2, _ = apply(params, rest, batch, jax.random.key(1))
  d3, _ = apply(params, rest, batch, jax.random.key(2))
  _check_outputs(d1)
  np.testing.assert_array_equal(d1["a_logits"], d2["a_logits"])
  assert not np.allclose(d1["a_logits"], d3["a_logits"])
  np.testing.assert_allclose(
      model.classify(eager["a_feat"]), eager["a_logits"], rtol=1e-5, atol=1e-6
  )


def test_han_layers_are_shared_and_update_is_sequential():
  model = _model("han", han_layers=1)
  # One weight set per layer, shared by the a and v passes.
  assert len(model.encoder.layers) == 1
  layer = model.encoder.layers[0]
  r = np.random.default_rng(0)
  a = jnp.asarray(r.normal(size=(B, T, D)), jnp.float32)
  v = jnp.asarray(r.normal(size=(B, T, D)), jnp.float32)
  a2, v2 = model.encoder(a, v, deterministic=True)
  a_new = layer(a, v, deterministic=True)
  np.testing.assert_allclose(a2, a_new, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      v2, layer(v, a_new, deterministic=True), rtol=1e-5, atol=1e-5
  )
  assert not np.allclose(v2, layer(v, a, deterministic=True), atol=1e-3)


def test_mmil_softmax_axes():
  head = han_lib.MMILHead(D, C, rngs=nnx.Rngs(0))
  r = np.random.default_rng(0)
  a = jnp.asarray(r.normal(size=(B, T, D)), jnp.float32)
  v = jnp.asarray(r.normal(size=(B, T, D)), jnp.float32)
  out = head(a, v)
  assert out["frame_att"].shape == (B, T, 2, C)
  np.testing.assert_allclose(out["frame_att"].sum(axis=1), 1, atol=1e-6)
  np.testing.assert_allclose(out["av_att"].sum(axis=2), 1, atol=1e-6)
  p = jax.nn.sigmoid(jnp.stack([out["a_logits"], out["v_logits"]], axis=2))
  temporal = out["frame_att"] * p
  np.testing.assert_allclose(
      out["global_prob"], (temporal * out["av_att"]).sum((1, 2)), rtol=1e-6
  )
  np.testing.assert_allclose(out["a_prob"], temporal[:, :, 0].sum(1), rtol=1e-6)
  np.testing.assert_allclose(out["v_prob"], temporal[:, :, 1].sum(1), rtol=1e-6)
  # Audio is index 0: a_logits comes from the audio features.
  np.testing.assert_allclose(out["a_logits"], head.classify(a), rtol=1e-6)


def test_projection_dims_checked():
  model = _model("han")
  bad = dict(_batch(), audio=jnp.ones((B, T, DA + 1)))
  with pytest.raises(ValueError, match="built for"):
    model(bad, deterministic=True)


# ------------------------------------------------------------------- EAR --

EAR_VARIANTS = [
    dict(),
    dict(amdf="none"),
    dict(amdf="msa_mca", fusion_layers=2),
    dict(amdf="han", han_layers=1),
    dict(aggregation="sum"),
    dict(erm="none"),
    dict(erm="none", erm_keep_aggregation=False),
    dict(erm="a_v_then_av"),
    dict(erm="no_uni"),
    dict(erm="no_multi", erm_layers=1),
    dict(erm="attention", erm_layers=1),
    dict(erm="attention_direct", erm_layers=1),
]


@pytest.mark.parametrize(
    "kw",
    EAR_VARIANTS,
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default",
)
def test_ear_variant_shapes(kw):
  model = _model(**kw)
  apply, params, rest = _functional(model)
  out, _ = apply(params, rest, _batch(), jax.random.key(0))
  _check_outputs(out)


def test_ear_jit_matches_eager_and_dropout():
  model = _model(erm_layers=1)
  batch = _batch()
  apply, params, rest = _functional(model)
  jitted, _, _ = _functional(model, jit=True)
  eager, _ = apply(params, rest, batch, None)
  _check_outputs(eager)
  out_jit, _ = jitted(params, rest, batch, None)
  for k in eager:
    np.testing.assert_allclose(eager[k], out_jit[k], rtol=1e-4, atol=1e-5)
  d1, s1 = apply(params, rest, batch, jax.random.key(3))
  d2, s2 = apply(params, rest, batch, jax.random.key(3))
  d3, _ = apply(params, rest, batch, jax.random.key(4))
  np.testing.assert_array_equal(d1["v_logits"], d2["v_logits"])
  assert not np.allclose(d1["v_logits"], d3["v_logits"])
  for x, y in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_allclose(
      model.classify(eager["v_feat"]), eager["v_logits"], rtol=1e-5, atol=1e-6
  )


def test_ear_adjacencies_identity_init_and_keys():
  model = _model(erm_layers=3)
  adj = model.adjacencies()
  want = {
      f"{g}/layer{l}" for g in ("uni_a", "uni_v", "multi") for l in range(3)
  }
  assert set(adj) == want
  for k, a in adj.items():
    n = 2 * C if k.startswith("multi") else C
    np.testing.assert_array_equal(np.asarray(a), np.eye(n))
  assert set(_model(erm="no_uni").adjacencies()) == {
      "multi/layer0",
      "multi/layer1",
  }
  assert set(_model(erm="no_multi").adjacencies()) == {
      "uni_a/layer0",
      "uni_a/layer1",
      "uni_v/layer0",
      "uni_v/layer1",
  }
  assert not _model(erm="none").adjacencies()


def test_erm_schedule():
  alt = _model(erm_layers=2).erm.schedule
  assert alt == (("uni", 0), ("multi", 0), ("uni", 1), ("multi", 1))
  seq = _model(erm="a_v_then_av", erm_layers=2).erm.schedule
  assert seq == (("uni", 0), ("uni", 1), ("multi", 0), ("multi", 1))


def test_graph_step_matches_numpy():
  step = parser_lib.GraphStep(
      3, 4, leaky_slope=0.2, bn_momentum=0.9, rngs=nnx.Rngs(0)
  )
  step.adjacency[...] = jnp.asarray(np.arange(9.0).reshape(3, 3) / 9)
  r = np.random.default_rng(0)
  x = r.normal(size=(2, 5, 3, 4)).astype(np.float32)
  vm = np.array([1.0, 0.0], np.float32)
  y = np.asarray(step(jnp.asarray(x), jnp.asarray(vm), deterministic=False))
  h = x @ np.asarray(step.conv.kernel[...]) + np.asarray(step.conv.bias[...])
  h = np.einsum("ij,btje->btie", np.arange(9.0).reshape(3, 3) / 9, h)
  real = h[:1].reshape(-1, 4)
  h = (h - real.mean(0)) / np.sqrt(real.var(0) + 1e-5)
  want = np.where(h > 0, h, 0.2 * h)
  np.testing.assert_allclose(y[:1], want[:1], rtol=1e-4, atol=1e-4)


def test_ear_padding_invariance_and_batch_stats():
  """Dummy videos change neither the real outputs nor the BN statistics."""
  model = _model(dropout=0.0)
  apply, params, rest = _functional(model)
  vm = np.array([1, 1, 1, 0], np.float32)
  b1 = _batch(seed=1, video_mask=vm)
  b2 = dict(b1)
  b2["audio"] = b1["audio"].at[3].set(9.0)
  b2["visual"] = b1["visual"].at[3].set(-7.0)
  # deterministic=False: batch statistics; dropout is 0, so no key is used.
  o1, s1 = apply(params, rest, b1, jax.random.key(0))
  o2, s2 = apply(params, rest, b2, jax.random.key(0))
  for k in o1:
    np.testing.assert_allclose(
        o1[k][:3], o2[k][:3], rtol=1e-5, atol=1e-6, err_msg=k
    )
  assert not np.allclose(o1["a_logits"][3], o2["a_logits"][3])
  for x, y in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  # Training moved the running stats away from the init; eval does not.
  stats0 = jax.tree.leaves(rest)
  assert any(not np.allclose(a, b) for a, b in zip(stats0, jax.tree.leaves(s1)))
  _, s_eval = apply(params, rest, b1, None)
  for a, b in zip(stats0, jax.tree.leaves(s_eval)):
    np.testing.assert_array_equal(a, b)


def test_ear_invalid_switches():
  for kw, match in (
      (dict(amdf="x"), "amdf"),
      (dict(erm="x"), "erm"),
      (dict(aggregation="x"), "aggregation"),
      (dict(adjacency_init="random"), "adjacency_init"),
  ):
    with pytest.raises(ValueError, match=match):
      _model(**kw)
  with pytest.raises(ValueError, match="rngs"):
    _model()(_batch(), deterministic=False)


def test_registry():
  assert set(models_lib.MODELS) == {"generator", "han", "ear"}
  assert isinstance(_model("han"), han_lib.HAN)
  assert isinstance(_model("ear"), parser_lib.EARParser)
  with pytest.raises(ValueError, match=r"\['ear', 'generator', 'han'\]"):
    models_lib.get_model("mlp", _cfg(), rngs=nnx.Rngs(0))


def test_ear_gradient_finite_with_dummy_video():
  # The graph path only (attention gradients are covered by the generator
  # tests), to keep the forward + backward compile small.
  model = _model(amdf="none", aggregation="sum", erm_layers=1)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  vm = np.array([1, 1, 1, 0], np.float32)
  batch = _batch(seed=2, video_mask=vm)
  batch["audio"] = batch["audio"].at[3].set(0.0)
  batch["visual"] = batch["visual"].at[3].set(0.0)

  def f(params, rest):
    # Fresh Variables at this trace level, as trainer.py does: BN updates.
    rest = jax.tree.map(lambda x: x, rest)
    m = nnx.merge(graphdef, params, rest)
    out = m(batch, deterministic=False, rngs=nnx.Rngs(dropout=0))
    w = jnp.asarray(vm)[:, None]
    return jnp.sum(out["global_prob"] * w) + jnp.sum(
        jax.nn.log_sigmoid(out["a_logits"]) * w[..., None]
    )

  g = jax.jit(jax.grad(f), compiler_options=FAST_COMPILE)(params, rest)
  leaves = jax.tree.leaves(g)
  assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
  adj = g["erm"]["multi"][0]["adjacency"][...]
  assert np.abs(np.asarray(adj)).sum() > 0  # the graph is trained


def test_mix_nodes_matches_einsum_values_and_gradients():
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((7, 7), np.float32))
  h = jnp.asarray(rng.standard_normal((3, 4, 7, 5), np.float32))
  want = jnp.einsum("ij,btje->btie", a, h)
  got = parser_lib.mix_nodes(a, h)
  assert got.shape == (3, 4, 7, 5) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
  # An asymmetric A: a transposed adjacency would fail here.
  wrong = jnp.einsum("ji,btje->btie", a, h)
  assert np.abs(np.asarray(got) - np.asarray(wrong)).max() > 1e-2

  def loss(f):
    return lambda a, h: jnp.sum(jnp.sin(f(a, h)) * h)

  g_got = jax.grad(loss(parser_lib.mix_nodes), argnums=(0, 1))(a, h)
  g_want = jax.grad(loss(lambda a, h: jnp.einsum("ij,btje->btie", a, h)),
                    argnums=(0, 1))(a, h)
  for x, y in zip(g_got, g_want):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-4)
