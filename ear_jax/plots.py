"""PNG figures: event timelines (paper Fig. 3), ERM adjacency heatmaps
(Figs. 4-5) and training curves from metrics.jsonl. Matplotlib figures on
their own Agg canvas: importing this module leaves pyplot and the backend
alone."""

# pylint: disable=invalid-name

from __future__ import annotations

import collections
import os
import re
from typing import Mapping, Sequence

from matplotlib import figure as mpl_figure
from matplotlib.backends import backend_agg
import numpy as np

from ear_jax import jsonio
from ear_jax import metrics as metrics_lib

MODALITIES = ("audio", "visual", "audio-visual")
_GT_COLOR = "#444444"
_PRED_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def _figure(**kw) -> mpl_figure.Figure:
  """A figure drawn by Agg where it is saved (no pyplot, no global state)."""
  fig = mpl_figure.Figure(**kw)
  backend_agg.FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str, tight: bool = True) -> str:
  """Writes the figure to a temporary name beside `path`, then renames it:
  never through a file or link already at `path`."""
  fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
  return jsonio.write_atomic(
      path, lambda f: fig.savefig(f, format=fmt, dpi=100,
                                  bbox_inches="tight" if tight else None),
      binary=True)


def _check_pair(name: str, pair, num_classes: int):
  a, v = (np.asarray(x).astype(bool) for x in pair)
  if a.ndim != 2 or a.shape != v.shape or a.shape[0] != num_classes:
    raise ValueError(
        f"{name}: audio/visual rows have shapes {a.shape} and {v.shape};"
        f" expected two equal [C, T] arrays with C = {num_classes}"
        " (len(class_names)).")
  return a, v


# ----------------------------------------------------------------------------
# Timelines (Fig. 3).


def time_tick_step(seconds: float, max_ticks: int = 20) -> float:
  """Seconds between labelled ticks: 1, 2, 5, 10, 15, 30, 60, 120, ...
  (at most max_ticks + 1 labels)."""
  for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
    if seconds / step <= max_ticks:
      return float(step)
  return float(3600 * np.ceil(seconds / 3600 / max_ticks))


