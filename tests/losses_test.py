"""Tests for losses.py against numpy recomputations: UWAV weighted BCE,
EAR Eq. (8), parser video/segment/mixup terms, padding invariance."""

# pylint: disable=invalid-name

from flax import nnx
import jax
import jax.numpy as jnp
from ml_collections import config_dict
import numpy as np
import pytest

import generator_test
from ear_jax import losses as losses_lib
from ear_jax.models import generator as generator_lib

B, T, C, D = 4, 10, 5, 16


def _sig(x):
  return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


def _np_bce_logits(x, y):
  x = np.asarray(x, np.float64)
  return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def _np_bce_prob(p, y):
  p = np.asarray(p, np.float64)
  with np.errstate(divide="ignore"):
    return -(
        y * np.maximum(np.log(p), -100)
        + (1 - y) * np.maximum(np.log1p(-p), -100)
    )


# ---------------------------------------------------------------- stage 1 --


def test_weighted_bce_with_clamp():
  y = np.array([[[1.0, 0.0, 0.3]], [[0.0, 1.0, 1.0]]])  # [2, 1, 3]
  logp = np.array([[[-jnp.inf, -0.1, -2.0]], [[-300.0, -0.5, -0.2]]])
  log1mp = np.array([[[-0.01, -jnp.inf, -1.0]], [[-1.0, -0.7, -1.5]]])
  valid = np.array([[1.0], [1.0]])
  w = np.array([[[5.0, 1.0, 5.0]], [[1.0, 5.0, 5.0]]])
  got = losses_lib.weighted_bce(
      jnp.asarray(logp),
      jnp.asarray(log1mp),
      jnp.asarray(y),
      jnp.asarray(valid),
      jnp.asarray(w),
  )
  lp, l1 = np.maximum(logp, -100), np.maximum(log1mp, -100)
  ell = -(y * lp + (1 - y) * l1)
  want = (ell * w).sum() / (2 * 3)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # Masked rows do not count, in the sum or the normaliser.
  valid2 = np.array([[1.0], [0.0]])
  got2 = losses_lib.weighted_bce(
      jnp.asarray(logp),
      jnp.asarray(log1mp),
      jnp.asarray(y),
      jnp.asarray(valid2),
      jnp.asarray(w),
  )
  np.testing.assert_allclose(got2, (ell[0] * w[0]).sum() / 3, rtol=1e-6)


def test_generator_class_weights():
  y = np.zeros((2, 3, 2), np.float32)
  y[0, 1, 0] = 0.4  # soft positive in a valid segment -> pos
  y[1, 2, 1] = 1.0  # positive only on padding -> neg
  valid = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
  w = np.asarray(
      losses_lib.generator_class_weights(
          jnp.asarray(y), jnp.asarray(valid), 5, 1
      )
  )
  assert w.shape == (2, 3, 2)
  np.testing.assert_array_equal(w[0, :, 0], 5)
  np.testing.assert_array_equal(w[0, :, 1], 1)
  np.testing.assert_array_equal(w[1], 1)


def _gen_cfg(**kw):
  c = dict(
      lambda_a=0.05,
      lambda_v=0.15,
      use_av1=True,
      use_av2=True,
      use_a=True,
      use_v=True,
      pos_weight=5.0,
      neg_weight=1.0,
  )
  c.update(kw)
  return config_dict.ConfigDict(c)


