"""The command line as a newcomer meets it: configs by name from any folder,
`--help`, `--print_config`, `--workdir`, one-line errors for typos."""

import os
import subprocess
import sys
import tomllib

import pytest

from ear_jax import cli
from ear_jax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")


def _ear_jax(args, cwd):
  """`ear-jax ARGS` in `cwd`, with the checkout importable (not installed)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-m", "ear_jax.cli", *args],
                        cwd=cwd, capture_output=True, text=True, timeout=300,
                        env=env)


def test_config_names_are_the_files_of_configs():
  names = sorted(f[:-3] for f in os.listdir(CONFIGS)
                 if f.endswith(".py") and f not in ("__init__.py",
                                                    "common.py", "uwav.py"))
  assert config_lib.config_names() == names
  assert os.path.samefile(config_lib.configs_dir(), CONFIGS)


@pytest.mark.parametrize("value, file, arg", [
    ("stage3", "stage3.py", ""),
    ("stage3:tiny", "stage3.py", ":tiny"),
    ("parse", "parse.py", ""),
    ("demo.py:tiny", "demo.py", ":tiny"),
    ("configs/stage1.py:small", "stage1.py", ":small"),
])
def test_names_resolve_from_another_folder(value, file, arg, tmp_path,
                                           monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert config_lib.resolve_config(value) == os.path.join(
      config_lib.configs_dir(), file) + arg


def test_a_path_stays_a_path(tmp_path, monkeypatch):
  own = tmp_path / "stage3.py"  # a user's own config shadows the name
  own.write_text("def get_config(arg=None):\n  return None\n")
  monkeypatch.chdir(tmp_path)
  assert config_lib.resolve_config("stage3.py:tiny") == "stage3.py:tiny"
  assert config_lib.resolve_config(f"{own}:x") == f"{own}:x"


def test_unknown_name_lists_the_configs():
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.resolve_config("stag3:tiny")
  msg = str(e.value)
  assert "\n" not in msg and "did you mean 'stage3'?" in msg
  for name in config_lib.config_names():
    assert name in msg


def test_variants():
  assert config_lib.variants("stage3") == ("small", "tiny", "uwav")
  assert config_lib.variants("demo") == ("full", "tiny")
  with pytest.raises(config_lib.ConfigError, match="valid args are"):
    config_lib.load_config("stage3:tinny")


@pytest.mark.parametrize("flag, hint", [
    ("modle.name", "did you mean --config.model.name?"),
    ("model.nmae", "did you mean --config.model.name?"),
    ("wrokdir", "did you mean --config.workdir?"),
])
def test_typo_names_the_closest_field(flag, hint):
  config, _ = config_lib.load_config("stage3:tiny")
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.check_override(config, flag, "stage3:tiny")
  assert "\n" not in str(e.value) and hint in str(e.value)


def test_valid_fields_pass():
  config, _ = config_lib.load_config("stage3:tiny")
  for flag in ("model.name", "workdir", "data.llp_root", "optim.lr",
               "eval.strict"):
    config_lib.check_override(config, flag, "stage3")


def test_prepare_argv_resolves_and_spells_out_workdir(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  argv = cli.prepare_argv(["ear-jax", "--config=stage3:tiny",
                           "--workdir=/runs/x", "--config.model.name=han"])
  assert argv == ["ear-jax",
                  f"--config={os.path.join(CONFIGS, 'stage3.py')}:tiny",
                  "--config.workdir=/runs/x", "--config.model.name=han"]
  argv = cli.prepare_argv(["ear-jax", "--config", "parse", "--workdir", "w"])
  assert argv == ["ear-jax", "--config", os.path.join(CONFIGS, "parse.py"),
                  "--config.workdir", "w"]
  with pytest.raises(config_lib.ConfigError, match="--config.model.name"):
    cli.prepare_argv(["ear-jax", "--config=stage3", "--config.modle.name=a"])


def test_help_lists_every_config_with_its_required_fields():
  text = cli.help_text()
  for name in config_lib.config_names():
    assert f"\n  {name} " in text, name
  assert "--print_config" in text and "--workdir=DIR" in text
  stage3 = text[text.index("\n  stage3 "):]
  assert "--config.pseudo_labels_dir" in stage3
  assert "variants: small, tiny" in stage3
  assert max(len(line) for line in text.splitlines()) <= 80


def test_print_config_shows_fields_and_defaults():
  config, _ = config_lib.load_config("stage3:tiny")
  text = config_lib.describe(config, "stage3:tiny")
  assert "model.name = 'ear'" in text
  assert "data.llp_root = None  # required, unset" in text
  assert "batch_size = 8" in text


def test_command_from_another_folder(tmp_path):
  """By name, from a folder without configs/; --workdir; --print_config."""
  r = _ear_jax(["--config=stage3:tiny", f"--workdir={tmp_path}/w",
                "--config.model.name=han", "--print_config"], tmp_path)
  assert r.returncode == 0, r.stderr
  assert "model.name = 'han'" in r.stdout
  assert f"workdir = '{tmp_path}/w'  # required" in r.stdout
  assert not os.path.exists(tmp_path / "w"), "--print_config ran the stage"


def test_no_config_prints_the_help(tmp_path):
  r = _ear_jax([], tmp_path)
  assert r.returncode == 2 and "configs:" in r.stderr
  assert r.stderr.strip().endswith("--config=NAME is required (e.g."
                                   " --config=demo).")


def test_typo_is_one_line_and_exit_code_2(tmp_path):
  r = _ear_jax(["--config=stage3:tiny", "--config.modle.name=han"], tmp_path)
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
  assert lines[0].startswith("error: --config.modle.name:")
  assert "did you mean --config.model.name?" in lines[0]


def test_only_ear_jax_and_feature_export_are_installed():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    tool = tomllib.load(f)["tool"]["setuptools"]
  packages = set(tool["packages"])
  assert {p.split(".")[0] for p in packages} == {"ear_jax", "feature_export"}
  assert tool["package-dir"] == {"ear_jax.configs": "configs"}
  # Every package of the source tree is listed (the list is not found).
  found = set()
  for top in ("ear_jax", "feature_export"):
    for root, _, files in os.walk(os.path.join(REPO, top)):
      if "__init__.py" in files:
        found.add(os.path.relpath(root, REPO).replace(os.sep, "."))
  assert found | {"ear_jax.configs"} == packages, (
      "list every package in pyproject.toml [tool.setuptools] packages:"
      f" missing {sorted(found - packages)}")


@pytest.mark.parametrize("fields, expect", [
    (dict(stage="parse", videos="/v"), True),
    (dict(stage="parse", videos=None), False),
    (dict(stage="export_features"), True),
    (dict(stage="train_parser"), False),
])
def test_torch_and_jax_share_the_gpu(fields, expect):
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  env = {}
  assert cli.share_gpu_memory(config_dict.ConfigDict(fields), env) is expect
  assert env == ({"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if expect else {})
  # A value the user set is left alone.
  env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "true"}
  assert not cli.share_gpu_memory(config_dict.ConfigDict(fields), env)
  assert env == {"XLA_PYTHON_CLIENT_PREALLOCATE": "true"}


# ----------------------------------------------------------------------------
# Install: transformers only for the exporters, Python versions, extras.


def test_transformers_is_the_export_extras():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  core = " ".join(project["dependencies"])
  extras = project["optional-dependencies"]
  assert "transformers" not in core
  assert any(d.startswith("transformers") for d in extras["export"])
  assert {d.split(">")[0] for d in extras["tensorboard"]} == {
      "tensorboardX", "tensorboard"}
  assert project["requires-python"] == ">=3.11,<3.15"


def test_nothing_but_the_exporters_imports_transformers():
  code = (
      "import importlib, sys\n"
      "for m in ('ear_jax.cli', 'ear_jax.parsing', 'ear_jax.stages.demo',"
      " 'ear_jax.stages.parse', 'ear_jax.stages.train_parser',"
      " 'ear_jax.torch_import', 'feature_export.registry',"
      " 'feature_export.driver', 'feature_export.clip_clap'):\n"
      "  importlib.import_module(m)\n"
      "print(sorted(m for m in sys.modules if m.split('.')[0] in"
      " ('transformers', 'torch')))\n")
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, text=True,
                     capture_output=True, timeout=300,
                     env=dict(os.environ, JAX_PLATFORMS="cpu",
                              PYTHONPATH=REPO))
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == "[]"


def test_missing_transformers_names_the_extra(monkeypatch):
  from feature_export import clip_clap  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, "transformers", None)  # not installed
  with pytest.raises(ImportError, match=r"ear-jax\[export\]"):
    clip_clap._transformers()  # pylint: disable=protected-access
