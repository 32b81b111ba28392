"""Stage 2: frozen generator on LLP -> thresholds, pseudo-labels.

The method: docs/METHOD.md, "Stage 2".
"""
# pylint: disable=invalid-name

from __future__ import annotations

import os

from absl import logging

from ear_jax import generator_lib
from ear_jax import jsonio
from ear_jax import metrics as metrics_lib
from ear_jax import pseudo_labels as pl_lib
from ear_jax import runs as runs_lib
from ear_jax import trainer as trainer_lib
from ear_jax.data import avvp
from ear_jax.data import llp_features
from ear_jax.data import pseudo_label_files as pl_files

SPLITS = avvp.LLP_SPLITS


def _up_to_date(config, source: dict, ids: dict) -> bool:
  manifest = pl_files.read_manifest(config.workdir)
  if manifest is None:
    return False
  files = [os.path.join(config.workdir, "eval", f"{p}{s}.json")
           for p in ("", "baselines_") for s in ("val", "test")]
  return (all(os.path.isfile(f) for f in files)
          and manifest.get("source") == source
          and manifest.get("ids") == ids)


def _log_tables(workdir: str) -> None:
  for s in ("val", "test"):
    rows = {}
    base = jsonio.read_json(
        os.path.join(workdir, "eval", f"baselines_{s}.json"))
    rows.update({f"{s} {k}": v for k, v in base.items() if isinstance(v, dict)})
    rows[f"{s} pseudo-labels"] = jsonio.read_json(
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
  pl_files.remove_stale_temporaries(config.workdir)  # of a killed run

  graphdef, weights, step, which = generator_lib.restore(
      config.generator_workdir, gen_config, config.checkpoint)
  source = dict(generator_workdir=os.path.abspath(config.generator_workdir),
                checkpoint=which, checkpoint_step=step,
                logits=config.logits, model=gen_config.model.to_dict())
  if _up_to_date(config, source, ids):
    logging.info("%s is up to date (generator step %d, same ids): skipped.",
                 pl_files.llp_dir(config.workdir), step)
    _log_tables(config.workdir)
    return

  z = generator_lib.llp_logits(config, graphdef, weights, splits)
  suffix = "" if config.logits == "dynamic" else "_sta"
  za, zv = z["z_a" + suffix], z["z_v" + suffix]
  f_dtype = config.get("threshold_precision", "float64")
  th_a, th_v, scores = generator_lib.label_and_score(za, zv, splits, f_dtype)
  *_, zs_scores = generator_lib.label_and_score(z["z_a_sta"], z["z_v_sta"],
                                                splits, f_dtype)
  # The eval files describe the new labels: publish_stage2 writes them
  # after swapping the labels in and before the manifest that completes
  # them, so a kill anywhere leaves no mix of old and new.
  evals = {}
  for s in ("val", "test"):
    extra = dict(split=s, n_videos=len(ids[s]), **source)
    evals[f"eval/{s}.json"] = metrics_lib.eval_row(scores[s], extra)
    weak = generator_lib.weak_everywhere_scores(splits[s])
    evals[f"eval/baselines_{s}.json"] = {
        "weak_everywhere": metrics_lib.with_avg(weak),
        "zero_shot": metrics_lib.with_avg(zs_scores[s])}

  # write_stage2 adds the ids, T and thresholds.
  manifest = dict(classes=list(avvp.LLP_CLASSES), source=source)
  out = pl_files.publish_stage2(
      config.workdir,
      extra_json=evals,
      split_ids=ids,
      a_logits={s: za[s] for s in SPLITS},
      v_logits={s: zv[s] for s in SPLITS},
      a_labels={s: pl_lib.binarize(za[s], th_a, splits[s].weak)
                for s in SPLITS},
      v_labels={s: pl_lib.binarize(zv[s], th_v, splits[s].weak)
                for s in SPLITS},
      thresholds_a=th_a, thresholds_v=th_v,
      manifest=manifest)
  logging.info("stage 2: wrote %s (generator %s step %d)", out, which, step)
  _log_tables(config.workdir)

