"""Stage 2: frozen generator on LLP -> thresholds, pseudo-labels (spec §5)."""
# pylint: disable=invalid-name

from __future__ import annotations

import json
import os
import shutil
import tempfile

from absl import logging
from flax import nnx
import numpy as np

from ear_jax import evaluator as evaluator_lib
from ear_jax import metrics as metrics_lib
from ear_jax import models as models_lib
from ear_jax import pseudo_labels as pl_lib
from ear_jax import runs as runs_lib
from ear_jax import trainer as trainer_lib
from ear_jax import writer as writer_lib
from ear_jax.data import avvp
from ear_jax.data import features as features_lib
from ear_jax.data import llp_features

SPLITS = ("train", "val", "test")
NUM_SEGMENTS = 10


def pl_dir(workdir: str) -> str:
  return os.path.join(workdir, pl_lib.LLP_DIR)


def read_manifest(workdir: str) -> dict | None:
  path = os.path.join(pl_dir(workdir), pl_lib.MANIFEST)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def gt_scores(pred_a_NxTxC, pred_v_NxTxC, rec: avvp.LLPSplit) -> dict:
  """avvp_scores of [N,T,C] predictions against a split's dense GT."""
  to_nct = lambda x: np.ascontiguousarray(np.swapaxes(x, 1, 2))
  return metrics_lib.avvp_scores(to_nct(pred_a_NxTxC), to_nct(pred_v_NxTxC),
                                 rec.gt_a, rec.gt_v)


# ------------------------------------------------------------------ stage 2
def _load_generator(config, gen_config):
  def make_model():
    return models_lib.get_model("generator", gen_config.model,
                                rngs=nnx.Rngs(config.seed))

  return runs_lib.restore_run(config.generator_workdir, gen_config,
                              make_model, config.checkpoint)


def _predict(config, graphdef, weights, splits):
  """Generator logits of every LLP video: {key: {split: f32 [N,T,C]}}."""
  root, num_classes = config.data.llp_root, len(avvp.LLP_CLASSES)
  text_a = features_lib.load_event_features(root, "clap", num_classes)
  text_v = features_lib.load_event_features(root, "clip", num_classes)
  ids = [i for s in SPLITS for i in splits[s].ids]
  data = {name: features_lib.load_segment_features(
      root, name, ids, num_workers=config.data.num_load_workers)
          for name in ("clip", "clap")}
  data["valid"] = np.ones((len(ids), NUM_SEGMENTS), np.float32)

  def predict_fn(model, batch):
    out = model(batch, text_a, text_v, deterministic=True)
    return {k: out[k] for k in ("z_a", "z_v", "z_a_sta", "z_v_sta")}

  # One jitted scan over all three splits.
  out = evaluator_lib.Predictor(graphdef, predict_fn, data,
                                config.eval_batch_size)(weights)
  bounds = np.cumsum([0] + [len(splits[s].ids) for s in SPLITS])
  return {k: {s: v[bounds[i]:bounds[i + 1]] for i, s in enumerate(SPLITS)}
          for k, v in out.items()}


def _label_and_score(za, zv, splits, f_dtype="float64"):
  """Val-tuned thresholds; val/test scores of the binary labels (§5.3)."""
  val = splits["val"]
  th_a = pl_lib.search_thresholds(za["val"], val.gt_a, val.weak, f_dtype)
  th_v = pl_lib.search_thresholds(zv["val"], val.gt_v, val.weak, f_dtype)
  scores = {s: gt_scores(pl_lib.binarize(za[s], th_a, splits[s].weak),
                        pl_lib.binarize(zv[s], th_v, splits[s].weak),
                        splits[s]) for s in ("val", "test")}
  return th_a, th_v, scores


def _weak_everywhere(rec: avvp.LLPSplit) -> dict:
  pred_NxTxC = np.repeat(rec.weak[:, None, :], NUM_SEGMENTS, axis=1)
  return gt_scores(pred_NxTxC, pred_NxTxC, rec)


