"""Whole training runs, step by step, against the PyTorch reference (UWAV).

tools/make_parity_fixtures.py trains tiny UWAV models with the reference
code (train_han.sh's stage-3 HAN losses; train_transformer.sh's stage-1
generator loss) for 55 AdamW steps: warm-up + cosine learning rate per
epoch, gradient clipping, a partial last batch, dropout p = 0, no mixup,
a fixed batch order. Here ear-jax starts from the same weights (through
ear_jax.torch_import) and runs its own training step (trainer's
make_train_step and make_optimizer with the stage's loss recipe, from the
`:uwav` configs) over the same batches. Every step's loss must agree within 1e-4 relative, the
final weights within 1e-3 of each tensor's largest magnitude (the biases
without a gradient are checked by what they compute instead; GAUGE).
"""
# pylint: disable=invalid-name

from __future__ import annotations

import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
from ml_collections import config_dict
import numpy as np
import pytest

from ear_jax.configs import stage1
from ear_jax.configs import stage3
from ear_jax import evaluator as evaluator_lib
from ear_jax import generator_lib
from ear_jax import models as models_lib
from ear_jax import parser_lib
from ear_jax import sharding as sharding_lib
from ear_jax import torch_import
from ear_jax import train_state as ts_lib
from ear_jax import trainer as trainer_lib
from ear_jax.data import pipeline

DATA = pathlib.Path(__file__).parent / "testdata" / "parity"
RTOL_LOSS = 1e-4
RTOL_WEIGHTS = 1e-3
REGENERATE = ("Regenerate with tools/make_parity_fixtures.py only if the"
              " reference code changed; otherwise ear-jax's training did.")


@pytest.fixture(autouse=True)
def highest_precision():
  with jax.default_matmul_precision("highest"):
    yield


def load(name: str) -> tuple[dict, dict, dict]:
  """(initial state dict, final state dict, the rest), floats as float32."""
  with np.load(DATA / f"{name}.npz") as f:
    arrays = {k: f[k] for k in f.files}
  up = lambda x: x.astype(np.float32) if x.dtype == np.float16 else x
  part = lambda p: {k[len(p):]: up(v) for k, v in arrays.items()
                    if k.startswith(p)}
  rest = {k: up(v) for k, v in arrays.items()
          if not k.startswith(("sd/", "final/"))}
  return part("sd/"), part("final/"), rest


def optim_config(base, x) -> config_dict.ConfigDict:
  """`base` (a stage's config.optim) with the fixture's hyper-parameters."""
  o = config_dict.ConfigDict(base.to_dict())
  o.update(lr=float(x["cfg/lr"]), min_lr=float(x["cfg/lr_min"]),
           warmup_epochs=int(x["cfg/warm_up_epoch"]),
           b1=float(x["cfg/beta1"]), b2=float(x["cfg/beta2"]),
           eps=float(x["cfg/eps"]),
           weight_decay=float(x["cfg/weight_decay"]),
           clip_norm=float(x["cfg/grad_norm"]))
  return o


def train(graphdef, weights, optim, loss_fn, make_batch, data, loss_args, x):
  """ear-jax's jitted epochs over the fixture's batch order: (final params,
  per-step losses, per-step gradient norms, the schedule)."""
  orders, B = x["in/order"], int(x["cfg/batch_size"])
  spe = pipeline.steps_per_epoch(orders.shape[1], B)
  tx, schedule = trainer_lib.make_optimizer(optim, spe, len(orders))
  mesh = sharding_lib.make_mesh()
  epoch_fn = trainer_lib.make_epoch_fn(trainer_lib.make_train_step(
      graphdef, tx, loss_fn, make_batch, mesh))
  state = ts_lib.TrainState(
      step=jnp.zeros((), jnp.int32), params=weights["params"],
      model_state=weights["model_state"], opt_state=tx.init(weights["params"]))
  consts = trainer_lib.step_consts(jax.random.key(0), loss_args)
  data = jax.tree.map(jnp.asarray, data)
  losses, norms = [], []
  for order in orders:
    idx, mask = pipeline.index_batches(order, B)
    state, metrics = epoch_fn(state, data, consts, idx, mask)
    losses.append(np.asarray(metrics["loss"]))
    norms.append(np.asarray(metrics["grad_norm"]))
  return (state.params, np.concatenate(losses), np.concatenate(norms),
          schedule)


