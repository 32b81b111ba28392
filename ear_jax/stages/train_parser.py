"""Stage 3: train the EAR parser (or HAN) on LLP with stage-2 pseudo-labels."""
# pylint: disable=invalid-name

from __future__ import annotations

import os

from absl import logging
from flax import nnx
import jax
import numpy as np

from ear_jax import evaluator as evaluator_lib
from ear_jax import losses as losses_lib
from ear_jax import metrics as metrics_lib
from ear_jax import models as models_lib
from ear_jax import pseudo_labels as pl_lib
from ear_jax import trainer as trainer_lib
from ear_jax.data import avvp
from ear_jax.data import llp_features

NUM_SEGMENTS = 10
PARSERS = ("ear", "han")


def model_factory(config):
  """make_model() of the parser described by config.model / data.features."""
  name = config.model.name
  if name not in PARSERS:
    raise ValueError(f"config.model.name={name!r}; expected one of {PARSERS}.")
  in_dim_a, in_dim_v = llp_features.parser_input_dims(
      config.data.features, config.model.use_3d_with_clip)

  def make_model():
    return models_lib.get_model(
        name, config.model, rngs=nnx.Rngs(config.seed), in_dim_a=in_dim_a,
        in_dim_v=in_dim_v, num_classes=len(avvp.LLP_CLASSES))

  return make_model


def make_loss_fn(config, thresholds_a, thresholds_v, class_freq_a,
                 class_freq_v):
  """loss_fn(model, batch, key) for trainer.fit; the label statistics are
  constants closed over (spec STAGE3 §4.2-4.3)."""
  consts = [np.asarray(x, np.float32) for x in
            (thresholds_a, thresholds_v, class_freq_a, class_freq_v)]

  def loss_fn(model, batch, key):
    k_drop, k_loss = jax.random.split(key)
    out = model(batch, deterministic=False, rngs=nnx.Rngs(dropout=k_drop))
    return losses_lib.parser_loss(
        out, batch, classify=model.classify, key=k_loss,
        thresholds_a=consts[0], thresholds_v=consts[1],
        class_freq_a=consts[2], class_freq_v=consts[3], cfg=config.loss)

  return loss_fn


def load_inputs(config, ids) -> dict[str, np.ndarray]:
  return llp_features.load_parser_inputs(
      config.data.llp_root, ids, config.data.features,
      config.model.use_3d_with_clip, config.data.num_load_workers)


def predict_fn(model, batch):
  out = model(batch, deterministic=True)
  return {k: out[k] for k in ("global_prob", "a_logits", "v_logits")}


def make_predictor(graphdef, inputs, batch_size):
  return evaluator_lib.Predictor(graphdef, predict_fn, inputs, batch_size)


def score(predictor, weights, rec: avvp.LLPSplit, strict: bool) -> dict:
  """The ten LLP numbers of the parser on split `rec` (spec STAGE3 §5)."""
  out = predictor(weights)
  pred_a, pred_v = metrics_lib.binarize_parser_outputs(
      out["global_prob"], out["a_logits"], out["v_logits"], strict=strict)
  return metrics_lib.avvp_scores(pred_a, pred_v, rec.gt_a, rec.gt_v)


def load_pseudo_labels(pseudo_labels_dir: str, ids) -> dict:
  """Stage-2 artifacts of `ids`, checked against LLP's classes and T."""
  try:
    return pl_lib.read_stage2(
        pseudo_labels_dir, list(ids), expect_classes=list(avvp.LLP_CLASSES),
        expect_num_segments=NUM_SEGMENTS)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise type(e)(
        f"pseudo_labels_dir={pseudo_labels_dir!r} does not fit the LLP train"
        f" split: {e}") from e


def run(config):
  ann = llp_features.annotations_dir(config.data.llp_root,
                                     config.data.llp_annotations_dir)
  train_rec, val_rec, test_rec = (avvp.read_llp_split(ann, s)
                                  for s in ("train", "val", "test"))
  pl = load_pseudo_labels(config.pseudo_labels_dir, train_rec.ids)
  train = dict(load_inputs(config, train_rec.ids),
               weak=train_rec.weak.astype(np.float32),
               a_logit=np.asarray(pl["a_logit"], np.float32),
               v_logit=np.asarray(pl["v_logit"], np.float32))
  loss_fn = make_loss_fn(config, pl["thresholds_a"], pl["thresholds_v"],
                         pl_lib.class_frequencies(pl["a_label"]),
                         pl_lib.class_frequencies(pl["v_label"]))
  logging.info("LLP: %d train, %d val, %d test; features %s; pseudo-labels"
               " %s", len(train_rec.ids), len(val_rec.ids), len(test_rec.ids),
               config.data.features, config.pseudo_labels_dir)

  make_model = model_factory(config)
  graphdef = nnx.graphdef(nnx.eval_shape(make_model))

  strict = config.eval.strict
  predictors = {}

  def predictor(split, rec):
    if split not in predictors:  # built (and compiled) once per split
      predictors[split] = make_predictor(
          graphdef, load_inputs(config, rec.ids), config.eval_batch_size)
    return predictors[split]

  def evaluate(weights):
    scores = score(predictor("val", val_rec), weights, val_rec, strict)
    return evaluator_lib.prefixed("val", scores)

  result = trainer_lib.fit(
      config, make_model=make_model, loss_fn=loss_fn,
      make_batch=evaluator_lib.gather, train_data=train,
      num_train=len(train_rec.ids), evaluate=evaluate,
      best_metric=config.best_metric,
      meta=dict(num_classes=len(avvp.LLP_CLASSES),
                pseudo_labels_dir=os.path.abspath(config.pseudo_labels_dir)))

  # best_step is None when val never beat 0: then these are the last weights.
  which = "latest" if result.best_step is None else "best"
  step = result.final_step if result.best_step is None else result.best_step
  rows = {}
  for split, rec in (("val", val_rec), ("test", test_rec)):
    scores = score(predictor(split, rec), result.weights, rec, strict)
    rows[split] = metrics_lib.write_eval_json(
        os.path.join(config.workdir, "eval", f"{split}.json"), scores,
        extra=dict(split=split, n_videos=len(rec.ids), checkpoint=which,
                   step=step, strict=strict,
                   pseudo_labels_dir=os.path.abspath(
                       config.pseudo_labels_dir)))
  logging.info("stage 3 (%s, best %s=%s at step %s):\n%s", config.model.name,
               config.best_metric, result.best_value, result.best_step,
               metrics_lib.format_table(rows))