def _gen_inputs(asymmetric=True, seed=0):
  r = np.random.default_rng(seed)
  z = {k: r.normal(size=(B, T, C)) * 3 for k in ("z_a", "z_v", "za", "zv")}
  valid = np.ones((B, T), np.float32)
  valid[1, 7:] = 0
  valid[3] = 0
  y_av = (r.random((B, T, C)) < 0.2).astype(np.float32)
  y_a = np.maximum(y_av, (r.random((B, T, C)) < 0.1) * 0.97)
  y_v = np.maximum(y_av, (r.random((B, T, C)) < 0.1) * 0.96)
  ls = jax.nn.log_sigmoid
  out = dict(z_a=jnp.asarray(z["z_a"]), z_v=jnp.asarray(z["z_v"]))
  if asymmetric:
    out["z_a_sta"], out["z_v_sta"] = jnp.asarray(z["za"]), jnp.asarray(z["zv"])
    lp1 = ls(out["z_v"]) + ls(out["z_a_sta"])
    lp2 = ls(out["z_a"]) + ls(out["z_v_sta"])
    out.update(
        logp_av1=lp1,
        log1mp_av1=jnp.log1p(-jnp.exp(lp1)),
        logp_av2=lp2,
        log1mp_av2=jnp.log1p(-jnp.exp(lp2)),
    )
  else:
    lp = ls(out["z_a"]) + ls(out["z_v"])
    out.update(logp_av=lp, log1mp_av=jnp.log1p(-jnp.exp(lp)))
  batch = dict(valid=jnp.asarray(valid))
  targets = dict(
      y_av=jnp.asarray(y_av),
      y_a_mig=jnp.asarray(y_a),
      y_v_mig=jnp.asarray(y_v),
  )
  return out, batch, targets, z, valid, (y_av, y_a, y_v)


def _np_wbce(p, y, valid):
  w = np.where((y * valid[..., None]).sum(1, keepdims=True) > 0, 5.0, 1.0)
  ell = _np_bce_prob(p, y)
  return (ell * w * valid[..., None]).sum() / (valid.sum() * y.shape[-1])


def test_generator_loss_asymmetric_eq8():
  out, batch, targets, z, valid, (y_av, y_a, y_v) = _gen_inputs()
  loss, aux = losses_lib.generator_loss(out, batch, targets, _gen_cfg())
  av1 = _np_wbce(_sig(z["z_v"]) * _sig(z["za"]), y_av, valid)
  av2 = _np_wbce(_sig(z["z_a"]) * _sig(z["zv"]), y_av, valid)
  la = _np_wbce(_sig(z["z_a"]), y_a, valid)
  lv = _np_wbce(_sig(z["z_v"]), y_v, valid)
  np.testing.assert_allclose(aux["loss/av1"], av1, rtol=1e-5)
  np.testing.assert_allclose(aux["loss/av2"], av2, rtol=1e-5)
  np.testing.assert_allclose(aux["loss/a"], la, rtol=1e-5)
  np.testing.assert_allclose(aux["loss/v"], lv, rtol=1e-5)
  want = av1 + av2 + 0.05 * la + 0.15 * lv
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(aux["loss/total"], want, rtol=1e-5)
  # Switches drop terms.
  loss2, aux2 = losses_lib.generator_loss(
      out, batch, targets, _gen_cfg(use_av2=False, use_a=False)
  )
  assert set(aux2) == {"loss/av1", "loss/v", "loss/total"}
  np.testing.assert_allclose(loss2, av1 + 0.15 * lv, rtol=1e-5)
  with pytest.raises(ValueError, match="switched off"):
    losses_lib.generator_loss(
        out,
        batch,
        targets,
        _gen_cfg(use_av1=False, use_av2=False, use_a=False, use_v=False),
    )


def test_generator_loss_symmetric_uwav():
  out, batch, targets, z, valid, (y_av, y_a, _) = _gen_inputs(False)
  loss, aux = losses_lib.generator_loss(
      out,
      batch,
      {"y_av": targets["y_av"]},
      _gen_cfg(use_a=False, use_v=False),
  )
  want = _np_wbce(_sig(z["z_a"]) * _sig(z["z_v"]), y_av, valid)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert set(aux) == {"loss/av1", "loss/total"}
  loss_lm, _ = losses_lib.generator_loss(
      out, batch, targets, _gen_cfg(use_v=False)
  )
  la = _np_wbce(_sig(z["z_a"]), y_a, valid)
  np.testing.assert_allclose(loss_lm, want + 0.05 * la, rtol=1e-5)


def test_generator_loss_padding_invariance():
  out, batch, targets, *_ = _gen_inputs()
  loss, _ = losses_lib.generator_loss(out, batch, targets, _gen_cfg())
  pad = lambda x, v: jnp.concatenate([x, jnp.full((2,) + x.shape[1:], v)])
  out2 = {k: pad(v, -3.0) for k, v in out.items()}
  targets2 = {k: pad(v, 1.0) for k, v in targets.items()}
  batch2 = dict(valid=pad(batch["valid"], 0.0))
  loss2, _ = losses_lib.generator_loss(out2, batch2, targets2, _gen_cfg())
  np.testing.assert_allclose(loss, loss2, rtol=1e-6)


