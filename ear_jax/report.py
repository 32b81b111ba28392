"""Human-readable outputs: results tables (paper layout), the figures and
markdown report of a pipeline run (demo), and parsed events of a video."""

# pylint: disable=invalid-name

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ear_jax import jsonio
from ear_jax import metrics as metrics_lib
from ear_jax import parser_lib
from ear_jax import plots as plots_lib
from ear_jax import writer as writer_lib
from ear_jax.data import avvp
from ear_jax.data import llp_features

MODALITIES = ("audio", "visual", "audio-visual")
_COLS = ("A", "V", "AV", "Type", "Event")


# ----------------------------------------------------------------------------
# Files.


def load_scores(path: str, key: str | None = None) -> dict | None:
  """The ten metrics + avg from an eval JSON (or its `key` entry); None if
  the file does not exist. A run over N > 1 seeds (an eval/<split>.json
  with a <split>_seeds.json beside it) gives its seeds row: mean ± std in
  the tables (metrics.is_spread)."""
  if not os.path.exists(path):
    return None
  if key is None:
    spread = metrics_lib.read_seed_eval_json(path)
    if spread is not None and int(spread.get("n", 1)) > 1:
      return spread
  obj = jsonio.read_json(path)
  if key is not None:
    if key not in obj:
      raise KeyError(f"{path} has no entry {key!r}; it has {sorted(obj)}.")
    obj = obj[key]
  return metrics_lib.with_avg(obj)


def collect_tables(
    sources: Mapping[str, tuple[str, str | None]],
    splits: Sequence[str] = ("val", "test"),
) -> dict[str, dict[str, dict]]:
  """{split: {row name: scores}} from {row name: (path with {split}, key)}.

  Rows whose file is missing are left out (e.g. a stage that did not run).
  """
  tables = {}
  for split in splits:
    rows = {}
    for name, (pattern, key) in sources.items():
      scores = load_scores(pattern.format(split=split), key)
      if scores is not None:
        rows[name] = scores
    if rows:
      tables[split] = rows
  return tables


# ----------------------------------------------------------------------------
# Tables.


def markdown_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
  """The paper layout as a markdown table: Seg A..Event | Evt A..Event | Avg."""
  head = (["Method"] + [f"Seg {c}" for c in _COLS]
          + [f"Evt {c}" for c in _COLS] + ["Avg"])
  lines = ["| " + " | ".join(head) + " |",
           "|" + "---|" * len(head)]
  for name, scores in rows.items():  # a row over seeds: mean ± std (n=N)
    lines.append("| " + " | ".join([metrics_lib.row_label(name, scores)]
                                   + metrics_lib.row_cells(scores)) + " |")
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# The run report.


def flat_config(config: Mapping[str, Any], keys: Sequence[str] | None = None,
                prefix: str = "") -> dict[str, Any]:
  """Dotted scalar fields of a (nested) config dict; only `keys` if given."""
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  out = {}
  for k, v in config.items():
    name = f"{prefix}{k}"
    if isinstance(v, Mapping) or hasattr(v, "to_dict"):
      out.update(flat_config(v, None, name + "."))
    elif isinstance(v, (str, int, float, bool)) or v is None:
      out[name] = v
    elif isinstance(v, (list, tuple)) and all(
        isinstance(x, (str, int, float, bool)) for x in v):
      out[name] = list(v)
  if keys is not None:
    out = {k: out[k] for k in keys if k in out}
  return out


# Parser fields only the EAR parser reads (left out of a HAN run's table);
# model.han_layers is read by EAR only with model.amdf="han".
_EAR_ONLY = ("model.amdf", "model.erm", "model.erm_layers", "model.node_dim")


def run_fields(config: Mapping[str, Any], keys: Sequence[str]
               ) -> dict[str, Any]:
  """`flat_config(config, keys)` without the fields its model ignores."""
  out = flat_config(config, keys)
  name = out.get("model.name")
  if name == "han":
    drop = _EAR_ONLY
  elif name == "ear" and out.get("model.amdf") != "han":
    drop = ("model.han_layers",)
  else:
    drop = ()
  return {k: v for k, v in out.items() if k not in drop}