def _up_to_date(config, source: dict, ids: dict) -> bool:
  manifest = read_manifest(config.workdir)
  if manifest is None:
    return False
  files = [os.path.join(config.workdir, "eval", f"{p}{s}.json")
           for p in ("", "baselines_") for s in ("val", "test")]
  return (all(os.path.isfile(f) for f in files)
          and manifest.get("source") == source
          and manifest.get("ids") == ids)


def _write_stage2_atomic(workdir, **kw):
  """Writes LLP_Dataset/ beside the old one, then swaps it in."""
  os.makedirs(workdir, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".stage2-", dir=workdir)
  try:
    pl_lib.write_stage2(tmp, **kw)
    old = pl_dir(workdir) + ".old"
    if os.path.exists(pl_dir(workdir)):
      shutil.rmtree(old, ignore_errors=True)
      os.replace(pl_dir(workdir), old)
    os.replace(os.path.join(tmp, pl_lib.LLP_DIR), pl_dir(workdir))
    shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _log_tables(workdir: str) -> None:
  for s in ("val", "test"):
    rows = {}
    base = trainer_lib.read_json(
        os.path.join(workdir, "eval", f"baselines_{s}.json"))
    rows.update({f"{s} {k}": v for k, v in base.items() if isinstance(v, dict)})
    rows[f"{s} pseudo-labels"] = trainer_lib.read_json(
        os.path.join(workdir, "eval", f"{s}.json"))
    logging.info("stage 2, LLP %s:\n%s", s, metrics_lib.format_table(rows))


def run(config):
  gen_config = runs_lib.read_run_config(config.generator_workdir,
                                        "pretrain_generator")
  if config.logits not in ("dynamic", "static"):
    raise ValueError(f"config.logits={config.logits!r}; expected 'dynamic'"
                     " or 'static'.")
  ann = llp_features.annotations_dir(config.data.llp_root,
                                     config.data.llp_annotations_dir)
  splits = {s: avvp.read_llp_split(ann, s) for s in SPLITS}
  ids = {s: list(splits[s].ids) for s in SPLITS}
  trainer_lib.write_config(config.workdir, config)

  graphdef, weights, step, which = _load_generator(config, gen_config)
  source = dict(generator_workdir=os.path.abspath(config.generator_workdir),
                checkpoint=which, checkpoint_step=step,
                logits=config.logits, model=gen_config.model.to_dict())
  if _up_to_date(config, source, ids):
    logging.info("%s is up to date (generator step %d, same ids): skipped.",
                 pl_dir(config.workdir), step)
    _log_tables(config.workdir)
    return

  z = _predict(config, graphdef, weights, splits)
  suffix = "" if config.logits == "dynamic" else "_sta"
  za, zv = z["z_a" + suffix], z["z_v" + suffix]
  f_dtype = config.get("threshold_precision", "float64")
  th_a, th_v, scores = _label_and_score(za, zv, splits, f_dtype)
  *_, zs_scores = _label_and_score(z["z_a_sta"], z["z_v_sta"], splits,
                                   f_dtype)
  for s in ("val", "test"):
    extra = dict(split=s, n_videos=len(ids[s]), **source)
    metrics_lib.write_eval_json(
        os.path.join(config.workdir, "eval", f"{s}.json"), scores[s], extra)
    base = {"weak_everywhere": metrics_lib.with_avg(_weak_everywhere(
        splits[s])), "zero_shot": metrics_lib.with_avg(zs_scores[s])}
    writer_lib.write_json_atomic(
        os.path.join(config.workdir, "eval", f"baselines_{s}.json"), base)

  # write_stage2 adds the ids, T and thresholds.
  manifest = dict(classes=list(avvp.LLP_CLASSES), source=source)
  _write_stage2_atomic(
      config.workdir,
      split_ids=ids,
      a_logits={s: za[s] for s in SPLITS},
      v_logits={s: zv[s] for s in SPLITS},
      thresholds_a=th_a, thresholds_v=th_v,
      weak={s: splits[s].weak for s in SPLITS},
      manifest=manifest)
  logging.info("stage 2: wrote %s (generator %s step %d)",
               pl_dir(config.workdir), which, step)
  _log_tables(config.workdir)