def test_generator_loss_gradient_finite_through_model():
  # generator_test.py's tiny config (one layer): a shared worker reuses ops.
  cfg = generator_test._cfg(num_layers=1)  # pylint: disable=protected-access
  model = generator_lib.Generator(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  r = np.random.default_rng(0)
  valid = np.ones((B, T), np.float32)
  valid[1, 6:] = 0
  valid[3] = 0
  batch = dict(
      clap=jnp.asarray(r.normal(size=(B, T, 8)) * 50, jnp.float32),
      clip=jnp.asarray(r.normal(size=(B, T, 12)) * 50, jnp.float32),
      valid=jnp.asarray(valid),
  )
  ta = jnp.asarray(r.normal(size=(C, 8)), jnp.float32)
  tv = jnp.asarray(r.normal(size=(C, 12)), jnp.float32)
  y = jnp.asarray(r.random((B, T, C)) < 0.3, jnp.float32)
  targets = dict(y_av=y, y_a_mig=y, y_v_mig=y)

  def f(params):
    m = nnx.merge(graphdef, params)
    out = m(
        batch,
        ta * 100,
        tv * 100,
        deterministic=False,
        rngs=nnx.Rngs(dropout=jax.random.key(0)),
    )
    return losses_lib.generator_loss(out, batch, targets, _gen_cfg())[0]

  # One cheap compile of forward + backward instead of many eager VJP ops.
  loss, g = jax.jit(
      jax.value_and_grad(f),
      compiler_options={
          "xla_backend_optimization_level": 0,
          "xla_llvm_disable_expensive_passes": True,
      },
  )(params)
  assert np.isfinite(loss)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(g))


# ---------------------------------------------------------------- stage 3 --


def _parser_cfg(**kw):
  c = dict(
      video_weight=1.0,
      seg_weight=1.0,
      mix_weight=1.0,
      pos_weight_factor=0.5,
      cb_weight_scale="code",
      soft_label_temperature=2.0,
      mixup_alpha=1.7,
      use_soft=True,
      use_reweight=True,
      use_mixup=True,
  )
  c.update(kw)
  return config_dict.ConfigDict(c)


def _parser_inputs(n_real=B, n_dummy=0, seed=0):
  r = np.random.default_rng(seed)
  n = n_real + n_dummy
  weak = (r.random((n, C)) < 0.4).astype(np.float32)
  weak[:, 0] = 1
  a_logit = r.normal(size=(n, T, C)).astype(np.float32) * 2
  v_logit = r.normal(size=(n, T, C)).astype(np.float32) * 2
  feats = {m: r.normal(size=(n, T, D)).astype(np.float32) for m in "av"}
  W = r.normal(size=(D, C)).astype(np.float32) * 0.3
  bias = r.normal(size=(C,)).astype(np.float32) * 0.1
  gp = r.random((n, C)).astype(np.float32)
  gp[0, 0], gp[0, 1] = 1.0, 0.0  # clipped to 1 - 1e-7 and 1e-7
  mask = np.r_[np.ones(n_real), np.zeros(n_dummy)].astype(np.float32)
  if n_dummy:
    a_logit[n_real:] = -50.0  # would dominate the batch minimum if counted
    v_logit[n_real:] = -50.0
  out = dict(
      global_prob=jnp.asarray(gp),
      a_logits=jnp.asarray(feats["a"] @ W + bias),
      v_logits=jnp.asarray(feats["v"] @ W + bias),
      a_feat=jnp.asarray(feats["a"]),
      v_feat=jnp.asarray(feats["v"]),
  )
  batch = dict(
      weak=jnp.asarray(weak),
      video_mask=jnp.asarray(mask),
      a_logit=jnp.asarray(a_logit),
      v_logit=jnp.asarray(v_logit),
  )
  classify = lambda f: f @ jnp.asarray(W) + jnp.asarray(bias)[None, :]
  consts = dict(
      thresholds_a=jnp.asarray([0.3, -np.inf, 0.1, 1.0, -0.5], jnp.float32),
      thresholds_v=jnp.asarray([-np.inf, 0.2, 0.0, -np.inf, 0.5], jnp.float32),
      class_freq_a=jnp.asarray([0.3, 0.1, 0.05, 0.2, 0.1], jnp.float32),
      class_freq_v=jnp.asarray([0.2, 0.1, 0.1, 0.1, 0.02], jnp.float32),
  )
  return out, batch, classify, consts, (W, bias)


