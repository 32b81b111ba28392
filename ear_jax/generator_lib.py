"""The pseudo-label generator's recipes (stages 1 and 2, docs/METHOD.md).

UnAV inputs, class text embeddings, model factory, loss closure, the
on-device Seg-AV used for model selection, and the frozen generator on LLP:
logits, val-tuned thresholds and the scores of its pseudo-labels. The stage
runners, `evaluate` and the benchmarks build on these.
"""
# pylint: disable=invalid-name

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

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
from ear_jax import runs as runs_lib
from ear_jax.data import avvp
from ear_jax.data import features as features_lib
from ear_jax.data import pseudo_label_files as pl_files

# ------------------------------------------------------------ stage 1 inputs
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


# ------------------------------------------------------ model, loss, scoring
def model_factory(config):
  """make_model(seed=None) of the generator of a stage-1 config
  (config.model); seed (an int or a PRNG key; None = config.seed) is what
  the trainer passes traced, so one init program serves every seed."""

  def make_model(seed=None):
    return models_lib.get_model(
        "generator", config.model,
        rngs=nnx.Rngs(config.seed if seed is None else seed))

  return make_model


def migrated_targets(batch, mig) -> dict:
  """Soft uni-modal targets by similarity-based label migration, Eq. (1)-(2)."""
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


@dataclasses.dataclass(frozen=True)
class GeneratorLoss:
  """loss_fn(model, batch, key, text) for trainer.fit, Eq. (8). Hashable:
  equal configs share one jitted epoch; the class text embeddings
  (text = {"a": CLAP [C, Da], "v": CLIP [C, Dv]}, `loss_args`) are traced."""
  loss_cfg: ml_collections.FrozenConfigDict
  migration: ml_collections.FrozenConfigDict

  def __call__(self, model, batch, key, text):
    out = model(batch, text["a"], text["v"], deterministic=False,
                rngs=nnx.Rngs(dropout=key))
    targets = migrated_targets(batch, self.migration)
    return losses_lib.generator_loss(out, batch, targets, self.loss_cfg)


def make_loss_fn(config) -> GeneratorLoss:
  """The stage-1 loss of `config`; the text embeddings come via loss_args."""
  return GeneratorLoss(
      ml_collections.FrozenConfigDict(generator_loss_config(config)),
      ml_collections.FrozenConfigDict(config.migration))


def loss_args(text_a_CxDa, text_v_CxDv) -> dict[str, np.ndarray]:
  """trainer.fit(loss_args=...) of GeneratorLoss: the class text rows."""
  return {"a": np.asarray(text_a_CxDa, np.float32),
          "v": np.asarray(text_v_CxDv, np.float32)}