def timeline(
    path: str,
    preds: Mapping[str, tuple[np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    gt: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "",
    segment_seconds: float = 1.0,
) -> str:
  """One video: audio / visual / audio-visual panels of event bars.

  Args:
    path: output PNG.
    preds: {source name: (pred_a_CxT, pred_v_CxT)} 0/1 rows, e.g. {"EAR":
      ..., "HAN": ...}; AV is their AND, as in the metrics.
    class_names: the C class names.
    gt: optional (gt_a_CxT, gt_v_CxT); drawn as the first lane of a class.
  """
  C = len(class_names)
  sources = []
  if gt is not None:
    sources.append(("GT", _check_pair("gt", gt, C), _GT_COLOR))
  for i, (name, pair) in enumerate(preds.items()):
    sources.append((name, _check_pair(name, pair, C),
                    _PRED_COLORS[i % len(_PRED_COLORS)]))
  if not sources:
    raise ValueError("timeline needs at least one prediction or gt.")
  T = sources[0][1][0].shape[1]
  rows = {}  # modality -> [(source, color, C x T)]
  for name, (a, v), color in sources:
    for modality, x in zip(MODALITIES, (a, v, a & v)):
      rows.setdefault(modality, []).append((name, color, x))

  lanes = {m: [c for c in range(C) if any(x[c].any() for _, _, x in r)]
           for m, r in rows.items()}
  heights = [max(len(lanes[m]) * len(sources), 1) + 1 for m in MODALITIES]
  longest = max([len(class_names[c]) for m in MODALITIES for c in lanes[m]]
                + [0]) + 3 + max(len(name) for name, _, _ in sources)
  # Fixed margins (no bbox_inches="tight", which draws everything twice).
  # Minutes-long videos get a wider figure (up to 16 in) and sparser ticks.
  width = min(16.0, 9.0 + max(0, T * segment_seconds - 10) / 30)
  left_in, w, h = (0.5 + longest * 7 / 72 * 0.55, width,
                   0.28 * sum(heights) + 1.2)
  fig = _figure(figsize=(w, h))
  axes = fig.subplots(3, 1, sharex=True,
                      gridspec_kw=dict(height_ratios=heights, hspace=0.25))
  fig.subplots_adjust(left=left_in / w, right=1 - 0.2 / w, bottom=0.6 / h,
                      top=1 - 0.4 / h)
  for ax, modality in zip(axes, MODALITIES):
    labels, y = [], 0
    for c in lanes[modality]:
      for name, color, x in rows[modality]:
        spans = [(s * segment_seconds, (e - s) * segment_seconds)
                 for s, e in metrics_lib.events_from_row(x[c])]
        ax.broken_barh(spans, (y + 0.15, 0.7), facecolors=color)
        labels.append(f"{class_names[c]} · {name}")
        y += 1
      ax.axhline(y, color="#dddddd", linewidth=0.5)
    if not labels:
      ax.text(T * segment_seconds / 2, 0.5, "no events", ha="center",
              va="center", color="#888888")
    ax.set_yticks(np.arange(len(labels)) + 0.5)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_ylim(max(len(labels), 1), 0)
    ax.set_ylabel(modality, fontsize=9)
    ax.set_xlim(0, T * segment_seconds)
    step = time_tick_step(T * segment_seconds)
    ax.set_xticks(np.arange(0, T * segment_seconds + 1e-9, step))
    if step > segment_seconds and T <= 120:
      ax.set_xticks(np.arange(T + 1) * segment_seconds, minor=True)
    ax.grid(axis="x", color="#eeeeee", which="both")
    ax.set_axisbelow(True)
  axes[-1].set_xlabel("time (s)")
  if title:
    axes[0].set_title(title, fontsize=10)
  return _save(fig, path, tight=False)


# ----------------------------------------------------------------------------
# ERM adjacency heatmaps (Figs. 4-5).

_LAYER_RE = re.compile(r"^(?P<group>.*?)/?layer(?P<layer>\d+)$")


def group_layers(adjacencies: Mapping[str, np.ndarray]) -> dict:
  """{"uni_a/layer0": A0, "uni_a/layer1": A1, "multi": M} -> {group: [A...]}."""
  groups = collections.OrderedDict()
  for name, a in adjacencies.items():
    m = _LAYER_RE.match(name)
    group = (m.group("group") or "adjacency") if m else name
    a = np.asarray(a, np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
      raise ValueError(f"adjacency {name!r} has shape {a.shape}; expected a"
                       " square [N, N] matrix.")
    groups.setdefault(group, []).append((name, a))
  for group, items in groups.items():
    shapes = {a.shape for _, a in items}
    if len(shapes) != 1:
      raise ValueError(f"adjacencies of {group!r} have different shapes"
                       f" {dict((n, a.shape) for n, a in items)}.")
  return {g: [a for _, a in items] for g, items in groups.items()}


def summed_adjacency(mats: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
  """(raw, symmetrised): the sum over layers, and the mean of its upper and
  lower triangles, (A + A^T) / 2, as the paper shows them."""
  raw = np.sum(np.stack(mats), axis=0)
  return raw, 0.5 * (raw + raw.T)


def node_names(n: int, class_names: Sequence[str]) -> list[str]:
  """Axis labels for C (uni-modal) or 2C (audio nodes then visual) nodes."""
  C = len(class_names)
  if n == C:
    return list(class_names)
  if n == 2 * C:
    return [f"a:{c}" for c in class_names] + [f"v:{c}" for c in class_names]
  raise ValueError(f"adjacency of size {n} fits neither C = {C} nor 2C ="
                   f" {2 * C} class nodes; pass the model's class names.")


def _heatmap(path, mat, labels, title):
  n = len(labels)
  off = mat[~np.eye(n, dtype=bool)] if n > 1 else mat.ravel()
  # Identity initialisation makes the diagonal dominate; scale the colours
  # on the off-diagonal entries (the learned relations) and clip the rest.
  lim = float(np.max(np.abs(off))) or 1.0
  fontsize = 6 if n <= 30 else 4
  # Fixed margins for the class names instead of bbox_inches="tight", which
  # lays out every label twice (seconds for 2C = 50 nodes).
  label_in = 0.2 + fontsize / 72 * 0.62 * max(len(x) for x in labels)
  size = 3 + 0.16 * n
  w, h = size + 1.2 + label_in, size + label_in + 0.5
  fig = _figure(figsize=(w, h))
  ax = fig.subplots()
  fig.subplots_adjust(left=label_in / w, bottom=label_in / h,
                      right=1 - 0.9 / w, top=1 - 0.5 / h)
  im = ax.imshow(mat, cmap="RdBu_r", vmin=-lim, vmax=lim,
                 interpolation="nearest")
  ax.set_xticks(range(n))
  ax.set_xticklabels(labels, rotation=90, fontsize=fontsize)
  ax.set_yticks(range(n))
  ax.set_yticklabels(labels, fontsize=fontsize)
  ax.set_title(f"{title}\n(diagonal: {np.mean(np.diag(mat)):.2f} on"
               " average, colours clipped to the off-diagonal range)",
               fontsize=8)
  if n % 2 == 0 and labels[0].startswith("a:"):  # audio | visual blocks
    for f in (ax.axhline, ax.axvline):
      f(n / 2 - 0.5, color="black", linewidth=0.8)
  fig.colorbar(im, ax=ax, fraction=0.04)
  return _save(fig, path, tight=False)


def adjacency_heatmaps(adjacencies: Mapping[str, np.ndarray],
                       class_names: Sequence[str],
                       path_prefix: str) -> dict[str, str]:
  """Writes <prefix><group>.png (summed over layers, symmetrised) and
  <prefix><group>_raw.png per adjacency group; returns {name: path}.

  Groups come from names like "uni_a/layer0" (layers of one group are summed).
  """
  out = {}
  for group, mats in group_layers(adjacencies).items():
    raw, sym = summed_adjacency(mats)
    labels = node_names(raw.shape[0], class_names)
    stem = path_prefix + group.replace("/", "_")
    what = f"{group}: sum over {len(mats)} layer(s)"
    out[group] = _heatmap(stem + ".png", sym, labels,
                          what + ", (A + A^T) / 2")
    out[group + "_raw"] = _heatmap(stem + "_raw.png", raw, labels,
                                   what + ", raw")
  return out


# ----------------------------------------------------------------------------
# Training curves.


def _series(rows: Sequence[Mapping], key: str):
  pts = [(r["step"], r[key]) for r in rows
         if isinstance(r.get(key), (int, float)) and "step" in r]
  return [p[0] for p in pts], [p[1] for p in pts]


def training_curves(rows: Sequence[Mapping], path: str, title: str = "",
                    skip: Sequence[str] = ("train/lr", "train/grad_norm")
                    ) -> str | None:
  """Train losses and val metrics over steps from metrics.jsonl rows.

  Returns the PNG path, or None when the rows hold nothing to plot.
  """
  keys = sorted({k for r in rows for k in r if k != "step"})
  train = [k for k in keys if k.startswith("train/") and k not in skip]
  val = [k for k in keys if k.startswith("val/")]
  panels = [(n, ks) for n, ks in (("training losses", train),
                                  ("validation", val)) if ks]
  if not panels:
    return None
  fig = _figure(figsize=(5.5 * len(panels), 3.6))
  axes = fig.subplots(1, len(panels), squeeze=False)
  for ax, (name, ks) in zip(axes[0], panels):
    for k in ks:
      x, y = _series(rows, k)
      if x:
        ax.plot(x, y, label=k.split("/", 1)[1],
                marker="o" if len(x) < 30 else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_title(name, fontsize=9)
    ax.grid(color="#eeeeee")
    ax.legend(fontsize=6, ncol=2)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return _save(fig, path)
