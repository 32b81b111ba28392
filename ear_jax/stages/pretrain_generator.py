"""Stage 1: pre-train the pseudo-label generator on UnAV-100.

The method: docs/METHOD.md, "Stage 1".
"""

from __future__ import annotations

import os

from absl import logging
from flax import nnx

from ear_jax import generator_lib
from ear_jax import jsonio
from ear_jax import metrics as metrics_lib
from ear_jax import trainer as trainer_lib
from ear_jax.data import avvp


def run(config):
  train, _ = generator_lib.load_unav(config, "train")
  val, val_rec = generator_lib.load_unav(config, "validation")
  text_a, text_v = generator_lib.load_text(config.data.unav_root,
                                           len(avvp.UNAV_CLASSES))
  logging.info("UnAV: %d train, %d validation videos, T=%d",
               len(train["valid"]), len(val["valid"]), train["y_av"].shape[1])

  make_model = generator_lib.model_factory(config)
  graphdef = nnx.graphdef(nnx.eval_shape(make_model))
  predictor = generator_lib.make_unav_predictor(
      graphdef, val, text_a, text_v, config.eval_batch_size)

  result = trainer_lib.fit(
      config, make_model=make_model,
      loss_fn=generator_lib.make_loss_fn(config),
      loss_args=generator_lib.loss_args(text_a, text_v),
      make_batch=generator_lib.make_batch, train_data=train,
      num_train=len(train["valid"]),
      evaluate=lambda w: generator_lib.seg_av_on_device(predictor, w),
      best_metric=config.best_metric,
      meta=dict(num_classes=len(avvp.UNAV_CLASSES)))
  if result.seeds is not None:  # N seeds: the mean and the spread
    per_seed = [generator_lib.unav_scores(
        predictor, trainer_lib.seed_slice(result.weights, k), val["y_av"])
                for k in range(len(result.seeds))]
    extra = dict(split="validation", n_videos=len(val_rec.ids),
                 best_step=result.best_step)
    spread = metrics_lib.seeds_row(per_seed, result.seeds, extra,
                                   keys=("seg_av", "evt_av"))
    eval_dir = os.path.join(config.workdir, "eval")
    jsonio.write_json_atomic(
        os.path.join(eval_dir, "unav_validation_seeds.json"), spread)
    jsonio.write_json_atomic(
        os.path.join(eval_dir, "unav_validation.json"),
        {**spread["mean"], **extra, "num_seeds": spread["n"],
         "seeds": spread["seeds"]})
    logging.info("stage 1 done (%d seeds): seg_av %.2f ± %.2f, best %s=%s"
                 " at steps %s", spread["n"], spread["mean"]["seg_av"],
                 spread["std"]["seg_av"], config.best_metric,
                 result.best_value, result.best_step)
    return
  final = generator_lib.unav_scores(predictor, result.weights, val["y_av"])
  # UnAV has audio-visual labels only, so only the AV metrics exist here;
  # the ten LLP metrics of the generator come from stage 2.
  jsonio.write_json_atomic(
      os.path.join(config.workdir, "eval", "unav_validation.json"),
      {**final, "split": "validation", "n_videos": len(val_rec.ids),
       "best_step": result.best_step})
  logging.info("stage 1 done: best %s=%s at step %s", config.best_metric,
               result.best_value, result.best_step)