def per_class_scores(workdir: str, parser_runs: Sequence[str],
                     split: str = "test") -> dict[str, dict]:
  """{parser label: metrics.per_class_f1 on `split`} of the finished
  stage-3 runs among `workdir`/`parser_runs` (label: EAR, HAN, ...)."""
  out = {}
  for run in parser_runs:
    path = os.path.join(workdir, run)
    if not os.path.exists(os.path.join(path, "eval", f"{split}.json")):
      continue
    cfg, graphdef, weights, *_ = parser_lib.load_parser(path)
    rec = avvp.read_llp_split(llp_features.annotations_dir(
        cfg.data.llp_root, cfg.data.llp_annotations_dir), split)
    o = parser_lib.predict(graphdef, weights,
                           parser_lib.load_inputs(cfg, rec.ids),
                           cfg.eval_batch_size)
    pred_a, pred_v = metrics_lib.binarize_parser_outputs(
        o["global_prob"], o["a_logits"], o["v_logits"], cfg.eval.strict)
    label = cfg.model.name.upper()
    if label in out:
      label = f"{label} ({run})"
    out[label] = metrics_lib.per_class_f1(pred_a, pred_v, rec.gt_a, rec.gt_v)
  return out


def per_class_table(scores: Mapping[str, Mapping[str, Sequence]],
                    class_names: Sequence[str]) -> str:
  """metrics.per_class_f1 output as markdown: one row per class, F1 (%) of
  Seg A, V, AV and Evt A, V, AV; "-" where the class is in neither the
  predictions nor the GT."""
  cols = [(lvl, m) for lvl in ("seg", "evt") for m in ("a", "v", "av")]
  head = ["class"] + [f"{lvl.capitalize()} {m.upper()}" for lvl, m in cols]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for c, name in enumerate(class_names):
    vals = [scores[lvl][m][c] for lvl, m in cols]
    lines.append("| " + " | ".join(
        [name] + ["-" if v is None else f"{v:.1f}" for v in vals]) + " |")
  return "\n".join(lines)


def _rel(path: str, root: str) -> str:
  return os.path.relpath(path, root).replace(os.sep, "/")


def write_report(
    path: str,
    *,
    title: str,
    tables: Mapping[str, Mapping[str, Mapping[str, Any]]],
    configs: Mapping[str, Mapping[str, Any]] = (),
    curves: Mapping[str, str] = (),
    heatmaps: Mapping[str, str] = (),
    timelines: Mapping[str, str] = (),
    notes: Sequence[str] = (),
    figure_notes: Sequence[str] = (),
    comparisons: Mapping[str, str] = (),
    per_class: Mapping[str, Mapping[str, Any]] = (),
    per_class_split: str = "test",
) -> str:
  """Writes the markdown report; image paths are made relative to it.

  Args:
    tables: {split: {row name: scores}}, one results table per split.
    configs: {section: {dotted field: value}} (see `flat_config`).
    curves, heatmaps, timelines: {caption: PNG path}.
    notes: lines under the title; figure_notes: figures not drawn, and why.
    comparisons: {caption: Markdown table} of paired comparisons
      (ear_jax.compare.markdown_comparison), shown under the results.
    per_class: {parser: metrics.per_class_f1 on per_class_split}.
  """
  root = os.path.dirname(os.path.abspath(path))
  md = [f"# {title}", ""]
  md += [f"{n}" for n in notes] + ([""] if notes else [])
  md += ["## Results", "",
         "LLP metrics in percent (official protocol); Type = mean of A, V, AV;"
         " Avg = mean of the ten numbers.", ""]
  for split, rows in tables.items():
    md += [f"### {split} split", "", markdown_table(rows), ""]
  if comparisons:
    md += ["## Paired comparisons over seeds", "",
           "Mean ± std over seeds of each run, the mean paired difference"
           " with its Student-t 95% CI, and the exact sign-flip permutation"
           " p-value (with n seeds the smallest possible p is 2 / 2^n).", ""]
    for caption, table in comparisons.items():
      md += [f"### {caption}", "", table, ""]
  if per_class:
    md += [f"## Per-class F1 ({per_class_split} split)", "",
           "F1 in percent per LLP class, TP/FN/FP pooled over the split's"
           " videos (events matched at IoU >= 0.5); not an official LLP"
           " number. \"-\": the class is in neither the predictions nor"
           " the GT.", ""]
    for name, scores in per_class.items():
      md += [f"### {name}", "", per_class_table(scores, avvp.LLP_CLASSES),
             ""]
  if curves:
    md += ["## Training curves", ""]
    for caption, png in curves.items():
      md += [f"### {caption}", "", f"![{caption}]({_rel(png, root)})", ""]
  if heatmaps:
    md += ["## ERM adjacency matrices (EAR parser)", "",
           "Summed over layers; the symmetrised view averages the upper and"
           " lower triangles, as in the paper's Figs. 4-5.", ""]
    for caption, png in heatmaps.items():
      md += [f"![{caption}]({_rel(png, root)})", ""]
  if timelines:
    md += ["## Test-video timelines", ""]
    for caption, png in timelines.items():
      md += [f"### {caption}", "", f"![{caption}]({_rel(png, root)})", ""]
  if figure_notes:
    md += ["## Figures not drawn", ""] + [f"- {n}" for n in figure_notes]
    md += [""]
  if configs:
    md += ["## Configuration", ""]
    for section, fields in configs.items():
      md += [f"### {section}", "", "| field | value |", "|---|---|"]
      md += [f"| `{k}` | `{json.dumps(v)}` |" for k, v in fields.items()]
      md += [""]
  jsonio.write_text_atomic(path, "\n".join(md))
  return path


