r"""EAR vs HAN vs the label baselines on synthetic data, over stage-3 seeds.

  python benchmarks/parser_comparison.py --workdir=/tmp/cmp [--seeds=3]

Runs the demo (synthetic data, stage 1, stage 2, EAR and HAN; a re-run
resumes), then trains EAR and HAN again with further stage-3 seeds on the
same pseudo-labels, and prints the test metrics in the paper's layout: the
baselines (weak labels in every segment, zero-shot CLIP/CLAP filtered by the
weak labels, the stage-2 pseudo-labels) once, each parser as the mean over
seeds, then Seg/Evt Type@AV as mean +- std and one JSON line. Extra demo
overrides: `--demo_arg=tiny` (a quick check), `--test_clips=N` and
`--synthetic_seed=S` (another synthetic world).
"""

import argparse
import json
import os

import numpy as np

from ear_jax.configs import demo as demo_config
from ear_jax import metrics as metrics_lib
from ear_jax import stages as stages_lib
from ear_jax.stages import demo

PARSERS = {"EAR": "stage3", "HAN": "stage3_han"}


def _load(path: str, key=None) -> dict:
  with open(path) as f:
    scores = json.load(f)
  scores = scores[key] if key else scores
  return {k: scores[k] for k in metrics_lib.AGGREGATE_KEYS}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--demo_arg", default=None, help="e.g. tiny")
  ap.add_argument("--test_clips", type=int, default=300)
  ap.add_argument("--synthetic_seed", type=int, default=0,
                  help="another synthetic world (the demo's is 0)")
  args = ap.parse_args()
  config = demo_config.get_config(args.demo_arg)
  config.workdir = args.workdir
  config.synthetic.seed = args.synthetic_seed
  n_train, n_val, _ = config.synthetic.num_llp
  config.synthetic.num_llp = (n_train, n_val, args.test_clips)
  config.progress = False
  demo.run(config)

  stages = {key: cfg for key, _, cfg, _ in demo.stage_configs(
      config, *demo.prepare_data(config))}
  runs = {name: [os.path.join(stages[key].workdir, "eval", "test.json")]
          for name, key in PARSERS.items()}
  for k in range(1, args.seeds):
    for name, key in PARSERS.items():
      cfg = stages[key]
      cfg.workdir = os.path.join(args.workdir, f"{key}_seed{k}")
      cfg.seed = config[key].seed + 1000 * k
      out = os.path.join(cfg.workdir, "eval", "test.json")
      if not os.path.exists(out):
        print(f"== {name}, seed {cfg.seed} -> {cfg.workdir}", flush=True)
        stages_lib.get_runner(cfg.stage)(cfg)
      runs[name].append(out)

  rows = {}
  for name, (path, key) in demo.ROWS.items():
    if name not in PARSERS:
      rows[name] = _load(os.path.join(args.workdir,
                                      path.format(split="test")), key)
  spread = {}
  for name, paths in runs.items():
    scores = [_load(p) for p in paths]
    rows[f"{name} (mean of {len(paths)})"] = {
        k: float(np.mean([s[k] for s in scores]))
        for k in metrics_lib.AGGREGATE_KEYS}
    spread[name] = {k: (float(np.mean([s[k] for s in scores])),
                        float(np.std([s[k] for s in scores])))
                    for k in ("seg_type", "evt_type")}
  print(metrics_lib.format_table(rows))
  for name, s in spread.items():
    print(f"{name}: Seg Type {s['seg_type'][0]:.1f} +- {s['seg_type'][1]:.1f}"
          f", Evt Type {s['evt_type'][0]:.1f} +- {s['evt_type'][1]:.1f}"
          f" over {len(runs[name])} seeds")
  print(json.dumps({
      "bench": "parser_comparison_synthetic_test", "seeds": args.seeds,
      **{name: {k: round(v, 2) for k, v in metrics_lib.with_avg(s).items()}
         for name, s in rows.items()}}))


if __name__ == "__main__":
  main()
