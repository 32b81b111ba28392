"""Numerical parity with the PyTorch originals (UWAV, AVVP-ECCV20 HAN, VALOR).

The fixtures in testdata/parity hold only numbers written by
tools/make_parity_fixtures.py from the reference code: state dicts, inputs,
reference outputs. Weights enter through ear_jax.torch_import, as a user's
checkpoint would. Forward outputs and losses must agree within 1e-5 (of the
tensor's largest magnitude) at matmul precision "highest", gradients within
1e-4, thresholds and binary labels exactly.
"""
# pylint: disable=invalid-name

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
from ml_collections import config_dict
import numpy as np
import optax
import pytest

from ear_jax.configs import stage1
from ear_jax.configs import stage3
from ear_jax import losses as losses_lib
from ear_jax import pseudo_labels as pl_lib
from ear_jax import torch_import
from ear_jax import trainer as trainer_lib
from ear_jax.data import features as features_lib

DATA = pathlib.Path(__file__).parent / "testdata" / "parity"
RTOL_FORWARD = 1e-5
RTOL_GRAD = 1e-4
REGENERATE = ("Regenerate with tools/make_parity_fixtures.py only if the"
              " reference code changed; otherwise ear-jax's arithmetic did.")


def load(name: str, prefix: str = "") -> tuple[dict, dict]:
  """(state dict, everything else) of a fixture, floats as float32."""
  with np.load(DATA / f"{name}.npz") as f:
    arrays = {k: f[k] for k in f.files}
  up = lambda x: x.astype(np.float32) if x.dtype == np.float16 else x
  sd = {k[len(prefix) + 3:]: up(v) for k, v in arrays.items()
        if k.startswith(prefix + "sd/")}
  rest = {k: up(v) for k, v in arrays.items() if not k.startswith("sd/")}
  return sd, rest


def assert_close(name, got, want, rtol=RTOL_FORWARD, atol=0.0):
  got = np.asarray(got, np.float64)
  want = np.asarray(want, np.float64)
  assert got.shape == want.shape, (
      f"{name}: shape {got.shape}, reference {want.shape}")
  diff = np.abs(got - want)
  tol = rtol * float(np.max(np.abs(want), initial=0.0)) + atol
  worst = float(np.max(diff, initial=0.0))
  if not worst <= tol:
    i = np.unravel_index(np.argmax(diff), diff.shape)
    raise AssertionError(
        f"{name}: largest difference {worst:.3g} at {tuple(map(int, i))}"
        f" (ear-jax {got[i]:.8g}, reference {want[i]:.8g}) exceeds"
        f" {rtol:g} x max|reference| + {atol:g} = {tol:.3g}. {REGENERATE}")


@pytest.fixture(autouse=True)
def highest_precision():
  with jax.default_matmul_precision("highest"):
    yield


def _parser(name, source, pre_norm=False, prefix=""):
  sd, x = load(name, prefix)
  num_heads = int(x[prefix + "cfg/num_heads"] if prefix + "cfg/num_heads" in x
                  else x["cfg/num_heads"])
  cfg, graphdef, weights = torch_import.convert(
      source, sd, stage3.get_config(), num_heads=num_heads, pre_norm=pre_norm)
  return cfg, trainer_lib.merge(graphdef, weights), x


HAN_OUTPUTS = ("global_prob", "a_prob", "v_prob", "a_logits", "v_logits",
               "a_feat", "v_feat")


# ------------------------------------------------------------------ forward
def test_uwav_generator_logits_and_weighted_bce():
  sd, x = load("uwav_generator")
  cfg, graphdef, weights = torch_import.convert(
      "uwav_generator", sd, stage1.get_config(),
      num_heads=int(x["cfg/num_heads"]))
  assert cfg.model.asymmetric is False
  assert np.float32(cfg.model.logit_scale_a) == np.float32(3.2912)
  model = trainer_lib.merge(graphdef, weights)
  batch = {"clap": x["in/clap"], "clip": x["in/clip"], "valid": x["in/valid"]}
  out = model(batch, x["in/text_a"], x["in/text_v"], deterministic=True)
  # Padded positions too: their uniform attention matches UWAV's -1e10.
  assert_close("generator z_a", out["z_a"], x["out/a_logit"])
  assert_close("generator z_v", out["z_v"], x["out/v_logit"])
  loss_cfg = config_dict.ConfigDict(stage1.get_config().loss)
  loss_cfg.update(use_a=False, use_v=False, use_av2=False,
                  pos_weight=float(x["cfg/pos_weight"]),
                  neg_weight=float(x["cfg/neg_weight"]))
  loss, _ = losses_lib.generator_loss(out, batch, {"y_av": x["in/y_av"]},
                                      loss_cfg)
  assert_close("generator weighted BCE", loss, x["out/loss_av"])


