"""Train steps compiled ahead of time for TPU v5e from this CPU host
(benchmarks/aot_check.py): they compile, and platform choices follow the
target, so no CPU-only `conditional` is left in them."""

import dataclasses
import importlib.util
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import pytest

from ear_jax import cpu_prng
from ear_jax.models import layers as layers_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _need_libtpu():
  """Skips without libtpu, except in CI (.ci/run installs the aot extra)."""
  if importlib.util.find_spec("libtpu") is not None:
    return
  if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    pytest.fail("CI: libtpu is missing; .ci/run installs it with the aot"
                " extra (pip install -e \".[aot]\").")
  pytest.skip("libtpu is not installed: pip install -e \".[aot]\"")


@pytest.fixture(scope="module")
def aot():
  _need_libtpu()
  spec = importlib.util.spec_from_file_location(
      "aot_check", REPO / "benchmarks" / "aot_check.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules["aot_check"] = module  # its dataclasses look it up
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def v5e_mesh(aot):
  # pylint: disable-next=g-import-not-at-top
  from ear_jax import sharding as sharding_lib
  return sharding_lib.make_mesh(aot.target_devices(aot.get_target("v5e:2x2")))


def test_dropout_mask_branch_follows_the_lowering_platform(aot, v5e_mesh):
  """The materialising cond is CPU's: compiled for CPU it is there, for TPU
  (from the same CPU host) it is not."""
  drop = layers_lib.Dropout(0.3)
  shape = (4, cpu_prng.MIN_UNROLLED // 4)  # large enough for the CPU path

  def loss(x, key):
    return jnp.sum(jnp.sin(drop(x, deterministic=False, rngs=key)))

  step = jax.jit(jax.value_and_grad(loss))
  key = jax.eval_shape(lambda: jax.random.key(0))
  cpu = step.trace(jax.ShapeDtypeStruct(shape, jnp.float32), key).lower()
  assert " conditional(" in cpu.compile().as_text()
  repl = jax.sharding.NamedSharding(v5e_mesh, jax.sharding.PartitionSpec())
  tpu = aot.Program(step, (
      jax.ShapeDtypeStruct(shape, jnp.float32, sharding=repl),
      jax.ShapeDtypeStruct((), key.dtype, sharding=repl)), {}, 4, 0.0, True)
  compiled, _, _ = aot.compile_program(tpu, aot.get_target("v5e:2x2"))
  assert " conditional(" not in compiled.as_text()


@pytest.mark.parametrize("program", ["generator_ear_train", "han_train",
                                     "han_seeds4_train"])
def test_tiny_train_epoch_compiles_for_v5e_without_conditionals(
    aot, v5e_mesh, program, monkeypatch):
  # Every dropout draw of the :tiny models takes the dispatching path (at
  # paper sizes the large ones do): a host-chosen branch would show here.
  monkeypatch.setattr(cpu_prng, "MIN_UNROLLED", 1)
  target = aot.get_target("v5e:2x2")
  row = aot.check_program(target, program, "float32", "tiny", v5e_mesh)
  assert row["ok"], row["error"]
  assert row["devices"] == 4 and row["batch"] == 8
  assert row["num_seeds"] == (4 if "seeds4" in program else 1)
  assert row["conditionals"] == 0
  # Per-device memory and XLA's counts come back and add up.
  assert 0 < row["arguments_gb"] <= row["total_gb"] < row["device_memory_gb"]
  assert row["gflop"] > 0 and row["lower_bound_ms"] > 0


def test_unknown_target_and_missing_compiler_are_named(aot, monkeypatch):
  with pytest.raises(aot.AotError, match=r"--target='v9x'.*h100"):
    aot.get_target("v9x")
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(aot.AotError, match="no libtpu"):
    aot.target_devices(aot.get_target("v5e:2x2"))
  with pytest.raises(aot.AotError, match="no CUDA plugin"):
    aot.target_devices(aot.get_target("h100"))


def test_a_program_larger_than_the_device_is_not_ok(aot, v5e_mesh):
  small = dataclasses.replace(aot.get_target("v5e:2x2"), memory_bytes=1e5)
  row = aot.check_program(small, "han_predict", "float32", "tiny", v5e_mesh)
  assert not row["ok"] and row["total_gb"] * 1e9 > 1e5
  assert "han_predict needs" in row["error"]
  assert "lower the batch size" in row["error"]
  table = aot.format_table([row])
  assert "FAIL" in table and "han_predict needs" in table


def test_batch_and_seed_estimates(aot):
  target = aot.get_target("v5e:2x2")  # 16 GiB = 17.18 GB per chip
  row = dict(total_gb=5.0, temporaries_gb=2.0, batch=64, devices=4,
             data_gb=1.0)
  est = aot.fits(target, row)
  # (17.18 - 3) / (2 / 64) = 453.9 -> 452, a multiple of the 4 devices.
  assert est["max_batch_est"] == 452
  # (17.18 - 1) / 4 = 4.04 seeds.
  assert est["max_seeds_est"] == 4
