"""Parse videos with a trained stage-3 parser: events JSON, index, timelines."""

from __future__ import annotations

import os

from absl import logging
import jax
import tqdm

from ear_jax import metrics as metrics_lib
from ear_jax import parser_lib
from ear_jax import plots as plots_lib
from ear_jax import report as report_lib
from ear_jax.data import avvp
from ear_jax.data import features as features_lib
from ear_jax.data import llp_features


def ground_truth(annotations_dir: str | None) -> dict:
  """{id: (gt_a [C,T], gt_v [C,T])} of every video with dense labels (the
  val and test splits whose CSVs are in annotations_dir)."""
  gt = {}
  if not annotations_dir:
    return gt
  splits = [s for s in ("val", "test") if os.path.exists(
      os.path.join(annotations_dir, avvp.LLP_SPLIT_FILES[s]))]
  if not splits:
    raise FileNotFoundError(
        f"annotations_dir={annotations_dir!r} holds neither"
        f" {avvp.LLP_SPLIT_FILES['val']} nor {avvp.LLP_SPLIT_FILES['test']};"
        " point it at the LLP CSV folder, or leave it unset.")
  for split in splits:
    rec = avvp.read_llp_split(annotations_dir, split)
    for i, vid in enumerate(rec.ids):
      gt[vid] = (rec.gt_a[i], rec.gt_v[i])
  return gt


def run(config) -> dict:
  """Parses the videos; returns the predictions (ids, probabilities, rows)."""
  cfg, graphdef, weights, step, which = parser_lib.load_parser(
      config.parser_workdir, config.checkpoint)
  feature_set = cfg.data.features
  use_3d = cfg.model.get("use_3d_with_clip", False)
  if config.ids:
    ids = list(dict.fromkeys(i.strip() for i in config.ids.split(",")
                             if i.strip()))
  else:
    names = llp_features.feature_names(feature_set, use_3d)
    ids = features_lib.available_ids(config.features_root, names)
    if not ids:
      raise FileNotFoundError(
          f"{config.features_root} holds no video with all of the"
          f" {feature_set!r} features {names}; point features_root at a"
          " dataset root in the published layouts.")
  inputs = llp_features.load_parser_inputs(
      config.features_root, ids, feature_set, use_3d,
      num_workers=config.data.num_load_workers)
  logging.info("parsing %d videos with %s (%s, step %s)", len(ids),
               config.parser_workdir, cfg.model.name, step)
  out = parser_lib.predict(graphdef, weights, inputs, config.batch_size)
  pred_a, pred_v = metrics_lib.binarize_parser_outputs(
      out["global_prob"], out["a_logits"], out["v_logits"], config.strict)
  gt = ground_truth(config.annotations_dir)
  classes = list(avvp.LLP_CLASSES)
  num_segments = pred_a.shape[-1]
  index = []
  bar = tqdm.tqdm(ids, desc="parse", disable=not config.progress
                  or jax.process_index() != 0)
  for i, vid in enumerate(bar):
    events = report_lib.extract_events(
        pred_a[i], pred_v[i], out["a_prob"][i], out["v_prob"][i],
        out["global_prob"][i], classes, min_confidence=config.min_confidence)
    parsed = dict(
        video_id=vid, num_segments=int(num_segments), events=events,
        video_level={c: round(float(p), 6)
                     for c, p in zip(classes, out["global_prob"][i])})
    rel_json = f"parsed/{vid}.json"
    report_lib.write_json(os.path.join(config.workdir, rel_json), parsed)
    entry = dict(video_id=vid, json=rel_json, num_events=len(events),
                 has_gt=vid in gt)
    if config.timelines:
      entry["timeline"] = f"timelines/{vid}.png"
      plots_lib.timeline(
          os.path.join(config.workdir, entry["timeline"]),
          {"prediction": (pred_a[i], pred_v[i])}, classes, gt=gt.get(vid),
          title=f"{vid} ({cfg.model.name} parser)")
    index.append(entry)
  report_lib.write_json(
      os.path.join(config.workdir, "parsed", "index.json"),
      dict(parser_workdir=os.path.abspath(config.parser_workdir),
           model=cfg.model.name, checkpoint=which,
           checkpoint_step=step, features=feature_set,
           features_root=os.path.abspath(config.features_root),
           strict=bool(config.strict),
           min_confidence=float(config.min_confidence),
           segment_seconds=1.0, videos=index))
  logging.info("wrote %d parsed videos to %s", len(ids),
               os.path.join(config.workdir, "parsed"))
  return dict(out, ids=ids, pred_a=pred_a, pred_v=pred_v)
