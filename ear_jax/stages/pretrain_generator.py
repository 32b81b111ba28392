"""Stage 1: pre-train the pseudo-label generator on UnAV-100 (spec §1-4)."""

from __future__ import annotations

import os

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ear_jax import evaluator as evaluator_lib
from ear_jax import losses as losses_lib
from ear_jax import metrics as metrics_lib
from ear_jax import models as models_lib
from ear_jax import pseudo_labels as pl_lib
from ear_jax import trainer as trainer_lib
from ear_jax import writer as writer_lib
from ear_jax.data import avvp
from ear_jax.data import features as features_lib


def unav_json_path(config) -> str:
  return config.data.unav_annotations or os.path.join(
      config.data.unav_root, "unav100_annotations.json")


def load_unav(config, split: str) -> tuple[dict, avvp.UnAVSplit]:
  """Device-ready arrays of one UnAV split: clip, clap, y_av, valid."""
  rec = avvp.read_unav_split(unav_json_path(config), split,
                             max_segments=config.data.max_segments)
  t_max = rec.y_av.shape[1]
  feats = {
      name: features_lib.load_segment_features(
          config.data.unav_root, name, rec.ids, num_segments=rec.num_segments,
          max_segments=t_max, num_workers=config.data.num_load_workers)
      for name in ("clip", "clap")
  }
  data = dict(feats, y_av=rec.y_av, valid=rec.valid)
  return data, rec


def load_text(root: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """(CLAP, CLIP) class text embeddings, rows in class-index order."""
  return (features_lib.load_event_features(root, "clap", num_classes),
          features_lib.load_event_features(root, "clip", num_classes))


def make_batch(data, idx_B, mask_B):
  batch = evaluator_lib.gather(data, idx_B, mask_B)
  batch["y_av"] = batch["y_av"].astype(np.float32)
  batch["valid"] = batch["valid"].astype(np.float32)
  return batch


def migrated_targets(batch, mig) -> dict:
  """Soft uni-modal targets by similarity-based label migration (Eqs. 1-2)."""
  targets = {"y_av": batch["y_av"]}
  if mig.enabled:
    targets["y_a_mig"] = pl_lib.migrate_batch(
        batch["clap"], batch["y_av"], batch["valid"], mig.tau_a, mig.scope)
    targets["y_v_mig"] = pl_lib.migrate_batch(
        batch["clip"], batch["y_av"], batch["valid"], mig.tau_v, mig.scope)
  return targets


def generator_loss_config(config) -> ml_collections.ConfigDict:
  """config.loss; without migration there are no uni-modal targets (Table IV
  "UWAV" and "EAR w/o LM" train on the AV terms only)."""
  loss_cfg = ml_collections.ConfigDict(config.loss.to_dict())
  if not config.migration.enabled:
    loss_cfg.use_a = loss_cfg.use_v = False
  return loss_cfg


def segment_f1(pred_BxTxC: jax.Array, gt_BxTxC: jax.Array) -> jax.Array:
  """Per-video segment-level F of the official protocol (spec §5.6), [B].

  Mean F1 over the classes present in the prediction or the GT; 1.0 if none.
  """
  pred, gt = pred_BxTxC.astype(jnp.float32), gt_BxTxC.astype(jnp.float32)
  tp = jnp.sum(pred * gt, axis=1)
  fp = jnp.sum(pred * (1 - gt), axis=1)
  fn = jnp.sum((1 - pred) * gt, axis=1)
  present = (tp + fp + fn) > 0
  f1 = jnp.where(present, 2 * tp / jnp.maximum(2 * tp + fp + fn, 1), 0.0)
  count = jnp.sum(present, axis=-1)
  return jnp.where(count > 0, jnp.sum(f1, axis=-1) / jnp.maximum(count, 1),
                   1.0)


def av_probability(out) -> jax.Array:
  """The AV probability used for model selection (spec §4.4, R7)."""
  return out["p_av"]


def run(config):
  train, _ = load_unav(config, "train")
  val, val_rec = load_unav(config, "validation")
  text_a, text_v = load_text(config.data.unav_root, len(avvp.UNAV_CLASSES))
  logging.info("UnAV: %d train, %d validation videos, T=%d",
               len(train["valid"]), len(val["valid"]), train["y_av"].shape[1])

  def make_model():
    return models_lib.get_model("generator", config.model,
                                rngs=nnx.Rngs(config.seed))

  loss_cfg = generator_loss_config(config)

  def loss_fn(model, batch, key):
    out = model(batch, text_a, text_v, deterministic=False,
                rngs=nnx.Rngs(dropout=key))
    targets = migrated_targets(batch, config.migration)
    return losses_lib.generator_loss(out, batch, targets, loss_cfg)

  graphdef = nnx.graphdef(nnx.eval_shape(make_model))

  def predict_fn(model, batch):
    out = model(batch, text_a, text_v, deterministic=True)
    pred_BxTxC = (av_probability(out) >= 0.5) & (batch["valid"][..., None] > 0)
    return {"pred_av": pred_BxTxC,
            "seg_av": segment_f1(pred_BxTxC, batch["y_av"] > 0)}

  predictor = evaluator_lib.Predictor(
      graphdef, predict_fn, {k: val[k] for k in ("clip", "clap", "valid",
                                                 "y_av")},
      config.eval_batch_size)

  def evaluate(weights):
    # Per-epoch selection needs only Seg-av, computed on device: the
    # [N, T, 100] predictions never leave it.
    seg = predictor(weights, keys=("seg_av",))["seg_av"]
    return {"val/seg_av": 100.0 * float(np.mean(seg, dtype=np.float64))}

  def final_scores(weights):
    """The official metric code on the cropped predictions (Seg/Evt-av)."""
    pred = np.moveaxis(predictor(weights, keys=("pred_av",))["pred_av"], 1, 2)
    gt = np.moveaxis(val["y_av"], 1, 2)
    scores = metrics_lib.avvp_scores(pred.astype(np.uint8),
                                     pred.astype(np.uint8), gt, gt)
    return {"seg_av": scores["seg_av"], "evt_av": scores["evt_av"]}

  result = trainer_lib.fit(
      config, make_model=make_model, loss_fn=loss_fn, make_batch=make_batch,
      train_data=train, num_train=len(train["valid"]), evaluate=evaluate,
      best_metric=config.best_metric,
      meta=dict(num_classes=len(avvp.UNAV_CLASSES)))
  final = final_scores(result.weights)
  # UnAV has audio-visual labels only, so only the AV metrics exist here;
  # the ten LLP metrics of the generator come from stage 2.
  writer_lib.write_json_atomic(
      os.path.join(config.workdir, "eval", "unav_validation.json"),
      {**{k.removeprefix("val/"): v for k, v in final.items()},
       "split": "validation", "n_videos": len(val_rec.ids),
       "best_step": result.best_step})
  logging.info("stage 1 done: best %s=%s at step %s", config.best_metric,
               result.best_value, result.best_step)
