"""One validation pass over a resolved config, before any data is loaded.

Every error names the field (as a --config flag) and a valid value, so a
typo fails in a second instead of after an epoch (or, worse, exits 0).
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any, Iterator

from ml_collections import config_dict

from ear_jax import metrics as metrics_lib
from ear_jax import models as models_lib
from ear_jax.data import llp_features
from ear_jax.data import valor_labels

# The metrics each training stage's per-epoch evaluation produces.
STAGE_METRICS = {
    "pretrain_generator": ("val/seg_av",),
    "train_parser": tuple(f"val/{k}" for k in metrics_lib.AGGREGATE_KEYS),
}
# Sub-configs of the demo, run as stages of their own.
DEMO_STAGES = ("stage1", "stage2", "stage3", "stage3_han")
CHECKPOINT_CHOICES = ("auto", "best", "latest")
# jax_default_matmul_precision values (ear_jax/cli.py applies the field).
MATMUL_PRECISIONS = ("default", "high", "highest", "bfloat16",
                     "tensorfloat32", "float32")
# Per stage: field -> valid values (checked only where the field exists).
CHOICES = {
    "*": {"matmul_precision": MATMUL_PRECISIONS,
          "seed_mode": ("vmap", "map")},
    "generate_pseudo_labels": {"logits": ("dynamic", "static"),
                               "checkpoint": CHECKPOINT_CHOICES},
    "train_parser": {"model.name": tuple(models_lib.PARSERS),
                     "data.features": tuple(llp_features.FEATURE_SETS),
                     "pseudo_labels_format": valor_labels.FORMATS,
                     "loss.hard_targets": ("threshold", "labels")},
    "evaluate": {"split": ("val", "test"), "checkpoint": CHECKPOINT_CHOICES},
    "parse": {"checkpoint": CHECKPOINT_CHOICES},
    "compare": {"split": ("test", "val", "val,test", "test,val"),
                "pair_by": ("seed", "index")},
    # ear_jax.torch_import.SOURCES
    "import_torch": {"source": ("uwav_generator", "uwav_han", "han_eccv20",
                                "valor_han")},
}
# Integer fields that must be >= 1 wherever they appear (None = unset is
# allowed: such fields default to another value, e.g. the run's).
_POSITIVE = re.compile(
    r"(^|\.)([a-z0-9_]*batch_size|batch_sizes\.[a-z0-9_]+|[a-z_]+_every_"
    r"[a-z_]+|total_epochs|num_load_workers|num_workers)$")
_NON_NEGATIVE = ("optim.warmup_epochs",)


class ConfigError(ValueError):
  """A config value is invalid; the message names the field and the fix."""


def _walk(node: Any, prefix: str = "", skip=()) -> Iterator[tuple[str, Any]]:
  for key in node.keys():
    value = node[key]
    name = f"{prefix}{key}"
    if isinstance(value, config_dict.ConfigDict):
      if name not in skip:
        yield from _walk(value, name + ".")
    else:
      yield name, value


def _get(config, dotted: str, default=None):
  node = config
  for part in dotted.split("."):
    if not isinstance(node, config_dict.ConfigDict) or part not in node:
      return default
    node = node[part]
  return node


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _errors(config, prefix: str = "") -> list[str]:
  """Messages of every invalid field of one stage config."""
  out = []
  flag = lambda name: f"--config.{prefix}{name}"
  subs = DEMO_STAGES if config.get("stage") == "demo" else ()
  for name, value in _walk(config, skip=subs):
    if _POSITIVE.search(name) and value is not None:
      if not _is_int(value) or value < 1:
        out.append(f"{flag(name)}={value!r}: must be an integer >= 1"
                   f" (e.g. {flag(name)}={_example(name)}).")
  for name in _NON_NEGATIVE:
    value = _get(config, name)
    if value is not None and (not _is_int(value) or value < 0):
      out.append(f"{flag(name)}={value!r}: must be an integer >= 0"
                 f" (e.g. {flag(name)}=0).")
  if "num_seeds" in config:
    n = config.num_seeds
    # None: only the demo's passthrough (each stage keeps its own).
    if not (n is None and config.get("stage") == "demo") and (
        not _is_int(n) or n < 1):
      out.append(f"{flag('num_seeds')}={n!r}: must be an integer >= 1, the"
                 f" number of seeds trained together (e.g."
                 f" {flag('num_seeds')}=3).")
  lr = _get(config, "optim.lr")
  if lr is not None and not (isinstance(lr, (int, float)) and lr > 0):
    out.append(f"{flag('optim.lr')}={lr!r}: must be > 0"
               f" (e.g. {flag('optim.lr')}=1e-4).")
  stage = config.get("stage")
  for table in (CHOICES["*"], CHOICES.get(stage, {})):
    for name, valid in table.items():
      value = _get(config, name, valid[0])
      # None: unset, which check_required reports for required fields.
      if value is not None and value not in valid:
        out.append(f"{flag(name)}={value!r}: expected one of"
                   f" {', '.join(map(repr, valid))}.")
  if stage in STAGE_METRICS and "best_metric" in config:
    valid = STAGE_METRICS[stage]
    if config.best_metric not in valid:
      out.append(
          f"{flag('best_metric')}={config.best_metric!r}: stage {stage!r}"
          f" evaluates only {', '.join(valid)} (e.g."
          f" {flag('best_metric')}={valid[0]}).")
  if stage == "parse":
    out.extend(_parse_errors(config, flag))
  if config.get("distributed", False) and not prefix:
    out.extend(_distributed_errors())
  return out


def parse_ids(value: str | None) -> list[str] | None:
  """--config.ids "a,b" -> ["a", "b"] (None: unset, every video found).

  An id is a file name (`<root>/<layout>/<id>.npy`, `parsed/<id>.json`):
  one with a path separator, "." or "..", a NUL or nothing at all is a
  ConfigError naming it, as is a value that names no id (",,").
  """
  if value is None:
    return None
  ids = list(dict.fromkeys(i.strip() for i in str(value).split(",")
                           if i.strip()))
  if not ids:
    raise ConfigError(
        f"--config.ids={value!r} names no video id; give ids separated by"
        " commas (e.g. --config.ids=BjCEufrlXm4,a0b1c2d3e4f), or leave it"
        " unset to parse every video found.")
  for vid in ids:
    bad = bad_id(vid)
    if bad:
      raise ConfigError(
          f"--config.ids: {vid!r} is not a video id ({bad}); an id is a file"
          " name without its extension, e.g. BjCEufrlXm4.")
  return ids


def bad_id(vid: str) -> str | None:
  """Why `vid` cannot be a video id (a file name), or None if it can."""
  if not vid:
    return "it is empty"
  if vid in (".", ".."):
    return "it names a directory"
  if "/" in vid or "\\" in vid or os.sep in vid:
    return "it contains a path separator"
  if "\0" in vid:
    return "it contains a NUL byte"
  if vid != vid.strip():
    return "it starts or ends with white space"
  return None


def _parse_errors(config, flag) -> list[str]:
  """The parse stage's windowing, batching and input fields."""
  out = []
  window, stride = config.get("window"), config.get("stride")
  if not _is_int(window) or window < 1:
    out.append(f"{flag('window')}={window!r}: must be an integer >= 1 (the"
               f" parser's training length, e.g. {flag('window')}=10).")
  elif not _is_int(stride) or not 0 <= stride <= window:
    out.append(f"{flag('stride')}={stride!r}: must be an integer in [0,"
               f" {window}] (0: half a window; > window would skip"
               f" segments), e.g. {flag('stride')}=0.")
  vps = config.get("videos_per_step")
  if not _is_int(vps) or vps < 1:
    out.append(f"{flag('videos_per_step')}={vps!r}: must be an integer >= 1"
               f" (videos loaded at a time, e.g. {flag('videos_per_step')}"
               "=256).")
  conf = config.get("min_confidence", 0.0)
  if not isinstance(conf, (int, float)) or not 0 <= conf <= 1:
    out.append(f"{flag('min_confidence')}={conf!r}: must be in [0, 1].")
  try:
    parse_ids(config.get("ids"))
  except ConfigError as e:
    out.append(str(e))
  return out