@pytest.mark.parametrize("name,pre_norm", [("uwav_han", False),
                                           ("uwav_han_mlp_prenorm", True)])
def test_uwav_han_forward(name, pre_norm):
  cfg, model, x = _parser(name, "uwav_han", pre_norm)
  assert cfg.data.features == "vggish_res152_r2plus1d"
  batch = {"audio": x["in/audio"],
           "visual": np.concatenate([x["in/vis_2d"], x["in/vis_3d"]], -1)}
  out = model(batch, deterministic=True)
  for k in HAN_OUTPUTS:
    assert_close(f"{name} {k}", out[k], x[f"out/{k}"])


def test_uwav_han_clip_clap_forward():
  """--use_clip_clap_feat: CLIP enters the encoder unprojected. The fixture
  uses 16-d stand-ins for CLIP, so the model is built from the mapping."""
  sd, x = load("uwav_han_clip_clap")
  arch, flat = torch_import.map_state_dict("uwav_han", sd)
  assert arch["model"]["visual_proj"] == "none"
  in_a, in_v, _ = arch["inputs"]
  cfg = stage3.get_config()
  cfg.model.update(arch["model"], num_heads=int(x["cfg/num_heads"]),
                   name="han")
  from ear_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  make = lambda: models_lib.get_model("han", cfg.model, rngs=nnx.Rngs(0),
                                      in_dim_a=in_a, in_dim_v=in_v,
                                      num_classes=25)
  graphdef, weights = torch_import.fill_params(make, flat, "uwav_han")
  model = trainer_lib.merge(graphdef, weights)
  out = model({"audio": x["in/clap"], "visual": x["in/clip"]},
              deterministic=True)
  for k in HAN_OUTPUTS:
    assert_close(f"uwav_han_clip_clap {k}", out[k], x[f"out/{k}"])


def _frame_prob(out):
  return jax.nn.sigmoid(jnp.stack([out["a_logits"], out["v_logits"]], 2))


def test_han_eccv20_forward():
  cfg, model, x = _parser("han_eccv20", "han_eccv20")
  assert cfg.model.han_update == "eccv20" and cfg.model.num_heads == 1
  # ear-jax's data layer averages the 8 ResNet-152 frames of a segment
  # before fc_v; MMIL_Net averages after it (equal: fc_v is affine).
  res = np.stack([features_lib.adaptive_avg_pool1d(v, 10)
                  for v in x["in/visual"]]).astype(np.float32)
  batch = {"audio": x["in/audio"],
           "visual": np.concatenate([res, x["in/visual_st"]], -1)}
  out = model(batch, deterministic=True)
  for k in ("global_prob", "a_prob", "v_prob"):
    assert_close(f"han_eccv20 {k}", out[k], x[f"out/{k}"])
  assert_close("han_eccv20 frame_prob", _frame_prob(out), x["out/frame_prob"])


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_valor_han_forward(norm):
  cfg, model, x = _parser("valor_han", "valor_han", norm == "pre",
                          prefix=f"{norm}/")
  assert cfg.model.han_norm == norm
  batch = {"audio": x["in/audio"],
           "visual": np.concatenate([x["in/visual"], x["in/visual_st"]], -1)}
  out = model(batch, deterministic=True)
  for k in ("global_prob", "a_prob", "v_prob", "frame_prob"):
    got = _frame_prob(out) if k == "frame_prob" else out[k]
    assert_close(f"valor_han {norm} {k}", got, x[f"{norm}/out/{k}"])


# ------------------------------------------------------------------ stage 3
def _train_batch(x):
  B = x["in/weak"].shape[0]
  return {"audio": x["in/audio"],
          "visual": np.concatenate([x["in/vis_2d"], x["in/vis_3d"]], -1),
          "weak": x["in/weak"], "video_mask": np.ones((B,), np.float32),
          "a_logit": x["in/a_logit"], "v_logit": x["in/v_logit"]}


