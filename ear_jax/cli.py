r"""The `ear-jax` command (`python launch.py` is the same): runs one stage.

  ear-jax --config=stage1 --workdir=/runs/s1 --config.data.unav_root=/data/UnAV
  ear-jax --config=demo --workdir=/tmp/demo
  ear-jax --help                          # every config, what it needs
  ear-jax --config=stage3 --print_config  # a config's fields and defaults

`--config` takes a config by name (`stage3`, `stage3:tiny`, from any folder)
or a file (`configs/stage3.py:tiny`); `--workdir=DIR` is
`--config.workdir=DIR`. A `--config.<field>` that names no field stops with
one line naming the closest field (exit code 2), before anything runs.
Re-running the same command resumes the run in its workdir. Before the stage
runs, `setup_runtime` applies the process-wide JAX settings of the config
(matmul precision, persistent compilation cache), so every stage honours them
and the stage runners need not.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import traceback

from absl import app
from absl import flags
from absl import logging
import jax
from jax.experimental.compilation_cache import compilation_cache
from ml_collections import config_flags

from ear_jax import config_lib
from ear_jax import jsonio
from ear_jax import stages as stages_lib
from ear_jax import validate as validate_lib
from ear_jax import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Stage config by name (stage3, stage3:tiny; `ear-jax"
    " --help` lists them) or file (configs/stage3.py:tiny).",
    lock_config=True,
)
_VERBOSE = flags.DEFINE_boolean(
    "verbose", False, "On an error inside a stage, also print its traceback"
    " (always written to <workdir>/error.log).")
_PRINT_CONFIG = flags.DEFINE_bool(
    "print_config", False, "Print the config's fields and values (defaults"
    " plus --config.* flags) and exit without running.")

# config.stage -> "module:function", imported only when chosen (so torch is
# only imported by the feature exporters).
STAGES = {
    **{k: f"{v}:run" for k, v in stages_lib.RUNNERS.items()},
    "import_torch": "ear_jax.torch_import:run",
    "export_features": "feature_export.driver:run",
}

# config.matmul_precision -> jax_default_matmul_precision. On CPU all are
# float32. On GPU, "default" lets float32 matmuls use TF32 tensor cores (like
# PyTorch with TF32 on); "high" and "highest" are full float32. On TPU,
# "default" is one bfloat16 pass, "high" three (about float32 accuracy),
# "highest" six (float32). The others name the algorithm directly.
MATMUL_PRECISIONS = validate_lib.MATMUL_PRECISIONS


def default_cache_dir() -> str:
  """$XDG_CACHE_HOME/ear_jax/xla, or ~/.cache/ear_jax/xla."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(root, "ear_jax", "xla")


def resolve_cache_dir(value: str | None) -> str | None:
  """config.compilation_cache_dir -> a folder, or None (cache off).

  "auto": JAX_COMPILATION_CACHE_DIR if set, else default_cache_dir().
  "none" (or empty): no persistent cache. Anything else is a path (~ ok).
  """
  if value is None or str(value).strip().lower() in ("", "none"):
    return None
  if value == "auto":
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_cache_dir()
  return os.path.expanduser(str(value))


def setup_runtime(config) -> dict:
  """Applies config.matmul_precision and config.compilation_cache_dir.

  Process-wide JAX settings, set once before the stage runs. Returns what
  was set, for the log.
  """
  precision = config.get("matmul_precision", "default")
  if precision not in MATMUL_PRECISIONS:
    raise ValueError(
        f"config.matmul_precision={precision!r}; expected one of"
        f" {MATMUL_PRECISIONS} (see docs/USAGE.md, 'Conventions')."
    )
  jax.config.update("jax_default_matmul_precision", precision)
  cache = resolve_cache_dir(config.get("compilation_cache_dir", "auto"))
  if cache is not None:
    try:
      os.makedirs(cache, exist_ok=True)
    except OSError as e:
      raise ValueError(
          f"config.compilation_cache_dir: cannot create {cache!r} ({e}); set"
          " --config.compilation_cache_dir=PATH to a writable folder, or"
          " =none to turn the persistent compilation cache off."
      ) from e
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(config.get("compilation_cache_min_compile_secs", 1.0)),
    )
    # Takes effect even if this process compiled something already.
    compilation_cache.reset_cache()
  return dict(matmul_precision=precision, compilation_cache_dir=cache)


