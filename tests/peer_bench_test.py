"""benchmarks/peer_bench.py at tiny sizes without torch: the ear-jax side of
every step section runs and reports XLA's per-step cost next to its time."""

import importlib.util
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load():
  spec = importlib.util.spec_from_file_location(
      "peer_bench", REPO / "benchmarks" / "peer_bench.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def pb():
  return _load()


def test_tiny_run_reports_cost_and_gemm_peak(pb):
  args = pb.parse_args(["--tiny", "--reps=1", "--only=gemm,han"])
  out = pb.main(args)
  res = out["results"]
  assert set(res) == {"gemm_peak", "stage3_step"}
  (row,) = res["gemm_peak"].values()
  assert row["jax_gflops"] > 0 and "torch_gflops" not in row
  han = res["stage3_step"]["jax_han"]
  assert han["median_s"] > 0 and han["compile_s"] > 0
  assert han["gflop_per_step"] > 0 and han["gb_per_step"] > 0
  np.testing.assert_allclose(
      han["achieved_gflops"], han["gflop_per_step"] / han["median_s"],
      rtol=0.05)


def test_cost_is_per_step_for_any_scan_length(pb):
  """XLA counts the scanned body once: 1 and 3 steps give the same cost."""
  rng = np.random.default_rng(0)
  c = pb.TINY_HAN
  d3 = pb.stage3_data(rng, 64, c["input_a_dim"], c["input_v_2d_dim"],
                      c["input_v_3d_dim"])
  one = pb.jax_parser("han", d3, 16, 1, True, "float32").cost
  three = pb.jax_parser("han", d3, 16, 3, True, "float32").cost
  assert one["gflop"] > 0
  np.testing.assert_allclose(three["gflop"], one["gflop"], rtol=0.05)
  np.testing.assert_allclose(three["gb"], one["gb"], rtol=0.1)


def test_unknown_section_names_the_choices(pb):
  args = pb.parse_args(["--tiny", "--only=han,gpu"])
  with pytest.raises(ValueError, match="gemm,han,ear,generator,infer"):
    pb.main(args)
