"""Small helpers for ml_collections configs: `:key=value` args, required fields."""

from __future__ import annotations

import ast
from typing import Any

from ml_collections import config_dict


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
      raise ValueError(
          f"unknown config arg {key!r} in {arg!r}; valid args are"
          f" {sorted(defaults)} (e.g. configs/stage1.py:tiny)."
      )
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