# ----------------------------------------------------------------------------
# Figures of a pipeline run (the demo's report).


def _timelines(parsers: Mapping[str, tuple], main: str, num_timelines: int,
               fig_dir: str) -> dict[str, str]:
  """GT vs every parser on the test videos with the most GT segments."""
  cfg = parsers[main][0]
  rec = avvp.read_llp_split(llp_features.annotations_dir(
      cfg.data.llp_root, cfg.data.llp_annotations_dir), "test")
  n_gt = rec.gt_a.sum((1, 2)) + rec.gt_v.sum((1, 2))
  pick = sorted(np.argsort(-n_gt, kind="stable")[:num_timelines])
  ids = [rec.ids[i] for i in pick]
  inputs = parser_lib.load_inputs(cfg, ids)
  preds = {}
  for run, (c, graphdef, weights, *_) in parsers.items():
    out = parser_lib.predict(graphdef, weights, inputs, c.eval_batch_size)
    label = c.model.name.upper()
    if label in preds:  # e.g. HAN as the main parser and as the baseline
      label = f"{label} ({run})"
    preds[label] = metrics_lib.binarize_parser_outputs(
        out["global_prob"], out["a_logits"], out["v_logits"], c.eval.strict)
  return {
      f"test video {vid}": plots_lib.timeline(
          os.path.join(fig_dir, f"timeline_{vid}.png"),
          {k: (a[j], v[j]) for k, (a, v) in preds.items()},
          avvp.LLP_CLASSES, gt=(rec.gt_a[i], rec.gt_v[i]),
          title=f"test video {vid}")
      for j, (i, vid) in enumerate(zip(pick, ids))}


def figures(workdir: str, curve_runs: Mapping[str, str],
            parser_runs: Sequence[str], main: str, num_timelines: int
            ) -> tuple[dict, list[str]]:
  """Training curves, ERM heatmaps and test timelines of the runs under
  `workdir`; ({kind: {caption: png}}, notes on figures not drawn).

  curve_runs: {run subdir: plot title}; parser_runs: the stage-3 run subdirs
  (finished ones are drawn); main: the one whose ERM is drawn. Works with
  every parser: one without ERM adjacencies (HAN) gets a note instead.
  """
  fig_dir = os.path.join(workdir, "figures")
  curves = {}
  for name, title in curve_runs.items():
    png = plots_lib.training_curves(
        writer_lib.read_metrics(os.path.join(workdir, name)),
        os.path.join(fig_dir, f"curves_{name}.png"), title=title)
    if png:
      curves[name] = png
  parsers = {name: parser_lib.load_parser(os.path.join(workdir, name))
             for name in parser_runs
             if os.path.exists(os.path.join(workdir, name, "eval",
                                            "test.json"))}
  heatmaps, timelines, notes = {}, {}, []
  if main in parsers:
    cfg, graphdef, weights, *_ = parsers[main]
    adj = parser_lib.adjacencies(graphdef, weights)
    if adj:
      heatmaps = plots_lib.adjacency_heatmaps(
          adj, avvp.LLP_CLASSES, os.path.join(fig_dir, "erm_"))
    else:
      notes.append(
          f"ERM adjacency heatmaps: not drawn, the `{main}` parser"
          f" (model.name={cfg.model.name}) has no ERM adjacency matrices.")
    if num_timelines > 0:
      timelines = _timelines(parsers, main, num_timelines, fig_dir)
  return dict(curves=curves, heatmaps=heatmaps, timelines=timelines), notes


