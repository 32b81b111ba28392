"""Stage 2: frozen generator on LLP -> thresholds, pseudo-labels.

The method: docs/METHOD.md, "Stage 2".
"""
# pylint: disable=invalid-name

from __future__ import annotations

import os
import shutil

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


def _log_tables(workdir: str) -> None:
  for s in ("val", "test"):
    rows = {}
    base = jsonio.read_json(
        os.path.join(workdir, "eval", f"baselines_{s}.json"))
    rows.update({f"{s} {k}": v for k, v in base.items() if isinstance(v, dict)})
    path = os.path.join(workdir, "eval", f"{s}.json")
    # N sets: mean ± std over them (the _seeds.json beside it).
    rows[f"{s} pseudo-labels"] = (metrics_lib.read_seed_eval_json(path)
                                  or jsonio.read_json(path))
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
  num_sets = int(gen_config.get("num_seeds", 1) or 1)
  if num_sets > 1:
    _run_sets(config, gen_config, splits, ids, num_sets)
    return
  _remove_seed_sets(config.workdir)  # of an earlier N-seed source

  graphdef, weights, step, which = generator_lib.restore(
      config.generator_workdir, gen_config, config.checkpoint)
  source = dict(generator_workdir=os.path.abspath(config.generator_workdir),
                checkpoint=which, checkpoint_step=step,
                logits=config.logits, model=gen_config.model.to_dict())
  if _set_up_to_date(config.workdir, source, ids):
    logging.info("%s is up to date (generator step %d, same ids): skipped.",
                 pl_files.llp_dir(config.workdir), step)
    _log_tables(config.workdir)
    return

  out = _make_set(config, config.workdir, graphdef, weights, splits, ids,
                  source)
  logging.info("stage 2: wrote %s (generator %s step %d)", out, which, step)
  _log_tables(config.workdir)


# ------------------------------------------- N sets (an N-seed stage 1)
def _remove_seed_sets(workdir: str) -> None:
  manifest = os.path.join(workdir, pl_files.SEEDS_MANIFEST)
  if os.path.exists(manifest):
    os.remove(manifest)
  shutil.rmtree(os.path.join(workdir, pl_files.SEEDS_DIR), ignore_errors=True)


def _set_up_to_date(set_dir: str, source: dict, ids: dict) -> bool:
  """set_dir (a workdir or a set) holds complete labels of this source."""
  manifest = pl_files.read_manifest(set_dir)
  files = [os.path.join(set_dir, "eval", f"{p}{s}.json")
           for p in ("", "baselines_") for s in ("val", "test")]
  return (manifest is not None and all(os.path.isfile(f) for f in files)
          and manifest.get("source") == source
          and manifest.get("ids") == ids)


def _make_set(config, set_dir, graphdef, weights, splits, ids, source):
  """One complete stage-2 output of the generator `weights` in set_dir
  (the workdir, or set k of an N-seed source): labels, eval/*.json."""
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
  return pl_files.publish_stage2(
      set_dir, extra_json=evals, split_ids=ids,
      a_logits={s: za[s] for s in SPLITS},
      v_logits={s: zv[s] for s in SPLITS},
      a_labels={s: pl_lib.binarize(za[s], th_a, splits[s].weak)
                for s in SPLITS},
      v_labels={s: pl_lib.binarize(zv[s], th_v, splits[s].weak)
                for s in SPLITS},
      thresholds_a=th_a, thresholds_v=th_v,
      manifest=dict(classes=list(avvp.LLP_CLASSES), source=source))


def _run_sets(config, gen_config, splits, ids, num_sets: int) -> None:
  """Stage 2 on an N-seed stage 1: set k (generator seed k's weights) is a
  complete stage-2 output in <workdir>/seeds/<k>/; eval/{val,test}.json
  hold the mean over sets, eval/{val,test}_seeds.json the spread, and
  seeds_manifest.json, written last, names the sets. A re-run keeps the
  sets that are up to date (resume after a kill)."""
  workdir = config.workdir
  sources, sets = [], []
  for k in range(num_sets):
    graphdef, weights, step, which = generator_lib.restore(
        config.generator_workdir, gen_config, config.checkpoint,
        seed_index=k)
    source = dict(generator_workdir=os.path.abspath(config.generator_workdir),
                  checkpoint=which, checkpoint_step=step,
                  logits=config.logits, model=gen_config.model.to_dict(),
                  seed_index=k, seed=int(gen_config.seed) + k)
    sources.append(source)
    sets.append(os.path.relpath(pl_files.seed_set_dir(workdir, k), workdir))
    set_dir = pl_files.seed_set_dir(workdir, k)
    if _set_up_to_date(set_dir, source, ids):
      logging.info("%s is up to date: kept.", set_dir)
      continue
    manifest_path = os.path.join(workdir, pl_files.SEEDS_MANIFEST)
    if os.path.exists(manifest_path):  # the run is incomplete from here on
      os.remove(manifest_path)
    os.makedirs(set_dir, exist_ok=True)
    pl_files.remove_stale_temporaries(set_dir)
    _make_set(config, set_dir, graphdef, weights, splits, ids, source)
    logging.info("stage 2: wrote set %d/%d in %s (generator seed %d, %s"
                 " step %d)", k + 1, num_sets, set_dir, source["seed"],
                 which, step)
  manifest = dict(num_seeds=num_sets, seeds=[s["seed"] for s in sources],
                  sets=sets, sources=sources, ids=ids)
  if pl_files.read_seeds_manifest(workdir) == manifest and all(
      os.path.isfile(os.path.join(workdir, "eval", name))
      for s in ("val", "test")
      for name in (f"{s}.json", f"{s}_seeds.json", f"baselines_{s}.json")):
    logging.info("%s is up to date: skipped.", workdir)
    _log_tables(workdir)
    return
  # A one-set run's files from an earlier 1-seed source.
  shutil.rmtree(pl_files.llp_dir(workdir), ignore_errors=True)
  for s in ("val", "test"):
    rows = [jsonio.read_json(os.path.join(workdir, rel, "eval", f"{s}.json"))
            for rel in sets]
    base = [jsonio.read_json(os.path.join(workdir, rel, "eval",
                                          f"baselines_{s}.json"))
            for rel in sets]
    metrics_lib.write_seed_eval_json(
        os.path.join(workdir, "eval"), s, rows, manifest["seeds"],
        extra=dict(split=s, n_videos=len(ids[s]),
                   generator_workdir=sources[0]["generator_workdir"],
                   checkpoint=[x["checkpoint"] for x in sources],
                   checkpoint_step=[x["checkpoint_step"] for x in sources],
                   logits=config.logits, sets=sets))
    zero_shot = metrics_lib.seeds_row([b["zero_shot"] for b in base],
                                      manifest["seeds"])["mean"]
    jsonio.write_json_atomic(
        os.path.join(workdir, "eval", f"baselines_{s}.json"),
        {"weak_everywhere": base[0]["weak_everywhere"],
         "zero_shot": metrics_lib.with_avg(
             {k: zero_shot[k] for k in metrics_lib.AGGREGATE_KEYS})})
  pl_files.write_seeds_manifest(workdir, manifest)
  logging.info("stage 2: %d pseudo-label sets under %s", num_sets,
               os.path.join(workdir, pl_files.SEEDS_DIR))
  _log_tables(workdir)