def _np_soft(z, theta, weak, mask, temp=2.0):
  real = mask > 0
  zmin = z[real].min(axis=(0, 1))
  th = np.where(np.isfinite(theta), theta, zmin - 1)
  return _sig((z - th) / temp) * (weak * real[:, None])[:, None, :]


def _np_cb(weak, freq, W=0.5, scale="code"):
  S = freq.sum()
  w = np.where(weak > 0, (C - S) * W, S)
  return w / C if scale == "paper" else w


def test_class_balanced_weights_code_vs_paper():
  weak = jnp.asarray([[1, 0, 1, 0, 0]], jnp.float32)
  freq = jnp.asarray([0.3, 0.1, 0.05, 0.2, 0.1], jnp.float32)
  S = 0.75
  code = losses_lib.class_balanced_weights(weak, freq, 0.5, "code")
  np.testing.assert_allclose(
      code, [[(5 - S) * 0.5, S, (5 - S) * 0.5, S, S]], rtol=1e-6
  )
  paper = losses_lib.class_balanced_weights(weak, freq, 0.5, "paper")
  np.testing.assert_allclose(paper, np.asarray(code) / 5, rtol=1e-6)
  with pytest.raises(ValueError, match="cb_weight_scale"):
    losses_lib.class_balanced_weights(weak, freq, 0.5, "both")


@pytest.mark.parametrize("scale", ["code", "paper"])
def test_parser_loss_without_mixup_matches_numpy(scale):
  out, batch, classify, consts, _ = _parser_inputs()
  cfg = _parser_cfg(use_mixup=False, cb_weight_scale=scale)
  loss, aux = losses_lib.parser_loss(
      out, batch, classify=classify, key=jax.random.key(0), cfg=cfg, **consts
  )
  assert set(aux) == {"loss/video", "loss/seg_a", "loss/seg_v", "loss/total"}
  weak, mask = np.asarray(batch["weak"]), np.asarray(batch["video_mask"])
  gp = np.clip(np.asarray(out["global_prob"], np.float64), 1e-7, 1 - 1e-7)
  video = _np_bce_prob(gp, weak).mean()
  np.testing.assert_allclose(aux["loss/video"], video, rtol=1e-5)
  assert 15 < video * B * C  # the clipped entries contribute about 16 each
  total = video
  for m in "av":
    q = _np_soft(
        np.asarray(batch[f"{m}_logit"]),
        np.asarray(consts[f"thresholds_{m}"]),
        weak,
        mask,
    )
    w = _np_cb(weak, np.asarray(consts[f"class_freq_{m}"]), scale=scale)
    seg = (w[:, None, :] * _np_bce_logits(out[f"{m}_logits"], q)).mean()
    np.testing.assert_allclose(aux[f"loss/seg_{m}"], seg, rtol=1e-5)
    total += seg
  np.testing.assert_allclose(loss, total, rtol=1e-5)


def test_parser_loss_binary_targets_and_no_reweight():
  out, batch, classify, consts, _ = _parser_inputs()
  cfg = _parser_cfg(use_mixup=False, use_soft=False, use_reweight=False)
  _, aux = losses_lib.parser_loss(
      out, batch, classify=classify, key=jax.random.key(0), cfg=cfg, **consts
  )
  weak = np.asarray(batch["weak"])
  z = np.asarray(batch["a_logit"])
  q = (z > np.asarray(consts["thresholds_a"])) * weak[:, None, :]
  seg = _np_bce_logits(out["a_logits"], q).mean()
  np.testing.assert_allclose(aux["loss/seg_a"], seg, rtol=1e-5)