def _example(name: str) -> str:
  return "1" if "every" in name or "epochs" in name else "8"


def cluster_detected() -> bool | None:
  """Whether jax.distributed.initialize() can find its coordinator here
  (a SLURM / Open MPI / Kubernetes / Cloud TPU job); None if unknown."""
  try:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top
    envs = clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
    return any(not env.opt_in_only_method and env.is_env_present()
               for env in envs)
  except Exception:  # pylint: disable=broad-except
    return None  # a JAX without this (private) API: initialize() decides


def _distributed_errors() -> list[str]:
  if cluster_detected() is False:
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
    why = ("JAX_COORDINATOR_ADDRESS is set but no job environment gives the"
           " process count and id" if coordinator else
           "no SLURM, Open MPI, Kubernetes or Cloud TPU job environment was"
           " found to give the coordinator address, process count and id")
    return [f"--config.distributed=True: {why}. Launch every process under"
            " such a job manager (e.g. srun), or use --config.distributed="
            "False for a single-host run (it uses every local device)."]
  return []


def check(config: config_dict.ConfigDict) -> None:
  """Raises ConfigError listing every invalid field of `config`.

  The demo's sub-configs (config.stage1, ...) are checked as the stages
  they are.
  """
  errors = _errors(config)
  if config.get("stage") == "demo":
    for sub in DEMO_STAGES:
      if isinstance(config.get(sub), config_dict.ConfigDict):
        errors.extend(_errors(config[sub], prefix=f"{sub}."))
  if errors:
    raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


