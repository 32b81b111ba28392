"""The `ear-jax` command and the run-wide conventions: matmul precision,
persistent compilation cache, TensorBoard events, matplotlib left alone."""

import os
import struct
import subprocess
import sys
import tomllib

import jax
from jax.experimental.compilation_cache import compilation_cache
import jax.numpy as jnp
import numpy as np
import pytest

from ear_jax.configs import common
from ear_jax import cli
from ear_jax import writer as writer_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_JAX_KEYS = ("jax_default_matmul_precision", "jax_compilation_cache_dir",
             "jax_persistent_cache_min_compile_time_secs")


@pytest.fixture
def restore_jax_config():
  """setup_runtime changes process-wide settings: put the test ones back."""
  saved = {k: getattr(jax.config, k) for k in _JAX_KEYS}
  yield
  for k, v in saved.items():
    jax.config.update(k, v)
  compilation_cache.reset_cache()


def _config(**fields):
  c = common.base("evaluate")
  c.update(fields)
  return c


def test_console_script_is_the_cli():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    scripts = tomllib.load(f)["project"]["scripts"]
  module, fn = scripts["ear-jax"].split(":")
  assert (module, fn) == ("ear_jax.cli", "run") and callable(cli.run)
  # launch.py is a thin wrapper of the same command.
  r = subprocess.run([sys.executable, "-m", "ear_jax.cli",
                      "--config=configs/stage1.py:tiny"], cwd=REPO,
                     capture_output=True, text=True, timeout=120,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode != 0
  assert "required config fields are unset: workdir" in r.stderr


def test_every_config_has_the_runtime_fields():
  c = _config()
  assert c.matmul_precision == "default"
  assert c.compilation_cache_dir == "auto" and c.tensorboard is False


def test_precision_and_cache_are_applied(tmp_path, restore_jax_config):
  cache = tmp_path / "xla"
  out = cli.setup_runtime(_config(
      matmul_precision="highest", compilation_cache_dir=str(cache),
      compilation_cache_min_compile_secs=0.0))
  assert out == dict(matmul_precision="highest",
                     compilation_cache_dir=str(cache))
  assert jax.config.jax_default_matmul_precision == "highest"
  assert jax.config.jax_compilation_cache_dir == str(cache)
  # A compiled program lands in the cache folder.
  x = jnp.arange(7.0)
  np.testing.assert_allclose(jax.jit(lambda v: jnp.sin(v) * 3.25 + v)(x),
                             np.sin(np.arange(7.0)) * 3.25 + np.arange(7.0),
                             rtol=1e-6)
  assert any(cache.iterdir()), "no cache entry written"


def test_cache_none_leaves_the_cache_alone(tmp_path, restore_jax_config):
  before = jax.config.jax_compilation_cache_dir
  out = cli.setup_runtime(_config(compilation_cache_dir="none"))
  assert out["compilation_cache_dir"] is None
  assert jax.config.jax_compilation_cache_dir == before
  assert jax.config.jax_default_matmul_precision == "default"


def test_cache_dir_resolution(monkeypatch, tmp_path):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert cli.resolve_cache_dir("auto") == str(tmp_path / "xdg/ear_jax/xla")
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert cli.resolve_cache_dir("auto") == str(
      tmp_path / "home/.cache/ear_jax/xla")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/somewhere")
  assert cli.resolve_cache_dir("auto") == "/somewhere"
  assert cli.resolve_cache_dir("~/c") == str(tmp_path / "home/c")
  for off in ("none", "None", "", None):
    assert cli.resolve_cache_dir(off) is None


def test_bad_runtime_fields_are_clear_errors(tmp_path, restore_jax_config):
  with pytest.raises(ValueError, match=r"matmul_precision='fast'.*highest"):
    cli.setup_runtime(_config(matmul_precision="fast"))
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(ValueError, match=r"compilation_cache_dir.*=none"):
    cli.setup_runtime(_config(compilation_cache_dir=str(blocker / "x")))


# ----------------------------------------------------------------------------
# TensorBoard.


def _read_events(logdir):
  """(tag, step, value) of every scalar in the TFRecord event files."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out = []
  for name in sorted(os.listdir(logdir)):
    with open(os.path.join(logdir, name), "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (n,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
      pos += 12 + n + 4
      for v in event.summary.value:
        out.append((v.tag, event.step, v.simple_value))
  return out


def test_tensorboard_events_beside_metrics_jsonl(tmp_path):
  pytest.importorskip("tensorboardX")
  w = writer_lib.MetricWriter(str(tmp_path), tensorboard=True)
  w.write(5, {"loss": np.float32(0.5), "val/seg_av": 61.25, "note": "x",
              "per_class": [1, 2]})
  w.write(10, {"loss": 0.25})
  w.close()
  logdir = tmp_path / writer_lib.TENSORBOARD_DIR
  assert [p.name.startswith("events.out.tfevents") for p in logdir.iterdir()
          ] == [True]
  assert _read_events(logdir) == [("loss", 5, 0.5), ("val/seg_av", 5, 61.25),
                                  ("loss", 10, 0.25)]
  assert len(writer_lib.read_metrics(str(tmp_path))) == 2
  # A resumed run drops the rows past its checkpoint, and TensorBoard
  # is told to purge those steps.
  w = writer_lib.MetricWriter(str(tmp_path), tensorboard=True)
  w.truncate_after(5)
  assert w.tensorboard._purge_step == 6  # pylint: disable=protected-access
  w.write(10, {"loss": 0.125})
  w.close()
  assert [r["step"] for r in writer_lib.read_metrics(str(tmp_path))] == [5, 10]
  assert ("loss", 10, 0.125) in _read_events(logdir)


def test_tensorboard_off_by_default(tmp_path):
  w = writer_lib.MetricWriter(str(tmp_path))
  w.write(1, {"loss": 1.0})
  assert w.tensorboard is None
  assert not (tmp_path / writer_lib.TENSORBOARD_DIR).exists()


def test_tensorboard_without_tensorboardx_names_the_extra(tmp_path,
                                                         monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  with pytest.raises(ImportError, match=r"ear-jax\[tensorboard\]"):
    writer_lib.MetricWriter(str(tmp_path), tensorboard=True)


# ----------------------------------------------------------------------------
# Matplotlib.


def test_importing_plots_keeps_the_matplotlib_backend(tmp_path):
  code = ("import sys, matplotlib; from ear_jax import plots;"
          " p = plots.training_curves([{'step': 1, 'train/loss': 1.0},"
          f" {{'step': 2, 'train/loss': 0.5}}], {str(tmp_path / 'c.png')!r});"
          " print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules,"
          " p is not None)")
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                     capture_output=True, text=True, timeout=120,
                     env=dict(os.environ, MPLBACKEND="svg"))
  assert r.returncode == 0, r.stderr
  assert r.stdout.split() == ["svg", "False", "True"]
  with open(tmp_path / "c.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"

