r"""Table IV on synthetic data: UWAV, UWAV+LM, EAR w/o LM, EAR generators.

  python benchmarks/generator_ablation.py --workdir=/tmp/abl [--variant=small]

Writes one synthetic dataset (planted audio-only, visual-only and
audio-visual events), trains each generator variant with stage 1, runs
stage 2 on LLP and prints the pseudo-label quality on test (val-tuned
thresholds) in the paper's layout, plus one JSON line. Use
`--data_root=DIR` to reuse a dataset written by data/synthetic.py or the
demo (<demo workdir>/data).
"""

import argparse
import json
import os

from ear_jax.configs import stage1 as stage1_config
from ear_jax.configs import stage2 as stage2_config
from ear_jax import metrics as metrics_lib
from ear_jax.data import synthetic
from ear_jax.stages import generate_pseudo_labels
from ear_jax.stages import pretrain_generator

VARIANTS = {  # name: (model.asymmetric, migration.enabled)
    "UWAV": (False, False),
    "UWAV+LM": (False, True),
    "EAR w/o LM": (True, False),
    "EAR": (True, True),
}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--data_root", default=None)
  ap.add_argument("--variant", default="small")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  root = args.data_root or os.path.join(args.workdir, "data")
  if not os.path.exists(os.path.join(root, "LLP")):
    synthetic.write_synthetic(root, seed=args.seed, num_llp=(600, 100, 100),
                              num_unav=(600, 100, 50), han_features=False)
  rows = {}
  for name, (asym, mig) in VARIANTS.items():
    tag = name.replace(" ", "_").replace("/", "").replace("+", "_")
    c1 = stage1_config.get_config(args.variant)
    c1.workdir = os.path.join(args.workdir, tag, "stage1")
    c1.data.unav_root = os.path.join(root, "UnAV")
    c1.model.asymmetric = asym
    c1.migration.enabled = mig
    c1.progress = False
    pretrain_generator.run(c1)
    c2 = stage2_config.get_config(args.variant)
    c2.workdir = os.path.join(args.workdir, tag, "stage2")
    c2.generator_workdir = c1.workdir
    c2.data.llp_root = os.path.join(root, "LLP")
    c2.progress = False
    generate_pseudo_labels.run(c2)
    with open(os.path.join(c2.workdir, "eval", "test.json")) as f:
      rows[name] = json.load(f)
  print(metrics_lib.format_table(rows))
  print(json.dumps({"bench": "generator_ablation_synthetic_test",
                    **{k: round(v["avg"], 2) for k, v in rows.items()}}))


if __name__ == "__main__":
  main()
