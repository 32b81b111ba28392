"""A workdir belongs to one run: an exclusive lock and a bound config.json.

`claim(config)` is what launch.py wraps every stage in: it refuses a workdir
of another stage or one made with a config that changes results (before
anything is written), takes the workdir's lock (released on any exit; a
lock left by a dead process is taken over) and only then writes config.json.
Imports no jax, so a lock holder can be a bare Python process.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from typing import Any, Iterator, Mapping

from absl import logging

from ear_jax import jsonio

CONFIG = "config.json"
LOCK = ".lock"
# The traceback of the last error inside a stage (ear_jax/cli.py).
ERROR_LOG = "error.log"
# Fields that cannot change a result: never compared.
IGNORED = ("workdir", "required", "progress", "log_every_steps",
           "override_config", "data.num_load_workers", "tensorboard",
           "compilation_cache_dir", "compilation_cache_min_compile_secs")
# Fields that change no number if they point at the same data / run (or
# only change how the work is split): accepted with override_config=True.
HARMLESS = ("data.llp_root", "data.llp_annotations_dir", "data.unav_root",
            "data.unav_annotations", "generator_workdir",
            "pseudo_labels_dir", "run_workdir", "parser_workdir",
            "features_root", "eval_batch_size", "checkpoint_every_epochs",
            "distributed")
# Per stage: fields whose outputs are kept apart, so they may differ freely
# ("*": only the stage is bound; the demo guards each of its stages).
FREE = {"evaluate": ("split", "checkpoint", "strict", "eval_batch_size"),
        "demo": "*"}
# Files a run leaves; a workdir holding one of them but no config.json is
# not an empty workdir.
_MISSING = "<not recorded>"
_RUN_FILES = ("checkpoints", "best", "metrics.jsonl", "LLP_Dataset", "eval")


class WorkdirError(RuntimeError):
  """The workdir is in use or belongs to an incompatible run."""


# ------------------------------------------------------------------- config
def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_dict(config) -> dict:
  """The config as config.json records it (tuples as lists)."""
  return json.loads(config.to_json_best_effort())


def read_recorded(workdir: str) -> dict | None:
  """The workdir's config.json, or None; errors name the file."""
  path = os.path.join(workdir, CONFIG)
  if not os.path.isfile(path):
    return None
  try:
    out = jsonio.read_json(path)
  except (OSError, ValueError) as e:
    raise WorkdirError(
        f"{path} is unreadable ({e}); it records the config this workdir was"
        " made with. Restore it, or use a new --config.workdir.") from e
  if not isinstance(out, dict) or "stage" not in out:
    raise WorkdirError(f"{path} is not an ear-jax config (no 'stage' field);"
                       " use a new --config.workdir.")
  return out


def differences(recorded: Mapping, requested: Mapping,
                stage: str) -> dict[str, tuple[Any, Any]]:
  """{field: (recorded, requested)} of the fields that differ and matter."""
  free = FREE.get(stage, ())
  if free == "*":
    keys = ("stage",)
  else:
    a, b = _flatten(recorded), _flatten(requested)
    skip = set(IGNORED) | set(free)
    keys = sorted(k for k in set(a) | set(b) if k not in skip)
    recorded, requested = a, b
  return {k: (recorded.get(k, _MISSING), requested.get(k, _MISSING))
          for k in keys
          if recorded.get(k, _MISSING) != requested.get(k, _MISSING)}


def compare(config) -> tuple[dict, dict]:
  """(changing, harmless): the fields in which config.workdir's recorded
  config differs from `config`, {field: (recorded, requested)}; both empty
  for a new workdir. Raises WorkdirError for a workdir of another stage or
  an unreadable one. Reads only."""
  workdir = config.workdir
  recorded = read_recorded(workdir)
  if recorded is None:
    present = [n for n in _RUN_FILES if os.path.exists(os.path.join(workdir,
                                                                     n))]
    if present and config.stage != "demo":
      raise WorkdirError(
          f"{workdir} holds {', '.join(present)} but no {CONFIG}, so the"
          " config that made them is unknown; use a new --config.workdir (or"
          " restore its config.json).")
    return {}, {}
  if recorded["stage"] != config.stage:
    raise WorkdirError(
        f"{workdir} is the workdir of a {recorded['stage']!r} run"
        f" ({os.path.join(workdir, CONFIG)}); this is a {config.stage!r} run."
        " Use another --config.workdir.")
  diff = differences(recorded, config_dict(config), config.stage)
  if diff and never_started(workdir):
    # The recorded run failed before writing anything (a bad value or
    # input path), so no result depends on that config.
    logging.warning(
        "%s: its config.json records a %r run that failed before it wrote"
        " anything (%s); starting it with this config instead (%s).",
        workdir, config.stage, os.path.join(workdir, ERROR_LOG),
        ", ".join(sorted(diff)))
    return {}, {}
  # A field added (or removed) by another ear-jax version than the run's
  # changes none of its numbers by itself.
  harmless = {k: v for k, v in diff.items()
              if k in HARMLESS or _MISSING in v}
  changing = {k: v for k, v in diff.items() if k not in harmless}
  return changing, harmless