# ----------------------------------------------------------------------------
# Flags and --help (before absl parses them).


def help_text() -> str:
  """`ear-jax --help`: usage, every config with what it needs."""
  lines = [
      "ear-jax: one stage of EAR (weakly supervised audio-visual video"
      " parsing).",
      "",
      "usage: ear-jax --config=NAME[:VARIANT] [--workdir=DIR]",
      "               [--config.FIELD=VALUE ...]",
      "       ear-jax --config=NAME --print_config  (fields and defaults)",
      "",
      "NAME: a config below (from any folder) or a config file, e.g.",
      "configs/stage3.py:tiny. --workdir=DIR is --config.workdir=DIR.",
      "Re-running a command resumes the run in its workdir.",
      "",
      "configs:",
  ]
  for name in config_lib.config_names():
    try:
      config, doc = config_lib.load_config(name)
      kinds = config_lib.variants(name)
    except config_lib.ConfigError as e:
      lines += [f"  {name:<17} (cannot be loaded: {e})"]
      continue
    first = " ".join(doc.strip().split("\n\n")[0].split())
    first = first.split(". ")[0].rstrip(".:")
    lines += textwrap.wrap(first, 78, initial_indent=f"  {name:<17} ",
                           subsequent_indent=" " * 20)
    required = " ".join("--workdir" if r == "workdir" else f"--config.{r}"
                        for r in config.get("required", ()))
    lines += textwrap.wrap(
        f"variants: {', '.join(kinds) or '-'}; required: {required or '-'}",
        78, initial_indent=" " * 20, subsequent_indent=" " * 22)
  lines += [
      "",
      "examples:",
      "  ear-jax --config=demo:tiny --workdir=/tmp/demo",
      "  ear-jax --config=stage3 --workdir=/runs/s3 \\",
      "      --config.pseudo_labels_dir=/runs/s2 \\",
      "      --config.data.llp_root=/data/LLP --config.model.name=han",
      "",
      "ear-jax --helpfull lists every flag (JAX and absl flags included).",
  ]
  return "\n".join(lines)


_GIVEN = {}  # the --config value as typed (for --print_config's title)


def _config_flag(argv: list[str]) -> tuple[int, str] | None:
  """(index, value) of the --config flag in argv (the last one), or None."""
  found = None
  for i, a in enumerate(argv):
    if a == "--":
      break
    name, eq, value = a.lstrip("-").partition("=")
    if a.startswith("-") and name == "config":
      if eq:
        found = (i, value)
      elif i + 1 < len(argv):
        found = (i + 1, argv[i + 1])
  return found


def prepare_argv(argv: list[str]) -> list[str]:
  """argv for absl: the config resolved by name, --workdir spelled out.

  Checks every --config.<field> flag against the config's fields first, so
  a typo is one line (config_lib.ConfigError) instead of a traceback.
  """
  argv = list(argv)
  for i, a in enumerate(argv):
    if a == "--":
      break
    if a == "--workdir" or a.startswith("--workdir="):
      argv[i] = "--config.workdir" + a[len("--workdir"):]
  found = _config_flag(argv)
  if found is None:
    return argv
  i, value = found
  _GIVEN["config"] = value
  resolved = config_lib.resolve_config(value)
  argv[i] = (argv[i][:len(argv[i]) - len(value)] + resolved
             if argv[i].endswith(value) else resolved)
  config, _ = config_lib.load_config(value)
  name = value.partition(":")[0]
  for a in argv[1:]:
    if a == "--":
      break
    for prefix in ("--config.", "-config.", "--noconfig.", "-noconfig."):
      if a.startswith(prefix):
        dotted = a[len(prefix):].partition("=")[0]
        config_lib.check_override(config, dotted, name)
  return argv


def wants_help(argv: list[str]) -> bool:
  return any(a in ("-h", "--help", "-help", "-?") for a in argv[1:])


# ----------------------------------------------------------------------------
# GPU memory when torch and JAX share a process.


