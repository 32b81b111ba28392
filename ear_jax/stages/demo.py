"""Demo: synthetic data -> stage 1 -> 2 -> 3 (EAR and HAN) -> tables, report."""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time

from absl import logging
import jax

from ear_jax import checkpoint as ckpt_lib
from ear_jax import compare as compare_lib
from ear_jax import config_lib
from ear_jax import jsonio
from ear_jax import metrics as metrics_lib
from ear_jax import report as report_lib
from ear_jax import runs as runs_lib
from ear_jax import stages as stages_lib
from ear_jax import workdir as workdir_lib
from ear_jax.data import pseudo_label_files as pl_files
from ear_jax.data import synthetic

# Table rows: name -> (eval JSON under the workdir, key in it).
ROWS = {
    "Weak labels everywhere": ("stage2/eval/baselines_{split}.json",
                               "weak_everywhere"),
    "Zero-shot CLIP/CLAP": ("stage2/eval/baselines_{split}.json", "zero_shot"),
    "Pseudo-labels (stage 2)": ("stage2/eval/{split}.json", None),
    "HAN": ("stage3_han/eval/{split}.json", None),
    "EAR": ("stage3/eval/{split}.json", None),
}
# A stage restarts from scratch when a stage it reads ran in this call.
DEPENDS_ON = {"stage2": ("stage1",), "stage3": ("stage2",),
              "stage3_han": ("stage2",)}
# Config fields shown in the report (those a stage has).
KEY_FIELDS = (
    "workdir", "seed", "batch_size", "total_epochs", "optim.lr",
    "optim.warmup_epochs", "best_metric", "migration.enabled",
    "model.name", "model.asymmetric", "model.hidden_dim", "model.num_layers",
    "model.num_heads", "model.han_layers", "model.amdf", "model.erm",
    "model.erm_layers", "model.node_dim", "data.features", "generator_workdir",
    "checkpoint", "logits", "pseudo_labels_dir", "eval.strict",
)


