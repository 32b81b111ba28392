"""Scores a finished stage-3 parser or stage-2 pseudo-label run on LLP."""
# pylint: disable=invalid-name

from __future__ import annotations

import os

from absl import logging

from ear_jax import generator_lib
from ear_jax import jsonio
from ear_jax import metrics as metrics_lib
from ear_jax import parser_lib
from ear_jax import runs as runs_lib
from ear_jax import trainer as trainer_lib
from ear_jax.data import avvp
from ear_jax.data import llp_features

_GT_SPLITS = ("val", "test")


def _predict_parser(config, run_config, rec) -> tuple[tuple, dict]:
  graphdef, weights, step, which = runs_lib.restore_run(
      config.run_workdir, parser_lib.model_factory(run_config),
      config.checkpoint)
  strict = (run_config.eval.strict if config.strict is None
            else config.strict)
  batch_size = config.eval_batch_size or run_config.eval_batch_size
  predictor = parser_lib.make_predictor(
      graphdef, parser_lib.load_inputs(run_config, rec.ids), batch_size)
  preds = parser_lib.predictions(predictor, weights, strict)
  return preds, dict(checkpoint=which, step=step, strict=strict)


def _predictions_from_csvs(config):
  """(rec, pred_a, pred_v) of LLP-format CSVs in config.predictions_dir."""
  if not config.data.get("llp_root"):
    raise ValueError("--config.predictions_dir scores against an LLP split:"
                     " set --config.data.llp_root (the AVVP_*.csv folder).")
  ann = llp_features.annotations_dir(config.data.llp_root,
                                     config.data.get("llp_annotations_dir"))
  rec = avvp.read_llp_split(ann, config.split)
  paths = [os.path.join(config.predictions_dir, f"eval_{m}.csv")
           for m in ("audio", "visual")]
  coverage = prediction_coverage(config.predictions_dir, paths, rec,
                                 config.split)
  pred_a, pred_v = (avvp.read_llp_eval(p, rec.filenames) for p in paths)
  return rec, pred_a, pred_v, coverage


def prediction_coverage(predictions_dir: str, paths, rec, split: str
                        ) -> dict:
  """How many of the split's videos the predictions name.

  The videos predicted are the parse stage's parsed rows (its index.json,
  so a video with no event counts) or else every filename in the CSVs.
  None of the split: a ValueError with an example of each naming; part of
  it: {"covered", "total", "missing_example"} for the result.
  """
  index = os.path.join(predictions_dir, "index.json")
  if os.path.isfile(index):
    rows = jsonio.read_json(index).get("videos", [])
    named = [r["filename"] for r in rows if r.get("status") == "parsed"
             and "filename" in r]
    source = index
  else:
    named = list(dict.fromkeys(
        f for p in paths for f in avvp.llp_eval_filenames(p)))
    source = " and ".join(paths)
  split_names = set(rec.filenames)
  covered = [f for f in dict.fromkeys(named) if f in split_names]
  total = len(rec.filenames)
  if not covered:
    split_ids = set(rec.ids)
    hint = (" They are bare video ids: parse with --config.annotations_dir="
            "<the AVVP_*.csv folder> (or a features_root that holds them) so"
            " the CSVs use LLP filenames." if any(f in split_ids
                                                  for f in named) else "")
    raise ValueError(
        f"the predictions in {predictions_dir} cover none of the"
        f" {total} {split!r} videos: {len(named)} videos are named there"
        f" (e.g. {named[0] if named else 'none'!r}), the split names videos"
        f" like {rec.filenames[0]!r} ({source}). Predictions must name"
        f" videos by their LLP filename.{hint}")
  missing = [f for f in rec.filenames if f not in set(covered)]
  return dict(covered=len(covered), total=total,
              missing_example=missing[0] if missing else None)


def _write(config, rec, pred_a, pred_v, source: str, **extra):
  """eval/<split>.json (ten aggregates + avg) and the per-class / per-video
  files beside it."""
  scores = metrics_lib.avvp_scores(pred_a, pred_v, rec.gt_a, rec.gt_v)
  metrics_lib.write_eval_details(
      os.path.join(config.workdir, "eval"), config.split, rec.filenames,
      avvp.LLP_CLASSES, pred_a, pred_v, rec.gt_a, rec.gt_v)
  coverage = extra.get("coverage")
  note = ""
  if coverage and coverage["covered"] < coverage["total"]:
    note = (f"\nPARTIAL: the predictions cover {coverage['covered']} of the"
            f" {coverage['total']} {config.split!r} videos (e.g. no"
            f" prediction for {coverage['missing_example']!r}); the others"
            " are scored as predicting no event.")
    extra["partial"] = note.strip()
  row = metrics_lib.write_eval_json(
      os.path.join(config.workdir, "eval", f"{config.split}.json"), scores,
      extra=dict(split=config.split, n_videos=len(rec.ids), **extra))
  logging.info("%s on LLP %s:\n%s%s", source, config.split,
               metrics_lib.format_table({extra.get("run_stage", "csv"): row}),
               note)
  if note:
    logging.warning("%s", note.strip())


def run(config):
  if config.split not in _GT_SPLITS:
    raise ValueError(f"config.split={config.split!r}; expected one of"
                     f" {_GT_SPLITS} (LLP has dense labels only there).")
  if bool(config.run_workdir) == bool(config.get("predictions_dir")):
    raise ValueError("set exactly one of --config.run_workdir (a stage-2/3"
                     " run) and --config.predictions_dir (LLP-format CSVs).")
  if config.get("predictions_dir"):
    rec, pred_a, pred_v, coverage = _predictions_from_csvs(config)
    trainer_lib.write_config(config.workdir, config)
    _write(config, rec, pred_a, pred_v, config.predictions_dir,
           predictions_dir=os.path.abspath(config.predictions_dir),
           coverage=coverage)
    return
  run_config = runs_lib.read_run_config(
      config.run_workdir, ("train_parser", "generate_pseudo_labels"))
  # Paths given here win over the run's (the data may have moved).
  with run_config.unlocked():
    for key in ("llp_root", "llp_annotations_dir"):
      if config.data.get(key):
        run_config.data[key] = config.data[key]
  if not run_config.data.get("llp_root"):
    raise ValueError(f"{config.run_workdir}/config.json has no data.llp_root;"
                     " set --config.data.llp_root.")
  ann = llp_features.annotations_dir(run_config.data.llp_root,
                                     run_config.data.get("llp_annotations_dir"))
  rec = avvp.read_llp_split(ann, config.split)
  trainer_lib.write_config(config.workdir, config)

  if run_config.stage == "train_parser":
    (pred_a, pred_v), extra = _predict_parser(config, run_config, rec)
  else:
    pred_a, pred_v = generator_lib.pseudo_label_predictions(
        config.run_workdir, rec)
    extra = {}
  _write(config, rec, pred_a, pred_v, config.run_workdir,
         run_workdir=os.path.abspath(config.run_workdir),
         run_stage=run_config.stage, **extra)
