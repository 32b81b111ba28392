r"""N stage-3 seeds in one program against N single-seed runs, wall time.

  python benchmarks/seeds_bench.py --workdir=/tmp/seeds_bench [--seeds=4] \
      [--variant=small] [--model=ear]

Prepares the demo's synthetic data and its stage-1/2 pseudo-labels (the
demo's sub-configs; a re-run reuses them), then trains stage 3
(`configs/stage3.py:<variant>`) two ways, each as a user would run it from
the shell (`python launch.py ...`, one process per command), every arm with
its own fresh persistent compilation cache:
  one     one process with --config.num_seeds=N (seeds seed..seed+N-1);
  serial  N processes one after another, --config.seed=seed+k, sharing one
          cache (the default `auto` cache of a user: runs 2..N load the
          first run's programs instead of compiling).
Per process: wall seconds (interpreter start to exit), JAX tracing and XLA
compile seconds (summed from JAX's compile log), and the test Avg. Prints
a table and one JSON line. The figure depends on the machine's load:
compare the two arms of one run only.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=wrong-import-position
from ear_jax import jsonio
from ear_jax import stages as stages_lib
from ear_jax.configs import demo as demo_config
from ear_jax.stages import demo
# pylint: enable=wrong-import-position

_COMPILE = re.compile(r"Finished (?:XLA compilation|tracing) of .*? in"
                      r" ([0-9.]+) sec")


def _pseudo_labels(workdir: str, variant: str) -> tuple[str, str]:
  """(llp_root, stage-2 workdir): the demo's data and stages 1-2."""
  config = demo_config.get_config("tiny" if variant == "tiny" else None)
  config.workdir = workdir
  config.progress = False
  llp_root, unav_root = demo.prepare_data(config)
  for key, _, cfg, done in demo.stage_configs(config, llp_root, unav_root):
    if key not in ("stage1", "stage2"):
      continue
    if not os.path.exists(os.path.join(cfg.workdir, done)):
      print(f"== {key} -> {cfg.workdir}", flush=True)
      stages_lib.get_runner(cfg.stage)(cfg)
  return llp_root, os.path.join(workdir, "stage2")


def _launch(args: list[str], cache: str, log: str) -> dict:
  env = dict(os.environ, JAX_LOG_COMPILES="1", PYTHONPATH=REPO)
  t0 = time.perf_counter()
  with open(log, "w") as f:
    r = subprocess.run([sys.executable, os.path.join(REPO, "launch.py"),
                        *args, f"--config.compilation_cache_dir={cache}",
                        "--config.progress=False"],
                       cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env,
                       check=False)
  wall = time.perf_counter() - t0
  with open(log) as f:
    text = f.read()
  if r.returncode:
    raise SystemExit(f"{' '.join(args)} failed (exit {r.returncode}); see"
                     f" {log}:\n{text[-3000:]}")
  compile_s = sum(float(m) for m in _COMPILE.findall(text))
  return dict(wall_s=round(wall, 1), compile_s=round(compile_s, 1))


def _test_avg(workdir: str) -> list[float]:
  path = os.path.join(workdir, "eval", "test_seeds.json")
  if os.path.isfile(path):
    per_seed = jsonio.read_json(path)["per_seed"]
    keys = [k for k in per_seed if k != "avg"]
    n = len(per_seed[keys[0]])
    return [round(sum(per_seed[k][i] for k in keys) / len(keys), 2)
            for i in range(n)]
  return [round(jsonio.read_json(os.path.join(workdir, "eval",
                                              "test.json"))["avg"], 2)]


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--seeds", type=int, default=4)
  ap.add_argument("--variant", default="small", choices=("tiny", "small"))
  ap.add_argument("--model", default="ear", choices=("ear", "han"))
  ap.add_argument("--seed", type=int, default=20000)
  args = ap.parse_args()
  if args.seeds < 1:
    ap.error("--seeds must be >= 1")
  llp_root, s2 = _pseudo_labels(args.workdir, args.variant)
  base = [f"--config=configs/stage3.py:{args.variant}",
          f"--config.pseudo_labels_dir={s2}",
          f"--config.data.llp_root={llp_root}",
          f"--config.model.name={args.model}"]
  runs = os.path.join(args.workdir, f"seeds_bench_{time.strftime('%H%M%S')}")
  os.makedirs(runs)
  rows = {}
  cache = tempfile.mkdtemp(prefix="cache_one_", dir=runs)
  w = os.path.join(runs, "one")
  print(f"== one process, {args.seeds} seeds -> {w}", flush=True)
  rows["one"] = [dict(_launch(base + [f"--config.workdir={w}",
                                      f"--config.seed={args.seed}",
                                      f"--config.num_seeds={args.seeds}"],
                              cache, w + ".log"), test_avg=_test_avg(w))]
  cache = tempfile.mkdtemp(prefix="cache_serial_", dir=runs)
  rows["serial"] = []
  for k in range(args.seeds):
    w = os.path.join(runs, f"serial_{k}")
    print(f"== process {k + 1}/{args.seeds}, seed {args.seed + k} -> {w}",
          flush=True)
    rows["serial"].append(dict(
        _launch(base + [f"--config.workdir={w}",
                        f"--config.seed={args.seed + k}"], cache, w + ".log"),
        test_avg=_test_avg(w)))
  total = {arm: dict(wall_s=round(sum(r["wall_s"] for r in rs), 1),
                     compile_s=round(sum(r["compile_s"] for r in rs), 1))
           for arm, rs in rows.items()}
  print(f"\n{'arm':<8} {'processes':>9} {'wall s':>8} {'compile s':>9}"
        "  test Avg per seed")
  for arm, rs in rows.items():
    avgs = [a for r in rs for a in r["test_avg"]]
    print(f"{arm:<8} {len(rs):>9} {total[arm]['wall_s']:>8.1f}"
          f" {total[arm]['compile_s']:>9.1f}  {avgs}")
  speedup = total["serial"]["wall_s"] / total["one"]["wall_s"]
  print(f"one process is {speedup:.2f}x faster than {args.seeds} serial runs")
  print(json.dumps(dict(bench="seeds_stage3", variant=args.variant,
                        model=args.model, seeds=args.seeds, rows=rows,
                        total=total, speedup=round(speedup, 2))))


if __name__ == "__main__":
  main()
