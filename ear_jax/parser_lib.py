"""The parser's recipes (stage 3, docs/METHOD.md): model factory, LLP inputs,
stage-2 pseudo-labels, loss closure, predictor and the official scores.

`train_parser`, `evaluate`, `parse`, the demo and the benchmarks build every
parser through these, so a checkpoint restores exactly as it was trained.
"""
# pylint: disable=invalid-name

from __future__ import annotations

import dataclasses

from flax import nnx
import jax
import ml_collections
import numpy as np

from ear_jax import evaluator as evaluator_lib
from ear_jax import losses as losses_lib
from ear_jax import metrics as metrics_lib
from ear_jax import models as models_lib
from ear_jax import pseudo_labels as pl_lib
from ear_jax import runs as runs_lib
from ear_jax import trainer as trainer_lib
from ear_jax.data import avvp
from ear_jax.data import llp_features
from ear_jax.data import pseudo_label_files as pl_files
from ear_jax.data import valor_labels


def model_factory(config):
  """make_model(seed=None) of the parser described by config.model /
  data.features; seed (an int or a PRNG key; None = config.seed) is what
  the trainer passes traced, so one init program serves every seed."""
  name = config.model.name
  if name not in models_lib.PARSERS:
    raise ValueError(f"config.model.name={name!r}; expected one of"
                     f" {tuple(models_lib.PARSERS)}.")
  in_dim_a, in_dim_v = llp_features.parser_input_dims(
      config.data.features, config.model.use_3d_with_clip)

  def make_model(seed=None):
    return models_lib.get_model(
        name, config.model,
        rngs=nnx.Rngs(config.seed if seed is None else seed),
        in_dim_a=in_dim_a, in_dim_v=in_dim_v,
        num_classes=len(avvp.LLP_CLASSES))

  return make_model


@dataclasses.dataclass(frozen=True)
class ParserLoss:
  """loss_fn(model, batch, key, stats) for trainer.fit (docs/METHOD.md,
  stage-3 losses). Hashable: equal loss configs share one jitted epoch.

  stats (trainer's loss_args): thresholds_a/_v and class_freq_a/_v, [C]
  float32 arrays from stage 2 (`loss_args`), traced, never constants.
  """
  cfg: ml_collections.FrozenConfigDict

  def __call__(self, model, batch, key, stats):
    k_drop, k_loss = jax.random.split(key)
    out = model(batch, deterministic=False, rngs=nnx.Rngs(dropout=k_drop))
    return losses_lib.parser_loss(
        out, batch, classify=model.classify, key=k_loss,
        thresholds_a=stats["thresholds_a"], thresholds_v=stats["thresholds_v"],
        class_freq_a=stats["class_freq_a"], class_freq_v=stats["class_freq_v"],
        cfg=self.cfg)


def make_loss_fn(config) -> ParserLoss:
  """The stage-3 loss of `config.loss`; its data comes via `loss_args`."""
  return ParserLoss(ml_collections.FrozenConfigDict(config.loss))


def loss_args(thresholds_a, thresholds_v, class_freq_a, class_freq_v
              ) -> dict[str, np.ndarray]:
  """The label statistics the loss reads (Eq. (9) thresholds, class-balance
  frequencies), as float32 arrays for trainer.fit(loss_args=...)."""
  return {k: np.asarray(v, np.float32) for k, v in (
      ("thresholds_a", thresholds_a), ("thresholds_v", thresholds_v),
      ("class_freq_a", class_freq_a), ("class_freq_v", class_freq_v))}


def load_inputs(config, ids) -> dict[str, np.ndarray]:
  """{"audio", "visual"} of LLP videos `ids` for config.data.features."""
  return llp_features.load_parser_inputs(
      config.data.llp_root, ids, config.data.features,
      config.model.use_3d_with_clip, config.data.num_load_workers)


def load_pseudo_labels(pseudo_labels_dir: str, ids, fmt: str = "uwav",
                       loss_cfg=None) -> dict:
  """Pseudo-labels of `ids`, checked against LLP's classes and T.

  fmt "uwav": stage-2 artifacts (logits, thresholds, binary labels; ear-jax
  or UWAV's released files). "valor": VALOR's binary labels only
  (data/valor_labels.py); they train with loss.use_soft=False and
  loss.hard_targets="labels" (no logits, so no thresholds or soft labels).
  """
  if fmt not in valor_labels.FORMATS:
    raise ValueError(f"config.pseudo_labels_format={fmt!r}; expected one of"
                     f" {valor_labels.FORMATS}.")
  if fmt == "valor" and loss_cfg is not None and (
      loss_cfg.use_soft or loss_cfg.get("hard_targets") != "labels"):
    raise ValueError(
        "config.pseudo_labels_format='valor': VALOR's labels are binary,"
        " without logits; train on them with --config.loss.use_soft=False"
        " --config.loss.hard_targets=labels.")
  try:
    if fmt == "valor":
      pl = valor_labels.read_valor_labels(
          pseudo_labels_dir, list(ids), num_classes=len(avvp.LLP_CLASSES),
          num_segments=avvp.LLP_NUM_SEGMENTS)
      # Unused: thresholds only enter soft and thresholded targets.
      zeros = np.zeros((len(avvp.LLP_CLASSES),), np.float32)
      return dict(pl, thresholds_a=zeros, thresholds_v=zeros, manifest=None)
    return pl_files.read_stage2(
        pseudo_labels_dir, list(ids), expect_classes=list(avvp.LLP_CLASSES),
        expect_num_segments=avvp.LLP_NUM_SEGMENTS)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise type(e)(
        f"pseudo_labels_dir={pseudo_labels_dir!r} does not fit the LLP train"
        f" split: {e}") from e