def assert_steps(name, got, want, rtol):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, f"{name}: {got.shape} steps, reference" \
      f" {want.shape}"
  rel = np.abs(got - want) / np.abs(want)
  bad = np.flatnonzero(~(rel <= rtol))
  if bad.size:
    i = int(bad[0])
    raise AssertionError(
        f"{name}: step {i} (of {len(want)}) differs by {rel[i]:.2g} relative"
        f" (ear-jax {got[i]:.8g}, reference {want[i]:.8g}) > {rtol:g};"
        f" {bad.size} steps out of tolerance, worst {rel.max():.2g}."
        f" {REGENERATE}")


# Parameters with no gradient in exact arithmetic (softmax shift
# invariance): attention key biases (a bias shifts every score of a query
# alike) and the MMIL attention biases (constant over the softmax axis:
# time for fc_frame_att, modality for fc_av_att). Their gradient is
# rounding noise, which Adam scales up to steps of up to ~lr, differently
# in each codebase; their values change no output (assert_same_function
# checks that).
GAUGE = ("k_proj/bias", "fc_frame_att/bias", "fc_av_att/bias")


def is_gauge(path: str) -> bool:
  return path.endswith(GAUGE)


def flat_params(params) -> dict[str, np.ndarray]:
  return {"/".join(map(str, p)): np.asarray(v[...], np.float64)
          for p, v in nnx.to_flat_state(params)}


def assert_weights(source, params, final_sd, init_sd):
  """Final parameters: each within RTOL_WEIGHTS x its tensor's max |ref|,
  except the GAUGE ones, which both codebases leave near their start."""
  as_flat = lambda sd: {"/".join(map(str, p)): np.asarray(v, np.float64)
                        for p, v in torch_import.map_state_dict(
                            source, sd)[1].items()}
  want, init, got = as_flat(final_sd), as_flat(init_sd), flat_params(params)
  assert set(got) == set(want), "parameter sets differ"
  assert any(map(is_gauge, got)), "no gauge parameter found: names changed?"
  bad = []
  for path in sorted(got):
    if is_gauge(path):
      # Adam-amplified noise: well below the 0.24 scale of these biases.
      moved = max(np.max(np.abs(got[path] - init[path])),
                  np.max(np.abs(want[path] - init[path])))
      if not moved <= 1e-2:
        bad.append(f"{path} (no gradient) moved by {moved:.2g}")
      continue
    err = np.max(np.abs(got[path] - want[path])) / np.max(np.abs(want[path]))
    if not err <= RTOL_WEIGHTS:
      bad.append(f"{path}: {err:.2g}")
  assert not bad, (f"final weights differ by more than {RTOL_WEIGHTS:g} of"
                   f" the tensor's largest magnitude: {bad[:8]}. {REGENERATE}")


def assert_same_function(make_model, source, final_sd, params, model_state,
                         forward):
  """ear-jax's final model and the reference's final weights (imported)
  compute the same outputs, and shifting every GAUGE parameter by 1
  changes none (so exempting them is sound). forward(model) -> {name:
  array}; differences are relative to the output's max magnitude."""
  _, flat = torch_import.map_state_dict(source, final_sd)
  graphdef, ref_weights = torch_import.fill_params(make_model, flat, source)
  run = jax.jit(lambda w: forward(trainer_lib.merge(graphdef, w)))
  shifted = jax.tree.map(lambda v: v, params)
  for path, var in nnx.to_flat_state(shifted):
    if is_gauge("/".join(map(str, path))):
      var[...] = var[...] + 1.0
  ours = run(dict(params=params, model_state=model_state))
  for label, got, want, rtol in (
      ("ear-jax's final weights vs the reference's", ours,
       run(ref_weights), RTOL_WEIGHTS),
      ("no-gradient biases shifted by 1 vs not",
       run(dict(params=shifted, model_state=model_state)), ours, 1e-5)):
    for k in want:
      ref = np.asarray(want[k], np.float64)
      err = np.max(np.abs(np.asarray(got[k], np.float64) - ref)) / np.max(
          np.abs(ref))
      assert err <= rtol, (f"final {source} output {k}, {label}: differ by"
                           f" {err:.2g} of max |ref| > {rtol:g}.")


def check_run(name, x, losses, norms, schedule):
  steps = len(x["out/loss"])
  assert steps >= 50
  assert_steps(f"{name} learning rate", [schedule(s) for s in range(steps)],
               x["out/lr"], 1e-6)
  assert_steps(f"{name} gradient norm", norms, x["out/grad_norm"], RTOL_LOSS)
  assert_steps(f"{name} loss", losses, x["out/loss"], RTOL_LOSS)


