"""benchmarks/gpu_suite.py at tiny sizes on CPU: every section runs, so the
first real GPU run does not die on a typo."""

import importlib.util
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load(name):
  spec = importlib.util.spec_from_file_location(
      name, REPO / "benchmarks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_dry_run_writes_every_section(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  suite = _load("gpu_suite")
  out = tmp_path / "suite.json"
  result = suite.main(["--dry_run", f"--out={out}"])
  written = json.loads(out.read_text())
  assert written["sections"].keys() == result["sections"].keys()
  sections = written["sections"]
  errors = {k: v["error"] for k, v in sections.items() if "error" in v}
  assert not errors, errors
  assert set(sections) == {"env", "steps", "stage3_run", "stage1_run",
                           "seeds", "inference", "export", "torch"}
  seeds = sections["seeds"]
  for n in (1, 2):
    assert seeds[f"han_seeds{n}"]["ms_per_step"] > 0
    assert seeds[f"han_seeds{n}"]["num_seeds"] == n
  steps = sections["steps"]
  for key in ("han_float32", "generator_bfloat16"):
    assert steps[key]["ms_per_step"] > 0 and steps[key]["compile_s"] > 0
  assert steps["generator_bfloat16"]["dtype"] == "bfloat16"
  s3 = sections["stage3_run"]
  assert s3["epochs"] == 2 and s3["wall_s"] > 0 and s3["metrics_ok"]
  assert sections["stage1_run"]["final"]["seg_av"] >= 0
  assert sections["inference"]["han_bfloat16"]["videos_per_s"] > 0
  assert sections["export"]["clip"]["rows_per_s"] > 0
  assert sections["export"]["clap"]["rows_per_s"] > 0
  assert sections["torch"]["skipped"] == "no --uwav_root"


def test_missing_dependency_without_wheels_names_the_fix(tmp_path,
                                                         monkeypatch):
  suite = _load("gpu_suite")
  monkeypatch.setattr(suite, "NEEDED", ("ear_jax_no_such_module",))
  with pytest.raises(ImportError, match="fetch_gpu_wheels.sh"):
    suite.ensure_deps(str(tmp_path))
