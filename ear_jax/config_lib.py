"""Small helpers for ml_collections configs: `:key=value` args, required
fields, configs by name (`stage3:tiny`) and checks of `--config.` flags."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from typing import Any, Sequence

from ml_collections import config_dict

# Files in the configs package that are not configs.
_NOT_CONFIGS = ("__init__", "common", "uwav")  # uwav: the :uwav overrides


class UnknownArgError(ValueError):
  """An unknown `:key` after a config name; `valid` lists the known ones."""

  def __init__(self, msg: str, valid: Sequence[str]):
    super().__init__(msg)
    self.valid = tuple(valid)


def parse_arg(arg: str | None, **defaults: Any) -> config_dict.ConfigDict:
  """Parses 'tiny' or 'small,dataset=llp' into a ConfigDict over `defaults`.

  A bare key sets a boolean default to True. Unknown keys raise, listing the
  valid ones, so `configs/stage1.py:tinny` fails instead of running full size.
  """
  out = config_dict.ConfigDict(dict(defaults))
  if not arg:
    return out
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise UnknownArgError(
          f"unknown config arg {key!r} in {arg!r}; valid args are"
          f" {sorted(defaults)} (e.g. configs/stage1.py:tiny).",
          sorted(defaults))
    if not sep:
      if not isinstance(defaults[key], bool):
        raise ValueError(f"config arg {key!r} needs a value: {key}=...")
      out[key] = True
      continue
    default = defaults[key]
    if isinstance(default, str) or default is None:
      out[key] = value
    else:
      try:
        out[key] = type(default)(ast.literal_eval(value))
      except (ValueError, SyntaxError) as e:
        raise ValueError(
            f"config arg {key}={value!r}: expected a {type(default).__name__}"
        ) from e
  return out


def unset_required(config: config_dict.ConfigDict) -> list[str]:
  """Returns the dotted names in `config.required` whose value is still None."""
  missing = []
  for name in config.get("required", ()):
    node = config
    for part in name.split("."):
      if part not in node:
        raise KeyError(f"config.required names {name!r}, which is not a field")
      node = node[part]
    if node is None:
      missing.append(name)
  return missing


def check_required(config: config_dict.ConfigDict) -> None:
  """Raises one error that lists every required path still unset."""
  missing = unset_required(config)
  if missing:
    flags = " ".join(f"--config.{m}=..." for m in missing)
    raise ValueError(
        f"required config fields are unset: {', '.join(missing)}. Set them"
        f" on the command line, e.g. {flags}"
    )


def set_field(config: config_dict.ConfigDict, dotted: str, value: Any) -> None:
  """config.<dotted> = value, e.g. set_field(c, "data.llp_root", "/d")."""
  *parents, leaf = dotted.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value


# ----------------------------------------------------------------------------
# Configs by name, from any folder.


class ConfigError(ValueError):
  """A --config value or --config.<field> flag that names nothing."""


def configs_dir() -> str:
  """The folder of the packaged configs (configs/ of the checkout)."""
  spec = importlib.util.find_spec("ear_jax.configs")
  if spec is None or not spec.submodule_search_locations:
    raise ConfigError("the package ear_jax.configs is missing; reinstall"
                      " ear-jax (pip install -e .) or run from a checkout.")
  return list(spec.submodule_search_locations)[0]


def config_names() -> list[str]:
  """Names of the packaged configs, e.g. ["demo", ..., "stage3"]."""
  return sorted(f[:-3] for f in os.listdir(configs_dir())
                if f.endswith(".py") and f[:-3] not in _NOT_CONFIGS)


def resolve_config(value: str) -> str:
  """A --config value -> "<config file>[:arg]" for ml_collections.

  An existing file is kept as it is. Otherwise `stage3`, `stage3:tiny`,
  `stage3.py` and `configs/stage3.py` name the packaged config, from any
  folder. Anything else raises one line listing the names.
  """
  path, sep, arg = value.partition(":")
  if os.path.isfile(path):
    return value
  name = path[:-3] if path.endswith(".py") else path
  folder, name = os.path.split(name)
  names = config_names()
  if folder in ("", "configs") and name in names:
    return os.path.join(configs_dir(), name + ".py") + sep + arg
  close = difflib.get_close_matches(name, names, n=1)
  hint = f"did you mean {close[0]!r}? " if close else ""
  raise ConfigError(
      f"--config={value}: no file {path!r} and no config of that name;"
      f" {hint}configs: {', '.join(names)} (or a path to a .py file).")


def load_config(value: str) -> tuple[config_dict.ConfigDict, str]:
  """(get_config(arg), module docstring) of a resolved --config value."""
  path, _, arg = resolve_config(value).partition(":")
  name = "ear_jax_config_" + os.path.basename(path)[:-3]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"--config={value}: {path} defines no get_config().")
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except ValueError as e:
    raise ConfigError(f"--config={value}: {e}") from e
  return config, module.__doc__ or ""


def variants(value: str) -> tuple[str, ...]:
  """The `:key` variants a config takes (e.g. ("small", "tiny"))."""
  path = resolve_config(value).partition(":")[0]
  try:
    load_config(path + ":__variants__")
  except ConfigError as e:
    if isinstance(e.__cause__, UnknownArgError):
      return e.__cause__.valid
  return ()


def check_override(config: config_dict.ConfigDict, dotted: str,
                   config_name: str) -> None:
  """Raises one line if `--config.<dotted>` names no field of `config`.

  The message names the first unknown part and the closest field, e.g.
  --config.modle.name -> "did you mean --config.model.name?". Parts below a
  non-config value (tuple items) are left to ml_collections.
  """
  node, parts = config, dotted.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, config_dict.ConfigDict):
      return
    if part not in node:
      close = difflib.get_close_matches(part, sorted(node.keys()), n=1)
      where = ".".join(parts[:i]) or config_name
      hint = (f"did you mean --config."
              f"{'.'.join(parts[:i] + close + parts[i + 1:])}? "
              if close else "")
      raise ConfigError(
          f"--config.{dotted}: {where} has no field {part!r}; {hint}see the"
          f" fields with: ear-jax --config={config_name} --print_config")
    node = node[part]


def describe(config: config_dict.ConfigDict, title: str) -> str:
  """`--print_config`: one `field = value` line per leaf, required marked."""
  required = set(config.get("required", ()))
  unset = set(unset_required(config))
  lines = [f"# {title}: every field and its value (defaults plus the"
           " --config.* flags given).",
           "# Set one with --config.FIELD=VALUE (--workdir=DIR for the"
           " workdir)."]

  def walk(node, prefix):
    for key in sorted(node):
      value, name = node[key], prefix + key
      if isinstance(value, dict):
        walk(value, name + ".")
        continue
      note = ("  # required, unset" if name in unset else
              "  # required" if name in required else "")
      lines.append(f"{name} = {value!r}{note}")

  walk(config.to_dict(), "")
  return "\n".join(lines)
