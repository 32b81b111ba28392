r"""Paired comparison of two finished runs over their seeds (b - a).

  python launch.py --config=configs/compare.py --config.a=/runs/han \
      --config.b=/runs/ear
  python launch.py --config=configs/compare.py --config.a=/runs/han \
      --config.b=/runs/ear --config.split=val,test --config.workdir=/runs/cmp

`a` and `b` are stage-3 (or stage-2, evaluate) workdirs. Each run's
eval/<split>_seeds.json (trained with --config.num_seeds=N) is read, or its
eval/<split>.json as a single seed. Seeds are paired by value (train both
runs with the same --config.seed and --config.num_seeds; on N-seed
pseudo-labels seed k of both used set k), or by position with
`pair_by=index`. For every metric it prints a's and b's mean ± std, the
mean of b - a with its Student-t 95% CI, and the exact paired permutation
p-value (all 2^n sign flips; with n seeds the smallest possible p is
2 / 2^n, so n >= 6 is needed for p < 0.05). With a workdir it also writes
<workdir>/compare_<split>.json and .md. Expected: a second.
"""

from ear_jax.configs import common


def get_config(arg=None):
  common.parse_arg(arg, tiny=False)  # no sizes: :tiny is accepted, a no-op
  c = common.base(stage="compare")
  c.required = ("a", "b")             # workdir is optional here
  c.a = common.placeholder(str)       # the baseline run (e.g. HAN)
  c.b = common.placeholder(str)       # the run compared with it (e.g. EAR)
  c.name_a = common.placeholder(str)  # table labels (default: folder names)
  c.name_b = common.placeholder(str)
  c.split = "test"                    # "val" | "test" | "val,test"
  c.pair_by = "seed"                  # "seed" (same seed values) | "index"
  return c