def share_gpu_memory(config, environ=os.environ) -> bool:
  """Turns JAX's GPU memory preallocation off for stages that run torch.

  A raw-video parse and the feature exporters run torch (CLIP/CLAP) and JAX
  in one process; JAX would otherwise take 75% of the GPU memory before
  torch loads its model. Sets XLA_PYTHON_CLIENT_PREALLOCATE=false unless
  the user set it; must run before JAX starts its backend. True if set.
  """
  runs_torch = (config.stage == "export_features"
                or (config.stage == "parse" and config.get("videos")))
  if not runs_torch or "XLA_PYTHON_CLIENT_PREALLOCATE" in environ:
    return False
  environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  return True


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError(
        "--config=NAME is required (e.g. --config=demo); `ear-jax --help`"
        " lists the configs.")
  if _PRINT_CONFIG.value:
    print(config_lib.describe(config, _GIVEN.get("config", "config")))
    return
  share_gpu_memory(config)
  if config.stage not in STAGES:
    raise app.UsageError(
        f"config.stage={config.stage!r}; expected one of {sorted(STAGES)}"
    )
  try:
    config_lib.check_required(config)
    validate_lib.check(config)  # before any data is loaded
    validate_lib.check_inputs(config)  # before the workdir is claimed
    runtime = setup_runtime(config)
  except ValueError as e:
    raise app.UsageError(str(e), exitcode=2) from e
  if config.get("distributed", False):
    try:
      jax.distributed.initialize()
    except (ValueError, RuntimeError) as e:
      raise app.UsageError(
          f"--config.distributed=True: jax.distributed.initialize() failed"
          f" ({e}). Launch every process under a job manager (SLURM, Open"
          " MPI, Kubernetes, Cloud TPU), or use --config.distributed=False."
      ) from e
  try:
    validate_lib.check_devices(config, jax.device_count())
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  logging.info("stage %s, workdir %s, %s", config.stage, config.workdir,
               runtime)
  module, fn = STAGES[config.stage].split(":")
  run_stage = getattr(importlib.import_module(module), fn)
  run_claimed(run_stage, config, verbose=_VERBOSE.value)


def run_claimed(run_stage, config, verbose: bool = False) -> None:
  """Runs the stage inside its workdir claim; any error ends the command
  with one `error:` line instead of a traceback.

  The claim refuses a busy workdir or one of an incompatible run before
  writing. An exception raised inside the stage is reported by its message
  (exit code 2 for a config value found bad there, else 1); its traceback
  goes to <workdir>/error.log and, with --verbose, to stderr. A workdir
  left with only config.json and error.log never started: a re-run may
  change any value (workdir.never_started).
  Ctrl-C still ends the command as Python does.
  """
  primary = jax.process_index() == 0
  # compare has an optional workdir: without one there is no error.log.
  log = (os.path.join(config.workdir, workdir_lib.ERROR_LOG)
         if config.get("workdir") is not None else None)
  try:
    with workdir_lib.claim(config, primary=primary):
      if primary and log is not None and os.path.lexists(log):
        os.remove(log)  # an earlier failure's
      run_stage(config)
  except workdir_lib.WorkdirError as e:
    raise SystemExit(f"error: {e}") from e
  except Exception as e:  # pylint: disable=broad-except
    trace = traceback.format_exc()
    if verbose:
      sys.stderr.write(trace)
    where = "re-run with --verbose for the traceback"
    if primary and log is not None and os.path.isdir(config.workdir):
      try:
        jsonio.write_text_atomic(log, trace)
        where = f"traceback in {log}"
      except OSError:
        pass
    message = str(e).strip() or type(e).__name__
    sys.stderr.write(f"error: {message} ({type(e).__name__}; {where})\n")
    sys.stderr.flush()
    raise SystemExit(2 if isinstance(e, validate_lib.ConfigError) else 1
                     ) from None


def run():
  """Console-script entry point (`ear-jax`)."""
  jax.config.parse_flags_with_absl()  # --jax_platforms, --jax_debug_nans, ...
  if wants_help(sys.argv):
    print(help_text())
    sys.exit(0)
  if _config_flag(sys.argv) is None and not any(
      a.startswith(("--helpfull", "--helpshort", "--helpxml"))
      for a in sys.argv):
    print(help_text(), file=sys.stderr)
    print("\nerror: --config=NAME is required (e.g. --config=demo).",
          file=sys.stderr)
    sys.exit(2)
  try:
    argv = prepare_argv(sys.argv)
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  # ml_collections reads sys.argv itself to define the --config.* flags.
  sys.argv[:] = argv
  app.run(main, argv=argv)


if __name__ == "__main__":
  run()