def never_started(workdir: str) -> bool:
  """Whether `workdir` holds a run that failed before it wrote any result:
  nothing but config.json and the error.log of that failure (and the
  lock). A workdir with only config.json may belong to a run still loading
  its data, or killed doing so: that one stays guarded."""
  try:
    names = set(os.listdir(workdir))
  except OSError:
    return False
  return ERROR_LOG in names and CONFIG in names and all(
      n in (CONFIG, LOCK, ERROR_LOG) or (n.startswith(f".{CONFIG}.")
                                         and n.endswith(".tmp"))
      for n in names)


def check_config(config) -> dict[str, tuple[Any, Any]]:
  """Raises WorkdirError if config.workdir holds a run this config cannot
  continue; returns the harmless differences it accepts (override_config).

  Reads only: nothing is written here.
  """
  workdir = config.workdir
  changing, harmless = compare(config)
  diff = {**changing, **harmless}
  if not diff:
    return {}
  lines = "\n".join(f"  {k}: recorded {a!r}, requested {b!r}"
                    for k, (a, b) in sorted(diff.items()))
  head = (f"{workdir} holds a {config.stage!r} run made with another config"
          f" ({os.path.join(workdir, CONFIG)}):\n{lines}\n")
  if changing:
    raise WorkdirError(
        head + f"{', '.join(sorted(changing))} change the results, so this"
        " run cannot continue that one. Use a new --config.workdir (or"
        f" delete {workdir} to start over).")
  if not config.get("override_config", False):
    raise WorkdirError(
        head + "These change no result if they point at the same data and"
        " runs (moved), only split the work differently or are fields of"
        " another ear-jax version. Re-run with"
        " --config.override_config=True to accept them, or use a new"
        " --config.workdir.")
  logging.warning("%s: accepting changed %s (override_config=True).",
                  workdir, ", ".join(sorted(diff)))
  return diff


def write_config(config) -> str:
  """Writes <workdir>/config.json atomically (process 0 only)."""
  path = os.path.join(config.workdir, CONFIG)
  jsonio.write_json_atomic(path, config_dict(config))
  return path


# --------------------------------------------------------------------- lock
def _holder_info() -> dict:
  return dict(pid=os.getpid(), host=socket.gethostname(),
              started=datetime.datetime.now().isoformat(timespec="seconds"),
              command=" ".join(sys.argv)[:300])


def _read_info(path: str) -> dict:
  try:
    out = jsonio.read_json(path)
    return out if isinstance(out, dict) else {}
  except (OSError, ValueError):
    return {}


def _describe(info: Mapping) -> str:
  if not info:
    return "an unknown process"
  return (f"pid {info.get('pid')} on host {info.get('host')} (started"
          f" {info.get('started')}: {info.get('command')})")


def _alive(info: Mapping) -> bool:
  """Whether the process named in a lock file may still run."""
  if info.get("host") != socket.gethostname():
    return True  # cannot tell: assume it does
  try:
    os.kill(int(info["pid"]), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, KeyError, TypeError, ValueError):
    return True
  return True


def _busy(workdir: str, path: str, info: Mapping) -> WorkdirError:
  return WorkdirError(
      f"{workdir} is in use by {_describe(info)}: two runs in one workdir"
      " would mix their checkpoints and metrics. Wait for it to finish (or"
      " stop it), or use another --config.workdir. If that process is gone"
      f" and this persists, delete {path}.")


def _write_info(fd: int, info: Mapping) -> None:
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
  os.fsync(fd)


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[str]:
  """Holds <workdir>/.lock exclusively; raises WorkdirError naming the
  holder if another live process has it.

  An flock on the file: the kernel releases it when the holder exits in any
  way, so a lock left by a killed run is stale and is taken over (saying
  so). File systems without flock fall back to the pid in the file.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK)
  while True:
    # O_NOFOLLOW: a link planted at .lock is refused, not truncated.
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
      if e.errno != errno.ELOOP:
        raise
      raise WorkdirError(
          f"{path} is a symbolic link; the lock file must be a plain file"
          f" (writing through the link would overwrite its target). Remove"
          f" {path}, or use another --config.workdir.") from e
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      os.close(fd)
      raise _busy(workdir, path, _read_info(path)) from e
    except OSError as e:
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
        os.close(fd)
        raise
      previous = _read_info(path)
      if previous and _alive(previous):
        os.close(fd)
        raise _busy(workdir, path, previous) from e
    # The holder before us may have removed the file meanwhile: then we
    # locked an orphan inode, and must lock the new file instead.
    try:
      same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)
  previous = _read_info(path)
  if previous:
    logging.warning("%s: took over the stale lock of %s (that process is"
                    " gone).", workdir, _describe(previous))
  try:
    _write_info(fd, _holder_info())
    yield path
  finally:
    try:
      os.remove(path)
    except FileNotFoundError:
      pass
    os.close(fd)  # releases the flock


# --------------------------------------------------------------------- both
@contextlib.contextmanager
def claim(config, primary: bool = True) -> Iterator[None]:
  """Binds config.workdir to this run for the duration of the block.

  Checks the recorded config (read-only), takes the lock, checks again
  (another run may have written it meanwhile), then writes config.json.
  `primary`: this is process 0 (the one that locks and writes). A stage
  whose workdir is optional (compare) and unset claims nothing.
  """
  if config.get("workdir") is None and "workdir" not in config.get(
      "required", ("workdir",)):
    yield
    return
  check_config(config)
  if not primary:
    yield
    return
  with lock(config.workdir):
    check_config(config)
    write_config(config)
    yield
