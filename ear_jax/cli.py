r"""The `ear-jax` command (`python launch.py` is the same): runs one stage.

  ear-jax --config=configs/stage1.py --config.workdir=/runs/s1 \
      --config.data.unav_root=/data/UnAV
  ear-jax --config=configs/demo.py --config.workdir=/tmp/demo

Re-running the same command resumes the run in its workdir. Before the stage
runs, `setup_runtime` applies the process-wide JAX settings of the config
(matmul precision, persistent compilation cache), so every stage honours them
and the stage runners need not.
"""

from __future__ import annotations

import importlib
import os
import sys
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
    "config", None, "Stage config file, e.g. configs/stage1.py:tiny.",
    lock_config=True,
)
_VERBOSE = flags.DEFINE_boolean(
    "verbose", False, "On an error inside a stage, also print its traceback"
    " (always written to <workdir>/error.log).")

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
        f" {MATMUL_PRECISIONS} (see README, 'Matmul precision')."
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/<stage>.py is required.")
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
  app.run(main)


if __name__ == "__main__":
  run()