def segment_f1(pred_BxTxC: jax.Array, gt_BxTxC: jax.Array) -> jax.Array:
  """Per-video segment-level F of the official protocol, Eq. (M3), [B].

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
  """The AV probability used for model selection (R7 in docs/METHOD.md)."""
  return out["p_av"]


def make_unav_predictor(graphdef, data: dict, text_a_CxDa, text_v_CxDv,
                        batch_size: int) -> evaluator_lib.Predictor:
  """Predictor of `pred_av` [N,T,C] and per-video `seg_av` [N] on UnAV."""

  def predict_fn(model, batch):
    out = model(batch, text_a_CxDa, text_v_CxDv, deterministic=True)
    pred_BxTxC = (av_probability(out) >= 0.5) & (batch["valid"][..., None] > 0)
    return {"pred_av": pred_BxTxC,
            "seg_av": segment_f1(pred_BxTxC, batch["y_av"] > 0)}

  return evaluator_lib.Predictor(
      graphdef, predict_fn, {k: data[k] for k in ("clip", "clap", "valid",
                                                  "y_av")}, batch_size)


def seg_av_on_device(predictor, weights) -> dict:
  """{"val/seg_av"} for per-epoch selection; the [N, T, 100] predictions
  never leave the device."""
  seg = predictor(weights, keys=("seg_av",))["seg_av"]
  return {"val/seg_av": 100.0 * float(np.mean(seg, dtype=np.float64))}


def unav_scores(predictor, weights, y_av_NxTxC) -> dict:
  """The official metric code on the cropped predictions (Seg/Evt-av)."""
  pred = np.moveaxis(predictor(weights, keys=("pred_av",))["pred_av"], 1, 2)
  gt = np.moveaxis(y_av_NxTxC, 1, 2)
  scores = metrics_lib.avvp_scores(pred.astype(np.uint8),
                                   pred.astype(np.uint8), gt, gt)
  return {"seg_av": scores["seg_av"], "evt_av": scores["evt_av"]}


# --------------------------------------------------- stage 2: frozen on LLP
def restore(generator_workdir: str, gen_config, which: str,
            seed_index: int = 0):
  """(graphdef, weights, step, checkpoint) of a finished stage-1 run (of
  seed `seed_index` when it trained config.num_seeds > 1 seeds)."""
  return runs_lib.restore_run(generator_workdir, model_factory(gen_config),
                              which, seed_index=seed_index)


def llp_logits(config, graphdef, weights,
               splits: dict[str, avvp.LLPSplit]) -> dict:
  """Generator logits of every LLP video: {key: {split: f32 [N,T,C]}}."""
  root, num_classes = config.data.llp_root, len(avvp.LLP_CLASSES)
  text_a, text_v = load_text(root, num_classes)
  ids = [i for s in avvp.LLP_SPLITS for i in splits[s].ids]
  data = {name: features_lib.load_segment_features(
      root, name, ids, num_workers=config.data.num_load_workers)
          for name in ("clip", "clap")}
  data["valid"] = np.ones((len(ids), avvp.LLP_NUM_SEGMENTS), np.float32)

  def predict_fn(model, batch):
    out = model(batch, text_a, text_v, deterministic=True)
    return {k: out[k] for k in ("z_a", "z_v", "z_a_sta", "z_v_sta")}

  # One jitted scan over all three splits.
  out = evaluator_lib.Predictor(graphdef, predict_fn, data,
                                config.eval_batch_size)(weights)
  bounds = np.cumsum([0] + [len(splits[s].ids) for s in avvp.LLP_SPLITS])
  return {k: {s: v[bounds[i]:bounds[i + 1]]
              for i, s in enumerate(avvp.LLP_SPLITS)}
          for k, v in out.items()}


def _to_nct(x_NxTxC):
  return np.ascontiguousarray(np.swapaxes(x_NxTxC, 1, 2))


def gt_scores(pred_a_NxTxC, pred_v_NxTxC, rec: avvp.LLPSplit) -> dict:
  """avvp_scores of [N,T,C] predictions against a split's dense GT."""
  return metrics_lib.avvp_scores(_to_nct(pred_a_NxTxC), _to_nct(pred_v_NxTxC),
                                 rec.gt_a, rec.gt_v)


def label_and_score(za: dict, zv: dict, splits: dict,
                    f_dtype: str = "float64",
                    score_splits: Sequence[str] = ("val", "test")):
  """Val-tuned thresholds, Eq. (P1); val/test scores of the binary labels
  (P2).

  f_dtype: precision of the F-scores of the threshold search."""
  val = splits["val"]
  th_a = pl_lib.search_thresholds(za["val"], val.gt_a, val.weak, f_dtype)
  th_v = pl_lib.search_thresholds(zv["val"], val.gt_v, val.weak, f_dtype)
  scores = {s: gt_scores(pl_lib.binarize(za[s], th_a, splits[s].weak),
                        pl_lib.binarize(zv[s], th_v, splits[s].weak),
                        splits[s]) for s in score_splits}
  return th_a, th_v, scores


def weak_everywhere_scores(rec: avvp.LLPSplit) -> dict:
  """The weak labels copied to every segment and both modalities."""
  pred_NxTxC = np.repeat(rec.weak[:, None, :], avvp.LLP_NUM_SEGMENTS, axis=1)
  return gt_scores(pred_NxTxC, pred_NxTxC, rec)


def pseudo_label_predictions(pseudo_labels_dir: str, rec: avvp.LLPSplit):
  """(pred_a, pred_v) uint8 [N, C, T]: a stage-2 run's binary labels of
  split `rec`."""
  pl = pl_files.read_stage2(
      pseudo_labels_dir, list(rec.ids), expect_classes=list(avvp.LLP_CLASSES),
      expect_num_segments=avvp.LLP_NUM_SEGMENTS)
  return _to_nct(pl["a_label"]), _to_nct(pl["v_label"])


def score_pseudo_labels(pseudo_labels_dir: str, rec: avvp.LLPSplit) -> dict:
  """The ten LLP numbers of a stage-2 run's binary labels on split `rec`."""
  pred_a, pred_v = pseudo_label_predictions(pseudo_labels_dir, rec)
  return metrics_lib.avvp_scores(pred_a, pred_v, rec.gt_a, rec.gt_v)