def _loss_cfg(variant):
  cfg = config_dict.ConfigDict(stage3.get_config().loss)
  soft = variant == "soft_cb"
  cfg.update(use_soft=soft, use_reweight=soft, use_mixup=True,
             pos_weight_factor=0.5, mixup_alpha=1.7)
  return cfg


@pytest.fixture
def fixed_mixup(monkeypatch):
  """losses.mixup_draw returns the fixture's (lambda, perm), audio first."""

  def install(x):
    draws = [(x["in/lam_a"], x["in/perm_a"]), (x["in/lam_v"], x["in/perm_v"])]
    calls = []

    def draw(key_lambda, key_perm, real_N, alpha):
      del key_lambda, key_perm, alpha
      lam, perm = draws[len(calls) % 2]
      calls.append(1)
      assert perm.shape == real_N.shape
      return jnp.float32(lam), jnp.asarray(perm, jnp.int32)

    monkeypatch.setattr(losses_lib, "mixup_draw", draw)

  return install


def _parser_loss(model, batch, x, variant):
  out = model(batch, deterministic=True)
  return losses_lib.parser_loss(
      out, batch, classify=model.classify, key=jax.random.key(0),
      thresholds_a=x["in/theta_a"], thresholds_v=x["in/theta_v"],
      class_freq_a=x["in/freq_a"].astype(np.float32),
      class_freq_v=x["in/freq_v"].astype(np.float32), cfg=_loss_cfg(variant))


def test_uwav_soft_and_binary_segment_targets():
  _, x = load("uwav_han")
  B = x["in/weak"].shape[0]
  for m in ("a", "v"):
    soft = pl_lib.soft_labels(x[f"in/{m}_logit"], x[f"in/theta_{m}"],
                              x["in/weak"], np.ones(B), 2.0)
    assert_close(f"soft labels {m}", soft, x[f"out/soft_{m}"])
    hard = losses_lib.segment_targets(
        x[f"in/{m}_logit"], x[f"in/theta_{m}"], x["in/weak"], np.ones(B),
        _loss_cfg("hard_plain"))
    np.testing.assert_array_equal(np.asarray(hard), x[f"out/hard_{m}"],
                                  err_msg=f"binary targets {m}")


@pytest.mark.parametrize("variant", ["soft_cb", "hard_plain"])
def test_uwav_parser_loss_terms(variant, fixed_mixup):
  _, model, x = _parser("uwav_han", "uwav_han")
  fixed_mixup(x)
  total, aux = _parser_loss(model, _train_batch(x), x, variant)
  for ours, theirs in (("video", "loss_video"), ("seg_a", "loss_a_valor"),
                       ("seg_v", "loss_v_valor"), ("mix_a", "loss_a_mixup"),
                       ("mix_v", "loss_v_mixup")):
    assert_close(f"{variant} loss/{ours}", aux[f"loss/{ours}"],
                 x[f"out/{variant}/{theirs}"])
  assert_close(f"{variant} total loss", total, x[f"out/{variant}/loss"])


def _reference_tree(x, prefix, params):
  """Fixture tensors "<prefix><key>" in the layout of ear-jax's params."""
  sd = {k[len(prefix):]: v for k, v in x.items() if k.startswith(prefix)}
  _, flat = torch_import.map_state_dict("uwav_han", sd)
  return {p: flat[p] for p, _ in _flat(params)}


def _flat(params):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return list(nnx.to_flat_state(params))


def test_uwav_total_loss_gradients(fixed_mixup):
  _, model, x = _parser("uwav_han", "uwav_han")
  fixed_mixup(x)
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  batch = _train_batch(x)

  def objective(p):
    return _parser_loss(nnx.merge(graphdef, p, rest), batch, x, "soft_cb")[0]

  grads = jax.grad(objective)(params)
  want = _reference_tree(x, "grad/", params)
  scale = max(float(np.max(np.abs(g))) for g in want.values())
  for path, g in _flat(grads):
    # Key biases and the MMIL attention biases have no gradient in exact
    # arithmetic (softmax shift invariance); both leave rounding noise.
    assert_close(f"d loss / d {'/'.join(map(str, path))}", g[...],
                 want[path], RTOL_GRAD, atol=1e-7 * scale)


