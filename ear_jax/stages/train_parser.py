"""Stage 3: train the EAR parser (or HAN) on LLP with stage-2 pseudo-labels."""
# pylint: disable=invalid-name

from __future__ import annotations

import os

from absl import logging
from flax import nnx

from ear_jax import evaluator as evaluator_lib
from ear_jax import metrics as metrics_lib
from ear_jax import parser_lib
from ear_jax import trainer as trainer_lib
from ear_jax.data import avvp
from ear_jax.data import llp_features


def run(config):
  ann = llp_features.annotations_dir(config.data.llp_root,
                                     config.data.llp_annotations_dir)
  train_rec, val_rec, test_rec = (avvp.read_llp_split(ann, s)
                                  for s in avvp.LLP_SPLITS)
  seeds = trainer_lib.seed_list(config)
  pls = parser_lib.load_pseudo_label_sets(
      config.pseudo_labels_dir, train_rec.ids,
      config.get("pseudo_labels_format", "uwav"), config.loss, len(seeds))
  seed_axes = None
  if len(pls) == 1:  # one set, shared by every seed
    train = parser_lib.train_data(config, train_rec, pls[0])
    loss_args = parser_lib.loss_args_from_pseudo_labels(pls[0])
  else:  # seed k trains on set k
    train, loss_args, seed_axes = parser_lib.seed_train_data(
        config, train_rec, pls)
  logging.info("LLP: %d train, %d val, %d test; features %s; pseudo-labels"
               " %s", len(train_rec.ids), len(val_rec.ids), len(test_rec.ids),
               config.data.features, config.pseudo_labels_dir)

  make_model = parser_lib.model_factory(config)
  graphdef = nnx.graphdef(nnx.eval_shape(make_model))

  strict = config.eval.strict
  predictors = {}

  def predictor(split, rec):
    if split not in predictors:  # built (and compiled) once per split
      predictors[split] = parser_lib.make_predictor(
          graphdef, parser_lib.load_inputs(config, rec.ids),
          config.eval_batch_size)
    return predictors[split]

  def evaluate(weights):
    scores = parser_lib.score(predictor("val", val_rec), weights, val_rec,
                              strict)
    return evaluator_lib.prefixed("val", scores)

  result = trainer_lib.fit(
      config, make_model=make_model, loss_fn=parser_lib.make_loss_fn(config),
      loss_args=loss_args,
      make_batch=evaluator_lib.gather, train_data=train,
      num_train=len(train_rec.ids), evaluate=evaluate,
      best_metric=config.best_metric, seed_axes=seed_axes,
      meta=dict(num_classes=len(avvp.LLP_CLASSES),
                pseudo_labels_dir=os.path.abspath(config.pseudo_labels_dir)))
  if len(seeds) > 1:
    _write_seed_results(config, result, predictor, val_rec, test_rec,
                        len(pls))
    return

  # best_step is None when val never beat 0: then these are the last weights.
  which = "latest" if result.best_step is None else "best"
  step = result.final_step if result.best_step is None else result.best_step
  rows = {}
  for split, rec in (("val", val_rec), ("test", test_rec)):
    scores = parser_lib.score(predictor(split, rec), result.weights, rec,
                              strict)
    rows[split] = metrics_lib.write_eval_json(
        os.path.join(config.workdir, "eval", f"{split}.json"), scores,
        extra=dict(split=split, n_videos=len(rec.ids), checkpoint=which,
                   step=step, strict=strict,
                   pseudo_labels_dir=os.path.abspath(
                       config.pseudo_labels_dir)))
  logging.info("stage 3 (%s, best %s=%s at step %s):\n%s", config.model.name,
               config.best_metric, result.best_value, result.best_step,
               metrics_lib.format_table(rows))


def _write_seed_results(config, result, predictor, val_rec, test_rec,
                        num_sets: int) -> None:
  """N seeds: each scored with its own selected weights; eval/<split>.json
  holds the mean over seeds, eval/<split>_seeds.json the spread."""
  seeds, strict = result.seeds, config.eval.strict
  which = ["latest" if b is None else "best" for b in result.best_step]
  steps = [result.final_step if b is None else b for b in result.best_step]
  rows = {}
  for split, rec in (("val", val_rec), ("test", test_rec)):
    per_seed = [parser_lib.score(predictor(split, rec),
                                 trainer_lib.seed_slice(result.weights, k),
                                 rec, strict) for k in range(len(seeds))]
    _, rows[split] = metrics_lib.write_seed_eval_json(
        os.path.join(config.workdir, "eval"), split, per_seed, seeds,
        extra=dict(split=split, n_videos=len(rec.ids), checkpoint=which,
                   step=steps, strict=strict,
                   pseudo_labels_dir=os.path.abspath(
                       config.pseudo_labels_dir),
                   num_pseudo_label_sets=num_sets))
  logging.info("stage 3 (%s, %d seeds %s, best %s=%s at steps %s):\n%s",
               config.model.name, len(seeds), seeds, config.best_metric,
               result.best_value, result.best_step,
               metrics_lib.format_table(rows))
