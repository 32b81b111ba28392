"""Paired comparison of two runs (configs/compare.py, ear_jax/compare.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from ear_jax import compare as compare_lib
from ear_jax import jsonio
from ear_jax import metrics as metrics_lib
from ear_jax import stats as stats_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = metrics_lib.AGGREGATE_KEYS


def _scores(rng, base):
  return {k: float(base + rng.uniform(-2, 2)) for k in KEYS}


def _seed_run(path, seeds, per_seed_scores, split="test", n_videos=300):
  per_seed = {k: [s[k] for s in per_seed_scores] for k in KEYS}
  jsonio.write_json_atomic(
      os.path.join(path, "eval", f"{split}_seeds.json"),
      dict(seeds=seeds, per_seed=per_seed, n=len(seeds), split=split,
           n_videos=n_videos, **stats_lib.summarize(per_seed)))
  return str(path)


def test_compare_pairs_by_seed_value_and_computes_b_minus_a(tmp_path):
  rng = np.random.default_rng(0)
  a = [_scores(rng, 60) for _ in range(4)]
  b = [_scores(rng, 61) for _ in range(4)]
  wa = _seed_run(tmp_path / "han", [5, 6, 7, 8], a)
  # b lists its seeds in another order: pairing follows the seed values.
  order = [2, 0, 3, 1]
  wb = _seed_run(tmp_path / "ear", [[5, 6, 7, 8][i] for i in order],
                 [b[i] for i in order])
  r = compare_lib.compare(compare_lib.load(wa, "test"),
                          compare_lib.load(wb, "test"))
  assert r["n"] == 4 and r["seeds_a"] == r["seeds_b"] == [5, 6, 7, 8]
  for k in KEYS:
    d = [b[i][k] - a[i][k] for i in range(4)]
    assert r["diff"][k]["mean"] == pytest.approx(np.mean(d))
    assert r["diff"][k]["std"] == pytest.approx(np.std(d, ddof=1))
    assert r["diff"][k]["ci95"] == pytest.approx(stats_lib.ci95_half_width(d))
    assert r["diff"][k]["p"] == stats_lib.sign_flip_p_value(d)
  avg_a = [np.mean([s[k] for k in KEYS]) for s in a]
  assert r["a_stats"]["avg"]["mean"] == pytest.approx(np.mean(avg_a))
  table = compare_lib.format_comparison(r, "han", "ear")
  assert "ear - han" in table and "n=4" in table
  md = compare_lib.markdown_comparison(r, "han", "ear")
  assert md.count("\n") == 5  # header, rule, 4 rows


def test_single_seed_runs_compare_with_n1(tmp_path):
  for name, base in (("a", 50.0), ("b", 52.0)):
    jsonio.write_json_atomic(str(tmp_path / name / "config.json"),
                             {"seed": 20000, "stage": "train_parser"})
    metrics_lib.write_eval_json(str(tmp_path / name / "eval" / "test.json"),
                                {k: base for k in KEYS},
                                extra=dict(split="test", n_videos=10))
  r = compare_lib.compare(compare_lib.load(str(tmp_path / "a"), "test"),
                          compare_lib.load(str(tmp_path / "b"), "test"))
  assert r["n"] == 1 and r["diff"]["avg"]["mean"] == pytest.approx(2.0)
  assert r["diff"]["avg"]["ci95"] is None and r["diff"]["avg"]["p"] == 1.0
  assert "one seed" in compare_lib.format_comparison(r)


def test_compare_refuses_runs_that_do_not_pair(tmp_path):
  rng = np.random.default_rng(1)
  wa = _seed_run(tmp_path / "a", [0, 1, 2], [_scores(rng, 60)] * 3)
  wb = _seed_run(tmp_path / "b", [0, 1, 5], [_scores(rng, 60)] * 3)
  wc = _seed_run(tmp_path / "c", [0, 1], [_scores(rng, 60)] * 2)
  wd = _seed_run(tmp_path / "d", [0, 1, 2], [_scores(rng, 60)] * 3,
                 n_videos=200)
  load = compare_lib.load
  with pytest.raises(compare_lib.CompareError, match="different seeds"):
    compare_lib.compare(load(wa, "test"), load(wb, "test"))
  # By position the same two runs pair.
  r = compare_lib.compare(load(wa, "test"), load(wb, "test"), "index")
  assert r["seeds_b"] == [0, 1, 5]
  with pytest.raises(compare_lib.CompareError, match="3 seeds and .* 2"):
    compare_lib.compare(load(wa, "test"), load(wc, "test"), "index")
  with pytest.raises(compare_lib.CompareError, match="different videos"):
    compare_lib.compare(load(wa, "test"), load(wd, "test"))
  with pytest.raises(compare_lib.CompareError, match="neither"):
    load(str(tmp_path / "nothing"), "test")


def test_compare_command_prints_and_writes(tmp_path):
  rng = np.random.default_rng(2)
  wa = _seed_run(tmp_path / "han", [0, 1, 2], [_scores(rng, 60)
                                               for _ in range(3)])
  wb = _seed_run(tmp_path / "ear", [0, 1, 2], [_scores(rng, 62)
                                               for _ in range(3)])
  out = tmp_path / "cmp"
  r = subprocess.run(
      [sys.executable, "launch.py", "--config=configs/compare.py",
       f"--config.a={wa}", f"--config.b={wb}", f"--config.workdir={out}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stderr[-2000:]
  assert "ear - han" in r.stdout
  saved = jsonio.read_json(str(out / "compare_test.json"))
  assert saved["n"] == 3 and saved["name_b"] == "ear"
  assert (out / "compare_test.md").read_text().startswith("| |")
  # No workdir: prints only. Mismatched seeds: one clear error, no traceback.
  wc = _seed_run(tmp_path / "c", [7, 8, 9], [_scores(rng, 60)] * 3)
  r = subprocess.run(
      [sys.executable, "launch.py", "--config=configs/compare.py",
       f"--config.a={wa}", f"--config.b={wc}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode != 0
  assert "different seeds" in r.stderr


def test_demo_reports_ear_minus_han_when_both_ran_with_seeds(tmp_path):
  from ear_jax.configs import demo as demo_config  # pylint: disable=g-import-not-at-top
  from ear_jax import report as report_lib  # pylint: disable=g-import-not-at-top
  from ear_jax.stages import demo  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  config = demo_config.get_config("tiny")
  config.workdir = str(tmp_path)
  for run, base in (("stage3_han", 60), ("stage3", 61)):
    for split in ("val", "test"):
      _seed_run(tmp_path / run, [20000, 20001, 20002],
                [_scores(rng, base) for _ in range(3)], split=split)
  assert demo.paired_comparisons(config) == {}  # num_seeds unset: one seed
  config.num_seeds = 3
  got = demo.paired_comparisons(config)
  assert set(got) == {"val", "test"}
  direct = compare_lib.compare(
      compare_lib.load(str(tmp_path / "stage3_han"), "test"),
      compare_lib.load(str(tmp_path / "stage3"), "test"))
  assert got["test"] == direct
  md = report_lib.write_report(
      str(tmp_path / "report.md"), title="t", tables={},
      comparisons={"EAR - HAN, LLP test": compare_lib.markdown_comparison(
          got["test"], "HAN", "EAR")})
  text = open(md).read()
  assert "## Paired comparisons over seeds" in text
  assert "EAR - HAN (mean±95% CI)" in text