def test_uwav_clipped_adamw_step():
  """optax clip + AdamW with UWAV's epoch-1 LR equals one torch step."""
  _, model, x = _parser("uwav_han", "uwav_han")
  from flax import nnx  # pylint: disable=g-import-not-at-top
  _, params, _ = nnx.split(model, nnx.Param, ...)
  optim = config_dict.ConfigDict(dict(
      lr=float(x["cfg/lr"]), min_lr=float(x["cfg/lr_min"]),
      warmup_epochs=int(x["cfg/warm_up_epoch"]), b1=float(x["cfg/beta1"]),
      b2=float(x["cfg/beta2"]), eps=float(x["cfg/eps"]),
      weight_decay=float(x["cfg/weight_decay"]),
      clip_norm=float(x["cfg/grad_norm"])))
  tx, schedule = trainer_lib.make_optimizer(optim, 1, int(x["cfg/epochs"]))
  assert_close("step lr", schedule(0), x["out/step_lr"])
  grads = jax.tree.map(jnp.asarray, _reference_tree(x, "grad/", params))
  p0 = {path: v[...] for path, v in _flat(params)}
  assert_close("grad norm", optax.global_norm(grads), x["out/grad_norm"])
  @jax.jit
  def step(p, g):
    updates, _ = tx.update(g, tx.init(p), p)
    return optax.apply_updates(p, updates)

  new = step(p0, grads)
  want = _reference_tree(x, "step/", params)
  for path in want:
    assert_close(f"AdamW step {'/'.join(map(str, path))}", new[path],
                 want[path])


# ------------------------------------------------------------------ stage 2
def test_uwav_threshold_search_and_binarisation_exact():
  _, x = load("uwav_thresholds")
  for m in ("a", "v"):
    theta = pl_lib.search_thresholds(x[f"in/{m}_logit"], x[f"in/gt_{m}"],
                                     x["in/weak"], f_dtype="float32")
    want = x[f"out/theta_{m}"]
    bad = np.flatnonzero(theta != want)
    assert not bad.size, (
        f"thresholds {m}: classes {bad.tolist()} differ: ear-jax"
        f" {theta[bad].tolist()}, reference {want[bad].tolist()}. {REGENERATE}")
    labels = pl_lib.binarize(x[f"in/{m}_logit"], want, x["in/weak"])
    np.testing.assert_array_equal(labels, x[f"out/pred_{m}"],
                                  err_msg=f"binary pseudo-labels {m}")


def test_valor_loss_on_binary_labels():
  """VALOR's recipe: video BCE + BCE on its binary labels (no logits, no
  thresholds, no re-weighting, no mixup) = parser_loss with
  use_soft=False, hard_targets="labels"."""
  _, model, x = _parser("valor_han", "valor_han", prefix="post/")
  B = x["in/weak"].shape[0]
  batch = {"audio": x["in/audio"],
           "visual": np.concatenate([x["in/visual"], x["in/visual_st"]], -1),
           "weak": x["in/weak"], "video_mask": np.ones((B,), np.float32),
           "a_label": x["in/a_label"], "v_label": x["in/v_label"]}
  cfg = config_dict.ConfigDict(stage3.get_config().loss)
  cfg.update(use_soft=False, hard_targets="labels", use_reweight=False,
             use_mixup=False)
  out = model(batch, deterministic=True)
  zeros = np.zeros((25,), np.float32)
  total, aux = losses_lib.parser_loss(
      out, batch, classify=model.classify, key=jax.random.key(0),
      thresholds_a=zeros, thresholds_v=zeros, class_freq_a=zeros,
      class_freq_v=zeros, cfg=cfg)
  for ours, theirs in (("video", "loss_video"), ("seg_a", "loss_valor_a"),
                       ("seg_v", "loss_valor_v")):
    assert_close(f"VALOR loss/{ours}", aux[f"loss/{ours}"],
                 x[f"out/{theirs}"])
  assert_close("VALOR total loss", total, x["out/loss"])
  cfg.hard_targets = "threshold"
  with pytest.raises(ValueError, match="have no logits"):
    losses_lib.parser_loss(
        out, batch, classify=model.classify, key=jax.random.key(0),
        thresholds_a=zeros, thresholds_v=zeros, class_freq_a=zeros,
        class_freq_v=zeros, cfg=cfg)