def test_uwav_han_training_trajectory():
  """Stage 3 of configs/stage3.py:uwav at the fixture's sizes: HAN with
  UWAV's losses (video BCE, soft class-balanced segment BCE; mixup off),
  AdamW, warm-up + cosine, clipping at 1.0."""
  sd, final, x = load("uwav_han_trajectory")
  arch, flat = torch_import.map_state_dict("uwav_han", sd)
  in_a, in_v2d, in_v3d = arch["inputs"]
  cfg = stage3.get_config("uwav")  # UWAV's recipe (configs/uwav.py)
  # Its HAN switches are those of UWAV's module; only the sizes differ.
  for k in ("name", "audio_proj", "visual_proj", "han_norm", "han_update",
            "mmil_att_hidden", "identical_layer_init"):
    assert cfg.model[k] == dict(arch["model"], name="han")[k], k
  assert cfg.loss.pos_weight_factor == float(x["cfg/pos_weight"])
  cfg.model.update(arch["model"], dropout=0.0,
                   num_heads=int(x["cfg/num_heads"]))
  cfg.loss.use_mixup = False  # the fixture has no mixup
  make = lambda: models_lib.get_model(
      "han", cfg.model, rngs=nnx.Rngs(0), in_dim_a=in_a,
      in_dim_v=in_v2d + in_v3d, num_classes=25)
  graphdef, weights = torch_import.fill_params(make, flat, "uwav_han")
  pl = {"thresholds_a": x["in/theta_a"], "thresholds_v": x["in/theta_v"],
        "a_label": x["in/a_label"], "v_label": x["in/v_label"]}
  loss_args = parser_lib.loss_args_from_pseudo_labels(pl)
  for m in ("a", "v"):  # LLP_Dataset.get_class_freq's numbers
    np.testing.assert_allclose(loss_args[f"class_freq_{m}"],
                               x[f"in/freq_{m}"], rtol=1e-6)
  data = {"audio": x["in/audio"],
          "visual": np.concatenate([x["in/vis_2d"], x["in/vis_3d"]], -1),
          "weak": x["in/weak"], "a_logit": x["in/a_logit"],
          "v_logit": x["in/v_logit"]}
  loss_fn = parser_lib.make_loss_fn(cfg)
  params, losses, norms, schedule = train(
      graphdef, weights, optim_config(cfg.optim, x), loss_fn,
      evaluator_lib.gather, data, loss_args, x)
  check_run("HAN", x, losses, norms, schedule)
  assert_weights("uwav_han", params, final, sd)
  assert_same_function(
      make, "uwav_han", final, params, weights["model_state"],
      lambda m: {k: v for k, v in m(data, deterministic=True).items()
                 if k in ("global_prob", "a_logits", "v_logits")})


def test_uwav_generator_training_trajectory():
  """Stage 1 of configs/stage1.py:uwav at the fixture's sizes: UWAV's
  symmetric generator without migration (the weighted, masked BCE of
  sigma(z_a) sigma(z_v)), AdamW, warm-up + cosine, clipping at 2.0,
  videos of 2 to 8 segments."""
  sd, final, x = load("uwav_generator_trajectory")
  base = stage1.get_config("uwav")  # UWAV's recipe (configs/uwav.py)
  assert not base.migration.enabled and base.model.identical_layer_init
  assert (base.loss.pos_weight, base.loss.neg_weight) == (
      float(x["cfg/pos_weight"]), float(x["cfg/neg_weight"]))
  base.model.dropout = 0.0
  cfg, graphdef, weights = torch_import.convert(
      "uwav_generator", sd, base, num_heads=int(x["cfg/num_heads"]))
  # The import sets UWAV's architecture; the recipe had it already.
  for k in ("asymmetric", "identical_layer_init"):
    assert cfg.model[k] == base.model[k], k
  for k in ("logit_scale_a", "logit_scale_v"):  # float32 torch buffers
    assert np.float32(cfg.model[k]) == np.float32(base.model[k]), k
  data = {"clip": x["in/clip"], "clap": x["in/clap"],
          "y_av": x["in/y_av"], "valid": x["in/valid"]}
  loss_fn = generator_lib.make_loss_fn(cfg)
  text = generator_lib.loss_args(x["in/text_a"], x["in/text_v"])
  params, losses, norms, schedule = train(
      graphdef, weights, optim_config(cfg.optim, x), loss_fn,
      generator_lib.make_batch, data, text, x)
  check_run("generator", x, losses, norms, schedule)
  assert_weights("uwav_generator", params, final, sd)
  assert_same_function(
      generator_lib.model_factory(cfg), "uwav_generator", final, params,
      weights["model_state"],
      lambda m: {k: v for k, v in m(data, text["a"], text["v"],
                                    deterministic=True).items()
                 if k in ("z_a", "z_v")})