# ----------------------------------------------------------------------------
# Parsed events of one video (stage "parse").


def extract_events(
    pred_a_CxT: np.ndarray,
    pred_v_CxT: np.ndarray,
    prob_a_CxT: np.ndarray,
    prob_v_CxT: np.ndarray,
    video_prob_C: np.ndarray,
    class_names: Sequence[str],
    segment_seconds: float = 1.0,
    min_confidence: float = 0.0,
    gate_CxT: np.ndarray | None = None,
) -> list[dict]:
  """Events of one video: the metrics' definition, as onsets and offsets.

  An event is a maximal run of 1s in a binarised [C, T] row
  (metrics.events_from_row); audio-visual events are the runs of the AND of
  the audio and visual rows, as in the metrics. Confidence = the mean
  segment probability over the event (p_a * p_v for audio-visual) times the
  video-level probability of the class, or, with a per-segment `gate_CxT`
  (windowed parsing, ear_jax/parsing.py), its maximum over the event; that
  factor clipped to [0, 1] (MMIL's pooled value reaches 2).
  Offsets are end-exclusive seconds.
  """
  pa = np.asarray(pred_a_CxT).astype(bool)
  pv = np.asarray(pred_v_CxT).astype(bool)
  C = len(class_names)
  shapes = {np.shape(x) for x in (pa, pv, prob_a_CxT, prob_v_CxT)}
  if len(shapes) != 1 or pa.ndim != 2 or pa.shape[0] != C:
    raise ValueError(
        f"predictions and probabilities must all be [C, T] with C = {C};"
        f" got shapes {sorted(shapes)}.")
  if np.shape(video_prob_C) != (C,):
    raise ValueError(f"video_prob_C has shape {np.shape(video_prob_C)};"
                     f" expected ({C},).")
  if gate_CxT is not None and np.shape(gate_CxT) != pa.shape:
    raise ValueError(f"gate_CxT has shape {np.shape(gate_CxT)}; expected"
                     f" {pa.shape}.")
  prob_a = np.asarray(prob_a_CxT, np.float64)
  prob_v = np.asarray(prob_v_CxT, np.float64)
  rows = {"audio": (pa, prob_a), "visual": (pv, prob_v),
          "audio-visual": (pa & pv, prob_a * prob_v)}
  events = []
  for modality in MODALITIES:
    pred, prob = rows[modality]
    for c in range(C):
      for start, end in metrics_lib.events_from_row(pred[c]):
        gate = (video_prob_C[c] if gate_CxT is None
                else np.max(gate_CxT[c, start:end]))
        # MMIL's video value can exceed 1: clipped, so confidence is in
        # [0, 1].
        conf = float(np.mean(prob[c, start:end]) * np.clip(gate, 0.0, 1.0))
        if conf < min_confidence:
          continue
        events.append(dict(modality=modality, **{"class": class_names[c]},
                           onset=start * segment_seconds,
                           offset=end * segment_seconds,
                           confidence=round(conf, 6)))
  events.sort(key=lambda e: (e["onset"], MODALITIES.index(e["modality"]),
                             e["class"]))
  return events


def events_to_rows(events: Sequence[Mapping], class_names: Sequence[str],
                   num_segments: int, segment_seconds: float = 1.0) -> dict:
  """Inverse of `extract_events` (at min_confidence 0): {modality: [C, T]}."""
  index = {c: i for i, c in enumerate(class_names)}
  spans = {m: [[] for _ in class_names] for m in MODALITIES}
  for e in events:
    start = int(round(e["onset"] / segment_seconds))
    end = int(round(e["offset"] / segment_seconds))
    spans[e["modality"]][index[e["class"]]].append((start, end))
  return {m: np.stack([metrics_lib.events_to_segments(s, num_segments)
                       for s in per_class]) for m, per_class in spans.items()}