# Per stage: input paths that must exist before a workdir is claimed
# (field -> what it is, for the message). None = not set, not checked.
INPUT_DIRS = {
    "pretrain_generator": {"data.unav_root": "the UnAV-100 root"},
    "generate_pseudo_labels": {
        "generator_workdir": "the stage-1 workdir",
        "data.llp_root": "the LLP root", "data.unav_root": "the UnAV root"},
    "train_parser": {"pseudo_labels_dir": "the stage-2 output",
                     "data.llp_root": "the LLP root"},
    "evaluate": {"run_workdir": "the stage-2/3 workdir",
                 "predictions_dir": "the folder of eval_*.csv",
                 "data.llp_root": "the LLP root"},
    "parse": {"parser_workdir": "the stage-3 workdir",
              "features_root": "the dataset root of the features",
              "videos": "the folder of raw videos",
              "annotations_dir": "the LLP CSV folder"},
    "compare": {"a": "run a's workdir", "b": "run b's workdir"},
}
# Per stage: groups of fields of which exactly one must be set.
ONE_OF = {"evaluate": (("run_workdir", "predictions_dir"),),
          "parse": (("features_root", "videos"),)}
_OPTIONAL_DIRS = {"data.llp_annotations_dir": "the LLP CSV folder"}


def check_inputs(config: config_dict.ConfigDict) -> None:
  """Raises ConfigError unless every input folder the config names exists
  (and, for raw videos, PyAV imports): run after `check`, before the
  workdir is claimed, so a typo never binds a workdir to a run that could
  not start."""
  stage = config.get("stage")
  fields = {**INPUT_DIRS.get(stage, {}),
            **(_OPTIONAL_DIRS if stage in INPUT_DIRS else {})}
  errors = []
  for one_of in ONE_OF.get(stage, ()):
    if sum(bool(_get(config, name)) for name in one_of) != 1:
      flags = " and ".join(f"--config.{n} ({fields[n]})" for n in one_of)
      errors.append(f"set exactly one of {flags}.")
  for name, what in fields.items():
    value = _get(config, name)
    if value and not os.path.isdir(os.path.expanduser(str(value))):
      errors.append(f"--config.{name}={value!r}: no such directory ({what}).")
  if stage == "parse" and config.get("videos") and not _importable("av"):
    errors.append("--config.videos: decoding raw videos needs PyAV and the"
                  " feature exporters: pip install 'ear-jax[export]'.")
  if errors:
    raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def _importable(module: str) -> bool:
  try:
    importlib.import_module(module)
  except ImportError:
    return False
  return True


def check_devices(config: config_dict.ConfigDict, num_devices: int) -> None:
  """Batch sizes that are split over the devices must divide by their count
  (checked once jax.distributed is up, before any data is loaded)."""
  if config.get("stage") == "export_features":
    return
  configs = [("", config)]
  if config.get("stage") == "demo":
    configs += [(f"{s}.", config[s]) for s in DEMO_STAGES if s in config]
  errors = []
  for prefix, c in configs:
    for name in ("batch_size", "eval_batch_size"):
      value = c.get(name)
      if _is_int(value) and value % num_devices:
        good = max(num_devices, value // num_devices * num_devices)
        errors.append(
            f"--config.{prefix}{name}={value} is not divisible by the"
            f" {num_devices} devices; use a multiple of {num_devices}"
            f" (e.g. --config.{prefix}{name}={good}).")
  if errors:
    raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
