"""Test setup: CPU with four fake devices, strict rank promotion, test data."""

import os
import pathlib

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=4"
    # Tests are dominated by XLA:CPU compile time; these halve it.
    + " --xla_backend_optimization_level=0"
    + " --xla_llvm_disable_expensive_passes=true"
)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update("jax_numpy_rank_promotion", "raise")
# The end-to-end tests compile the same train steps several times (a run,
# its interrupted twin, the resume): a persistent cache, shared by the xdist
# workers of one session, compiles each once.
jax.config.update(
    "jax_compilation_cache_dir",
    os.environ.get("EAR_JAX_TEST_CACHE", "/tmp/ear_jax_test_jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

TESTDATA = pathlib.Path(__file__).resolve().parent / "testdata"


@pytest.fixture(scope="session")
def testdata_dir() -> pathlib.Path:
  """tests/testdata: LLP CSVs, a UnAV-100 subset, golden metrics (README)."""
  return TESTDATA


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory) -> pathlib.Path:
  """<tmp>/BjCEufrlXm4.mp4: a generated clip laid out like LLP's 10-s sample."""
  pytest.importorskip("av")
  import export_fixtures  # pylint: disable=g-import-not-at-top
  d = tmp_path_factory.mktemp("sample_video")
  return export_fixtures.write_sample_clip(
      d / f"{export_fixtures.SAMPLE_ID}.mp4")
