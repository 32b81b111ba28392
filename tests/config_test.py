"""Configs and launch.py: variants, overrides, clear errors for bad input."""

import glob
import importlib
import os
import subprocess
import sys

import pytest
from ml_collections import config_dict

from ear_jax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIGS = sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs",
                                                             "*.py"))
    # uwav.py: the :uwav overrides the stage configs apply, not a config.
    if not p.endswith(("__init__.py", "common.py", "uwav.py")))


def test_parse_arg():
  a = config_lib.parse_arg("tiny,n=3", tiny=False, n=1, name="x")
  assert a.tiny is True and a.n == 3 and a.name == "x"
  with pytest.raises(ValueError, match="unknown config arg 'tinny'"):
    config_lib.parse_arg("tinny", tiny=False)
  with pytest.raises(ValueError, match="expected a int"):
    config_lib.parse_arg("n=abc", n=1)


@pytest.mark.parametrize("name", _CONFIGS)
def test_every_config_builds_with_tiny(name):
  module = importlib.import_module(f"ear_jax.configs.{name}")
  for arg in (None, "tiny"):
    c = module.get_config(arg)
    # compare only reads other runs: its workdir is optional.
    assert c.stage and ("workdir" in c.required or name == "compare")
    assert config_lib.unset_required(c), "required fields must start unset"
    assert module.__doc__ and "python launch.py" in module.__doc__


def test_check_required_lists_every_missing_field():
  module = importlib.import_module("ear_jax.configs.stage1")
  c = module.get_config("tiny")
  with pytest.raises(ValueError) as e:
    config_lib.check_required(c)
  assert "workdir" in str(e.value) and "data.unav_root" in str(e.value)
  assert "--config.data.unav_root=..." in str(e.value)


def _launch(*args):
  return subprocess.run(
      [sys.executable, "launch.py", *args], cwd=REPO, capture_output=True,
      text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_launch_errors_are_clear(tmp_path):
  r = _launch("--config=configs/stage1.py:tiny")
  assert r.returncode != 0
  assert "required config fields are unset: workdir, data.unav_root" in r.stderr
  r = _launch("--config=configs/stage1.py:tiny", f"--config.workdir={tmp_path}",
              "--config.no_such_key=1")
  assert r.returncode != 0 and "no_such_key" in r.stderr
  r = _launch("--config=configs/stage1.py:tiny", f"--config.workdir={tmp_path}",
              "--config.data.unav_root=/x", "--config.stage=nope")
  assert r.returncode != 0 and "expected one of" in r.stderr


def test_set_field_sets_nested_fields_and_rejects_unknown_parents():
  c = config_dict.ConfigDict({"a": {"b": {"c": 1}}, "d": 2})
  config_lib.set_field(c, "a.b.c", 5)
  config_lib.set_field(c, "d", 7)
  assert c.a.b.c == 5 and c.d == 7
  with pytest.raises(KeyError):
    config_lib.set_field(c, "nope.c", 1)
