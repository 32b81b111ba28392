"""Parse videos of any length with a trained stage-3 parser (configs/parse.py):
raw videos or features -> events JSON, LLP-format CSVs, timelines, manifest."""

from __future__ import annotations

import os

from absl import logging
import jax
import tqdm

from ear_jax import parsing
from ear_jax import plots as plots_lib
from ear_jax import validate as validate_lib
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


def llp_filenames(annotations_dir: str | None) -> dict[str, str]:
  """{id: LLP filename} of every split CSV in annotations_dir."""
  names = {}
  for split, csv in avvp.LLP_SPLIT_FILES.items():
    if annotations_dir and os.path.exists(os.path.join(annotations_dir, csv)):
      rec = avvp.read_llp_split(annotations_dir, split)
      names.update(zip(rec.ids, rec.filenames))
  return names


def filename_source(config) -> tuple[dict[str, str], str]:
  """({id: LLP filename}, how the CSVs name videos) for this parse.

  The LLP split CSVs of annotations_dir, else those of features_root (an
  LLP root holds them); without either, videos are named by their ids,
  which the official LLP files do not use, and the note says so.
  """
  for field in ("annotations_dir", "features_root"):
    folder = config.get(field)
    try:
      names = llp_filenames(folder) if folder else {}
    except (ValueError, OSError):
      if field == "annotations_dir":
        raise
      names = {}  # a features root without readable LLP CSVs
    if names:
      return names, f"LLP filenames from the split CSVs in {folder}"
  if config.get("videos"):
    return {}, "video file names (without extension)"
  return {}, (
      "video ids: no LLP split CSV (AVVP_*.csv) in --config.annotations_dir"
      " or --config.features_root, so the CSVs do not match the LLP"
      " annotations' <id>_<start>_<end> filenames; set"
      " --config.annotations_dir to score them with configs/eval.py")


def _sources(config, parser):
  """(root, ids, filenames, records, failures) from features or videos."""
  if config.videos:
    from feature_export import driver  # pylint: disable=g-import-not-at-top
    root = os.path.join(config.workdir, "features")
    exported = driver.export_for(
        parser.features, {"clip_clap": config.export_clip_clap,
                          "han": config.export_han},
        config.videos, root, config.workdir, videos_flag="--config.videos",
        config_flag="--config.export_{name}")
    ids = [vid for vid, _ in exported["videos"]]
    names = {vid: os.path.splitext(os.path.basename(p))[0]
             for vid, p in exported["videos"]}
    return root, ids, names, exported["records"], exported["failures"]
  ids = features_lib.available_ids(config.features_root, parser.features)
  if not ids and not config.ids:
    raise FileNotFoundError(
        f"{config.features_root} holds no video with all of the"
        f" {parser.feature_set!r} features {parser.features}; point"
        " features_root at a dataset root in the published layouts.")
  return config.features_root, ids, {}, {}, {}


def run(config) -> dict:
  """Parses the videos; returns {"ids", "parsed": {id: Parsed}, "rows"}."""
  # As launch.py does before the claim (for callers of run()): exactly one
  # of features_root and videos, input folders that exist, PyAV for videos.
  validate_lib.check_inputs(config)
  # Ids are file names: refused before any work or write (as by launch.py).
  requested = validate_lib.parse_ids(config.ids)
  parser = parsing.Parser.from_workdir(
      config.parser_workdir, config.checkpoint, window=config.window,
      stride=config.stride or None, batch_size=config.batch_size,
      strict=config.strict, min_confidence=config.min_confidence)
  out_dir = os.path.join(config.workdir, "parsed")
  root, ids, names, records, failures = _sources(config, parser)
  if requested is not None:
    ids = requested
  llp_names, naming = filename_source(config)
  if not llp_names and not config.videos:
    logging.warning("parsed/eval_*.csv name videos by %s.", naming)
  names = {**llp_names, **names}
  gt = ground_truth(config.annotations_dir)
  settings = dict(parser.info, window=parser.window, stride=parser.stride,
                  strict=parser.strict, min_confidence=parser.min_confidence)
  rows = parsing.reusable_rows(out_dir, settings)
  for vid, row in rows.items():  # named as this run names them
    row["filename"] = names.get(vid, vid)
  parsed, todo = {}, []
  for vid in ids:
    if vid in failures:
      rows[vid] = dict(video_id=vid, status="failed", reason=failures[vid])
    elif vid not in rows:
      todo.append(vid)
  logging.info("parsing %d videos (%d done before, %d failed to export)"
               " with %s", len(todo), sum(v in rows for v in ids) - len(
                   failures), len(failures), parser.info)
  bar = tqdm.tqdm(total=len(todo), desc="parse", disable=not config.progress
                  or jax.process_index() != 0)
  for lo in range(0, len(todo), config.videos_per_step):
    items = []
    for vid in todo[lo:lo + config.videos_per_step]:
      try:
        inputs = llp_features.load_video_inputs(
            root, vid, parser.feature_set, parser.use_3d)
        items.append((vid, *parser.check_inputs(*inputs, name=vid)))
      except (ValueError, OSError, MemoryError) as e:
        # One bad file is one failed row; the batch goes on.
        reason = str(e) if not isinstance(e, MemoryError) else (
            f"{vid}: its features do not fit in memory ({e})")
        rows[vid] = dict(video_id=vid, status="failed", reason=reason)
    for p in parser.parse_many(items):
      vid, T = p.video_id, p.merged.num_segments
      rows[vid] = parsing.write_parsed(
          out_dir, p, parser, duration=records.get(vid, {}).get("duration"),
          filename=names.get(vid, vid), has_gt=vid in gt)
      if config.timelines:
        truth = gt.get(vid)
        rows[vid]["timeline"] = f"timelines/{vid}.png"
        plots_lib.timeline(
            os.path.join(config.workdir, rows[vid]["timeline"]),
            {"prediction": (p.merged.pred_a, p.merged.pred_v)},
            parser.classes,
            gt=truth if truth is not None and truth[0].shape[1] == T else None,
            title=f"{vid} ({parser.info['model']} parser, {T} s)")
      parsed[vid] = p
    bar.update(len(items))
    parsing.write_index(out_dir, settings, rows, ids, filenames=naming)
  bar.close()
  parsing.write_index(out_dir, settings, rows, ids, filenames=naming)
  csvs = parsing.write_llp_csvs(out_dir, rows)
  n_failed = sum(r["status"] == "failed" for r in rows.values())
  logging.info("%d videos parsed, %d failed; %s; CSVs %s (videos named by"
               " %s)", len(rows) - n_failed, n_failed,
               os.path.join(out_dir, "index.json"), csvs, naming)
  return dict(ids=ids, parsed=parsed, rows=rows)
