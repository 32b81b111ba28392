"""Paired comparison of two runs over their seeds: b - a per LLP metric.

Reads each run's eval/<split>_seeds.json (a run trained with
`num_seeds=N`), or its eval/<split>.json as a single seed. Seeds are paired
by value (seed s of run a with seed s of run b, the pseudo-label set and
data order they share), and for every metric the mean difference gets its
Student-t 95% CI and an exact sign-flip permutation p-value (ear_jax.stats).
Numpy only.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

from ear_jax import jsonio
from ear_jax import metrics as metrics_lib
from ear_jax import stats as stats_lib

METRICS = metrics_lib.AGGREGATE_KEYS + ("avg",)
PAIR_BY = ("seed", "index")


class CompareError(ValueError):
  """Two runs cannot be compared; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class SeedResults:
  """One run's scores on one split, seed by seed."""
  workdir: str
  split: str
  seeds: list[int]
  per_seed: dict[str, list[float]]   # METRICS -> one value per seed
  n_videos: int | None


def _seed_of_single_run(workdir: str) -> int | None:
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return None
  seed = jsonio.read_json(path).get("seed")
  return int(seed) if isinstance(seed, (int, float)) else None


def load(workdir: str, split: str) -> SeedResults:
  """The per-seed scores of `workdir` on `split` (see the module doc)."""
  eval_dir = os.path.join(workdir, "eval")
  seeds_path = os.path.join(eval_dir, f"{split}_seeds.json")
  single_path = os.path.join(eval_dir, f"{split}.json")
  if os.path.isfile(seeds_path):
    d = jsonio.read_json(seeds_path)
    seeds = [int(s) for s in d.get("seeds", [])]
    raw = d.get("per_seed", {})
    missing = [k for k in metrics_lib.AGGREGATE_KEYS if k not in raw]
    if not seeds or missing:
      raise CompareError(
          f"{seeds_path} lacks {'seeds' if not seeds else missing}; it is not"
          " an ear-jax seed file (re-run the stage that wrote it).")
    bad = {k: len(raw[k]) for k in metrics_lib.AGGREGATE_KEYS
           if len(raw[k]) != len(seeds)}
    if bad:
      raise CompareError(f"{seeds_path}: {len(seeds)} seeds but per-seed"
                         f" lists of lengths {bad}; the file is damaged.")
    rows = [{k: raw[k][i] for k in metrics_lib.AGGREGATE_KEYS}
            for i in range(len(seeds))]
    n_videos = d.get("n_videos")
  elif os.path.isfile(single_path):
    d = jsonio.read_json(single_path)
    seed = d.get("seed", _seed_of_single_run(workdir))
    seeds = [int(seed) if seed is not None else 0]
    rows = [d]
    n_videos = d.get("n_videos")
  else:
    raise CompareError(
        f"{workdir} has neither eval/{split}_seeds.json nor eval/{split}.json:"
        " point --config.a / --config.b at finished stage-2 or stage-3"
        " workdirs (or an evaluate workdir of that split).")
  try:
    scored = [metrics_lib.with_avg(r) for r in rows]
  except ValueError as e:
    raise CompareError(f"{workdir}/eval ({split}): {e}") from e
  per_seed = {k: [float(r[k]) for r in scored] for k in METRICS}
  return SeedResults(workdir=workdir, split=split, seeds=seeds,
                     per_seed=per_seed,
                     n_videos=int(n_videos) if n_videos is not None else None)


def pair(a: SeedResults, b: SeedResults, pair_by: str = "seed"
         ) -> tuple[list[int], list[int]]:
  """Indices into a.seeds and b.seeds of the paired seeds, in a's order."""
  if pair_by not in PAIR_BY:
    raise CompareError(f"pair_by={pair_by!r}; expected one of {PAIR_BY}.")
  if a.n_videos is not None and b.n_videos is not None and (
      a.n_videos != b.n_videos):
    raise CompareError(
        f"{a.workdir} scored {a.n_videos} {a.split} videos but {b.workdir}"
        f" {b.n_videos}: the runs were evaluated on different videos, so"
        " their scores do not pair.")
  if pair_by == "index":
    if len(a.seeds) != len(b.seeds):
      raise CompareError(
          f"{a.workdir} has {len(a.seeds)} seeds and {b.workdir}"
          f" {len(b.seeds)}: paired comparison needs one b seed per a seed.")
    return list(range(len(a.seeds))), list(range(len(b.seeds)))
  if sorted(a.seeds) != sorted(b.seeds) or len(set(a.seeds)) != len(a.seeds):
    raise CompareError(
        f"the runs have different seeds: {a.workdir} {a.seeds}, {b.workdir}"
        f" {b.seeds}. Train both with the same --config.seed and"
        " --config.num_seeds, or pair them by position with"
        " --config.pair_by=index.")
  b_pos = {s: i for i, s in enumerate(b.seeds)}
  return list(range(len(a.seeds))), [b_pos[s] for s in a.seeds]