def test_mixup_draw_permutes_real_rows_only():
  real = np.array([1, 0, 1, 1, 0, 1, 1, 0], np.float32)
  perms = set()
  for s in range(20):
    lam, perm = losses_lib.mixup_draw(
        jax.random.key(s), jax.random.key(100 + s), jnp.asarray(real), 1.7
    )
    perm = np.asarray(perm)
    assert 0 < float(lam) < 1
    assert sorted(perm) == list(range(8))
    np.testing.assert_array_equal(perm[real == 0], np.flatnonzero(real == 0))
    assert (real[perm[real > 0]] == 1).all()
    perms.add(tuple(perm))
  assert len(perms) > 10  # random, not a fixed shuffle


def test_parser_loss_mixup_matches_numpy_recomputation():
  out, batch, classify, consts, (W, bias) = _parser_inputs(n_real=3, n_dummy=1)
  key = jax.random.key(42)
  cfg = _parser_cfg()
  loss, aux = losses_lib.parser_loss(
      out, batch, classify=classify, key=key, cfg=cfg, **consts
  )
  keys = losses_lib.mixup_keys(key)
  weak, mask = np.asarray(batch["weak"]), np.asarray(batch["video_mask"])
  real_N = np.repeat(mask, T)
  lams = []
  for m in "av":
    lam, perm = losses_lib.mixup_draw(
        keys[f"lambda_{m}"], keys[f"perm_{m}"], jnp.asarray(real_N), 1.7
    )
    lam, perm = float(lam), np.asarray(perm)
    lams.append(lam)
    assert (real_N[perm[real_N > 0]] == 1).all()  # partners are real
    q = _np_soft(
        np.asarray(batch[f"{m}_logit"]),
        np.asarray(consts[f"thresholds_{m}"]),
        weak,
        mask,
    ).reshape(-1, C)
    f = np.asarray(out[f"{m}_feat"], np.float64).reshape(-1, D)
    logits = (lam * f + (1 - lam) * f[perm]) @ W + bias
    ell = lam * _np_bce_logits(logits, q) + (1 - lam) * _np_bce_logits(
        logits, q[perm]
    )
    want = ell[real_N > 0].mean()
    np.testing.assert_allclose(aux[f"loss/mix_{m}"], want, rtol=1e-5)
  assert lams[0] != lams[1]  # one lambda per modality
  parts = sum(float(aux[k]) for k in aux if k != "loss/total")
  np.testing.assert_allclose(loss, parts, rtol=1e-5)


def test_parser_loss_padding_invariance():
  cfg = _parser_cfg(use_mixup=False)
  out, batch, classify, consts, _ = _parser_inputs(n_real=3)
  loss, aux = losses_lib.parser_loss(
      out, batch, classify=classify, key=jax.random.key(0), cfg=cfg, **consts
  )
  pad = lambda x, v: jnp.concatenate(
      [x, jnp.full((2,) + x.shape[1:], v, x.dtype)]
  )
  out2 = {k: pad(v, 0.9) for k, v in out.items()}
  batch2 = {k: pad(v, -50.0) for k, v in batch.items()}
  batch2["weak"] = pad(batch["weak"], 1.0)
  batch2["video_mask"] = pad(batch["video_mask"], 0.0)
  loss2, aux2 = losses_lib.parser_loss(
      out2,
      batch2,
      classify=classify,
      key=jax.random.key(0),
      cfg=cfg,
      **consts,
  )
  np.testing.assert_allclose(loss, loss2, rtol=1e-6)
  for k in aux:
    np.testing.assert_allclose(aux[k], aux2[k], rtol=1e-6, err_msg=k)


def test_parser_loss_gradient_finite():
  out, batch, classify, consts, _ = _parser_inputs(n_real=3, n_dummy=1)

  def f(out):
    return losses_lib.parser_loss(
        out,
        batch,
        classify=classify,
        key=jax.random.key(1),
        cfg=_parser_cfg(),
        **consts,
    )[0]

  g = jax.grad(f)(out)
  for k, v in g.items():
    assert np.isfinite(np.asarray(v)).all(), k
  # Mixup and segment terms reach the features, except for dummy videos.
  assert np.abs(np.asarray(g["a_feat"][:3])).sum() > 0
  np.testing.assert_array_equal(np.asarray(g["a_feat"][3]), 0)