def load_pseudo_label_sets(pseudo_labels_dir: str, ids, fmt: str = "uwav",
                           loss_cfg=None, num_seeds: int = 1) -> list[dict]:
  """load_pseudo_labels of every set at `pseudo_labels_dir`: one set, or
  the N sets of a stage 2 run on an N-seed stage 1 (seed order). A run of
  `num_seeds` seeds pairs seed k with set k, so it needs N == num_seeds,
  or N == 1 (one set shared by every seed)."""
  dirs = (pl_files.pseudo_label_sets(pseudo_labels_dir) if fmt == "uwav"
          else [pseudo_labels_dir])
  if len(dirs) not in (1, num_seeds):
    raise ValueError(
        f"pseudo_labels_dir={pseudo_labels_dir!r} holds {len(dirs)}"
        f" pseudo-label sets (a stage 2 of a {len(dirs)}-seed stage 1), but"
        f" config.num_seeds={num_seeds}: seed k trains on set k, so use"
        f" --config.num_seeds={len(dirs)}, or a stage-2 run with 1 set or"
        f" {num_seeds} sets.")
  return [load_pseudo_labels(d, ids, fmt, loss_cfg) for d in dirs]


def _label_arrays(config, pl: dict) -> dict:
  out = {}
  for m in ("a", "v"):
    if f"{m}_logit" in pl:
      out[f"{m}_logit"] = np.asarray(pl[f"{m}_logit"], np.float32)
    if config.loss.get("hard_targets", "threshold") == "labels":
      out[f"{m}_label"] = np.asarray(pl[f"{m}_label"], np.uint8)
  return out


def train_data(config, rec: avvp.LLPSplit, pl: dict) -> dict:
  """The device-resident training set: inputs, weak labels, stage-2 logits
  (and the binary labels when the loss trains on them)."""
  data = dict(load_inputs(config, rec.ids), weak=rec.weak.astype(np.float32))
  data.update(_label_arrays(config, pl))
  return data


def seed_train_data(config, rec: avvp.LLPSplit, pls: list[dict]):
  """(train_data, loss_args, trainer.SeedAxes) of an N-seed run on N
  pseudo-label sets: the inputs are shared, each set's label arrays and
  loss_args are stacked on a leading seed axis (seed k: set k)."""
  data = dict(load_inputs(config, rec.ids), weak=rec.weak.astype(np.float32))
  labels = [_label_arrays(config, pl) for pl in pls]
  data.update({k: np.stack([x[k] for x in labels]) for k in labels[0]})
  args = [loss_args_from_pseudo_labels(pl) for pl in pls]
  stacked = {k: np.stack([a[k] for a in args]) for k in args[0]}
  return data, stacked, trainer_lib.SeedAxes(data_keys=tuple(labels[0]),
                                             loss_args=True)


def loss_args_from_pseudo_labels(pl: dict) -> dict[str, np.ndarray]:
  """loss_args with the thresholds and class frequencies of stage-2 `pl`."""
  return loss_args(pl["thresholds_a"], pl["thresholds_v"],
                   pl_lib.class_frequencies(pl["a_label"]),
                   pl_lib.class_frequencies(pl["v_label"]))


def predict_fn(model, batch):
  out = model(batch, deterministic=True)
  return {k: out[k] for k in ("global_prob", "a_logits", "v_logits")}


def make_predictor(graphdef, inputs, batch_size) -> evaluator_lib.Predictor:
  return evaluator_lib.Predictor(graphdef, predict_fn, inputs, batch_size)


def predictions(predictor, weights, strict: bool):
  """(pred_a, pred_v) uint8 [N, C, T] of the predictor's split."""
  out = predictor(weights)
  return metrics_lib.binarize_parser_outputs(
      out["global_prob"], out["a_logits"], out["v_logits"], strict=strict)


def score(predictor, weights, rec: avvp.LLPSplit, strict: bool) -> dict:
  """The ten LLP numbers of the parser on split `rec`, Eq. (M1)-(M4)."""
  pred_a, pred_v = predictions(predictor, weights, strict)
  return metrics_lib.avvp_scores(pred_a, pred_v, rec.gt_a, rec.gt_v)


def load_parser(parser_workdir: str, which: str = "auto",
                seed_index: int = 0):
  """(config, graphdef, weights, step, checkpoint) of a finished stage-3
  run, rebuilt from its config.json exactly as train_parser built it;
  `checkpoint` is the one "auto" resolved to. A run of N seeds gives seed
  `seed_index`'s weights (its own selection; config.seed + seed_index)."""
  cfg = runs_lib.read_run_config(parser_workdir, "train_parser")
  graphdef, weights, step, which = runs_lib.restore_run(
      parser_workdir, model_factory(cfg), which, seed_index=seed_index)
  return cfg, graphdef, weights, step, which


def predict(graphdef, weights, inputs: dict, batch_size: int) -> dict:
  """global_prob [N,C], a_logits/v_logits [N,T,C], a_prob/v_prob [N,C,T]."""
  out = make_predictor(graphdef, inputs, batch_size)(weights)
  sig = lambda x: np.moveaxis(1 / (1 + np.exp(-x.astype(np.float64))), 1, 2)
  return dict(out, a_prob=sig(out["a_logits"]), v_prob=sig(out["v_logits"]))


def adjacencies(graphdef, weights) -> dict[str, np.ndarray]:
  """The learned ERM adjacencies of a parser ({} if it has none: HAN, or EAR
  without the graph ERM), e.g. {"uni_a/layer0": [C, C], "multi/layer0":
  [2C, 2C]}."""
  get = getattr(trainer_lib.merge(graphdef, weights), "adjacencies", None)
  return {k: np.asarray(v) for k, v in get().items()} if get else {}