def say(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


def prepare_data(config) -> tuple[str, str]:
  """(llp_root, unav_root): real roots if given, else the synthetic set."""
  if config.data.llp_root or config.data.unav_root:
    if not (config.data.llp_root and config.data.unav_root):
      raise ValueError("set both data.llp_root and data.unav_root (real"
                       " data), or neither (synthetic data).")
    return config.data.llp_root, config.data.unav_root
  root = os.path.join(config.workdir, "data")
  spec = config.synthetic.to_dict()
  if synthetic.written_with(root) is not None or jax.process_index() == 0:
    t0 = time.perf_counter()
    if synthetic.write_once(root, spec):
      say(f"synthetic data: wrote {root} in {time.perf_counter() - t0:.1f} s")
    else:
      say(f"synthetic data: {root} (already written)")
  return os.path.join(root, "LLP"), os.path.join(root, "UnAV")


def stage_configs(config, llp_root: str, unav_root: str) -> list:
  """[(key, title, sub-config, file written when done)]; each sub-config's
  `stage` names its runner (ear_jax.stages.RUNNERS)."""
  w = config.workdir

  def sub(name, **fields):
    c = copy.deepcopy(config[name])
    c.workdir = os.path.join(w, name)
    c.progress = config.progress
    c.tensorboard = config.tensorboard
    for k, v in fields.items():
      config_lib.set_field(c, k, v)
    return c

  llp = {"data.llp_root": llp_root,
         "data.llp_annotations_dir": config.data.llp_annotations_dir}
  # --config.num_seeds=N: N seeds in stages 1 and 3 (docs/SEEDS.md).
  seeds = ({} if config.get("num_seeds") is None
           else {"num_seeds": config.num_seeds})
  s3 = dict(pseudo_labels_dir=os.path.join(w, "stage2"), **llp, **seeds)
  s1 = sub("stage1", **{"data.unav_root": unav_root,
                        "data.unav_annotations": config.data.unav_annotations},
           **seeds)
  stages = [
      ("stage1", "Stage 1: pre-train the pseudo-label generator on UnAV-100",
       s1, "eval/unav_validation.json"),
      ("stage2", "Stage 2: pseudo-labels for LLP (+ baselines)",
       sub("stage2", generator_workdir=os.path.join(w, "stage1"), **llp),
       # published last (N sets of an N-seed stage 1: their manifest)
       "LLP_Dataset/manifest.json" if s1.get("num_seeds", 1) == 1
       else pl_files.SEEDS_MANIFEST),
      ("stage3", "Stage 3: train the EAR parser", sub("stage3", **s3),
       "eval/test.json"),
  ]
  if config.run_han:
    stages.append(("stage3_han", "Stage 3: train the HAN baseline",
                   sub("stage3_han", **s3), "eval/test.json"))
  return stages


def paired_comparisons(config) -> dict[str, dict]:
  """{split: EAR - HAN over paired seeds} when both parsers ran with
  several seeds (compare.compare of stage3_han and stage3), else {}."""
  w = config.workdir
  seeds = [config[k].get("num_seeds", 1) for k in ("stage3", "stage3_han")]
  if config.get("num_seeds") is not None:
    seeds = [config.num_seeds] * 2
  if not config.run_han or min(seeds) < 2:
    return {}
  out = {}
  for split in ("val", "test"):
    runs = [os.path.join(w, k) for k in ("stage3_han", "stage3")]
    if all(os.path.isfile(os.path.join(r, "eval", f"{split}_seeds.json"))
           for r in runs):
      out[split] = compare_lib.compare(*(compare_lib.load(r, split)
                                         for r in runs))
  return out


def write_outputs(config, stages, tables, seconds) -> str:
  """Figures, report.md and (last, so it marks completion) results.json."""
  w = config.workdir
  figs, figure_notes = report_lib.figures(
      w, {name: f"{name} ({config[name].stage})"
          for name in ("stage1", "stage3", "stage3_han")},
      parser_runs=("stage3_han", "stage3"), main="stage3",
      num_timelines=config.num_timelines)
  configs = {key: report_lib.run_fields(cfg, KEY_FIELDS)
             for key, _, cfg, _ in stages}
  configs["data"] = dict(
      llp_root=stages[-1][2].data.llp_root,
      unav_root=stages[0][2].data.unav_root,
      **{f"synthetic.{k}": v
         for k, v in report_lib.flat_config(config.synthetic).items()})
  comparisons = {
      f"EAR - HAN, LLP {split}": compare_lib.markdown_comparison(
          result, "HAN", "EAR")
      for split, result in paired_comparisons(config).items()}
  path = report_lib.write_report(
      os.path.join(w, "report.md"), title="ear-jax demo report",
      tables=tables, configs=configs, **figs, figure_notes=figure_notes,
      comparisons=comparisons,
      per_class=report_lib.per_class_scores(w, ("stage3", "stage3_han")),
      notes=[f"Command: `{' '.join(sys.argv)}`", "",
             f"Workdir `{w}`. Wall time per stage (s, last run of each):"
             f" `{json.dumps(seconds)}`.", "",
             "Stage 2 tunes its thresholds on the val GT (as UWAV and EAR"
             " do), so its val row is optimistic; compare methods on test."])
  jsonio.write_json_atomic(os.path.join(w, "results.json"), dict(
      tables=tables,
      rows={n: dict(file=p, key=k) for n, (p, k) in ROWS.items()},
      stage_seconds=seconds, figures=figs))
  return path


def run(config):
  t_start = time.perf_counter()
  ckpt_lib.quiet_info_logs()
  w = config.workdir
  say(f"== ear-jax demo in {w} ==")
  llp_root, unav_root = prepare_data(config)
  stages = stage_configs(config, llp_root, unav_root)
  timings = {}
  for i, (key, title, cfg, done) in enumerate(stages, 1):
    say(f"\n== [{i}/{len(stages)}] {title} -> {cfg.workdir} ==")
    if any(d in timings for d in DEPENDS_ON.get(key, ())):
      if os.path.exists(cfg.workdir):  # its inputs changed: start over
        say(f"{DEPENDS_ON[key]} ran again: restarting {cfg.workdir}")
        shutil.rmtree(cfg.workdir)
    elif runs_lib.finished_with(cfg, os.path.join(cfg.workdir, done)):
      say("already finished with this config: skipped")
      continue
    else:
      changing, harmless = workdir_lib.compare(cfg)
      if changing:  # a run of other settings: this one cannot continue it
        say(f"{', '.join(sorted(changing))} changed: restarting"
            f" {cfg.workdir}")
        shutil.rmtree(cfg.workdir)
      elif os.path.exists(os.path.join(cfg.workdir, workdir_lib.CONFIG)):
        say(f"resuming (delete {cfg.workdir} to start this stage over)")
      cfg.override_config = bool(harmless)  # e.g. a moved demo workdir
    t0 = time.perf_counter()
    with workdir_lib.claim(cfg, primary=jax.process_index() == 0):
      stages_lib.get_runner(cfg.stage)(cfg)
    timings[key] = round(time.perf_counter() - t0, 1)
    say(f"{key} done in {timings[key]:.1f} s")

  sources = {name: (os.path.join(w, path), key)
             for name, (path, key) in ROWS.items()}
  tables = report_lib.collect_tables(sources)
  for split in ("val", "test"):
    if split in tables:
      say(f"\n== LLP {split} ==" if config.data.llp_root else
          f"\n== LLP {split} (synthetic data: this checks the pipeline, not"
          " the paper's numbers) ==")
      say(metrics_lib.format_table(tables[split]))
  for split, result in paired_comparisons(config).items():
    if split == "test":
      say("\n" + compare_lib.format_comparison(result, "HAN", "EAR"))
  results = os.path.join(w, "results.json")
  report = os.path.join(w, "report.md")
  if timings or not (os.path.exists(results) and os.path.exists(report)):
    seconds = {}
    if os.path.exists(results):
      seconds = jsonio.read_json(results).get("stage_seconds", {})
    seconds.update(timings)
    say("\nwriting figures and the report ...")
    write_outputs(config, stages, tables, seconds)
  say(f"\nreport: {report}\nresults: {results}\n"
      f"total {time.perf_counter() - t_start:.1f} s")
  logging.info("demo done")