def compare(a: SeedResults, b: SeedResults, pair_by: str = "seed") -> dict:
  """{"split", "a", "b", "seeds_a", "seeds_b", "n", "a_stats", "b_stats",
  "diff": {metric: {"n", "mean", "std", "ci95", "p"}}} for b - a."""
  ia, ib = pair(a, b, pair_by)
  out = dict(split=a.split, a=a.workdir, b=b.workdir,
             seeds_a=[a.seeds[i] for i in ia],
             seeds_b=[b.seeds[i] for i in ib], n=len(ia),
             a_stats={}, b_stats={}, diff={})
  for k in METRICS:
    va = [a.per_seed[k][i] for i in ia]
    vb = [b.per_seed[k][i] for i in ib]
    out["a_stats"][k] = stats_lib.describe(va)
    out["b_stats"][k] = stats_lib.describe(vb)
    out["diff"][k] = stats_lib.paired(va, vb)
  return out


# ------------------------------------------------------------------ tables
def _pm(mean: float, spread: float | None, signed: bool = False) -> str:
  m = f"{mean:+.2f}" if signed else f"{mean:.1f}"
  if spread is None:
    return m
  return f"{m}±{spread:.2f}" if signed else f"{m}±{spread:.1f}"


def _cells(result: Mapping[str, Any], name_a: str, name_b: str
           ) -> list[tuple[str, list[str]]]:
  n = result["n"]
  rows = []
  for label, key in ((name_a, "a_stats"), (name_b, "b_stats")):
    rows.append((f"{label} (mean±std, n={n})",
                 [_pm(result[key][k]["mean"], result[key][k]["std"])
                  for k in METRICS]))
  d = result["diff"]
  rows.append((f"{name_b} - {name_a} (mean±95% CI)",
               [_pm(d[k]["mean"], d[k]["ci95"], signed=True)
                for k in METRICS]))
  rows.append(("p (exact paired permutation)",
               [f"{d[k]['p']:.3g}" for k in METRICS]))
  return rows


def format_comparison(result: Mapping[str, Any], name_a: str = "a",
                      name_b: str = "b") -> str:
  """Plain-text table in the paper's layout (Seg | Evt | Avg)."""
  rows = _cells(result, name_a, name_b)
  w = max(len(r[0]) for r in rows)
  cw = max(6, max(len(c) for _, cells in rows for c in cells))
  cols = ("A", "V", "AV", "Type", "Event")
  seg_w = 5 * cw + 4

  def line(name, cells):
    return (f"{name:<{w}} | " + " ".join(f"{c:>{cw}}" for c in cells[:5])
            + " | " + " ".join(f"{c:>{cw}}" for c in cells[5:10])
            + f" | {cells[10]:>{cw}}")

  top = (" " * w + " | " + f"{'Segment-level':<{seg_w}}" + " | "
         + f"{'Event-level':<{seg_w}}" + " |")
  head = line("", list(cols) + list(cols) + ["Avg"])
  out = [f"LLP {result['split']}: {name_b} - {name_a} over {result['n']}"
         f" paired seed(s)", top, head, "-" * len(head)]
  out += [line(name, cells) for name, cells in rows]
  if result["n"] < 2:
    out.append("(one seed: no spread, no CI; p = 1 by construction. Train"
               " with --config.num_seeds=N for N >= 3.)")
  return "\n".join(out)


def markdown_comparison(result: Mapping[str, Any], name_a: str = "a",
                        name_b: str = "b") -> str:
  """The same table in Markdown (report.md)."""
  head = ("| | Seg A | V | AV | Type | Event | Evt A | V | AV | Type | Event"
          " | Avg |")
  lines = [head, "|" + "---|" * 12]
  for name, cells in _cells(result, name_a, name_b):
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def run_names(paths: Sequence[str]) -> list[str]:
  """Short names for workdirs: their last path component."""
  return [os.path.basename(os.path.normpath(p)) or p for p in paths]


def write(path: str, result: Mapping[str, Any]) -> None:
  """The comparison as JSON (atomic)."""
  jsonio.write_json_atomic(path, dict(result))

