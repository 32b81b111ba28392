r"""Demo: the whole pipeline on synthetic data, with tables, plots and a report.

  python launch.py --config=configs/demo.py --config.workdir=/tmp/demo
  python launch.py --config=configs/demo.py:tiny --config.workdir=/tmp/d  # CPU
  python launch.py --config=configs/demo.py:full --config.workdir=/runs/d # GPU

Writes a synthetic LLP + UnAV-100 dataset to <workdir>/data (published
layouts), then runs stage 1 (<workdir>/stage1), stage 2 (stage2), the EAR
parser (stage3) and HAN on the same pseudo-labels (stage3_han), prints the
results in the paper's table layout and writes <workdir>/report.md,
<workdir>/results.json and the figures under <workdir>/figures. Re-running
resumes: finished stages (same config) are skipped. Sub-configs are the
stage configs' own variants (`small` here, `tiny` for :tiny, paper sizes for
:full), e.g. --config.stage3.total_epochs=40 changes stage 3 only. Real data:
--config.data.llp_root=/data/LLP --config.data.unav_root=/data/UnAV (with
:full) skips the synthetic set.
The synthetic set takes ~0.9 GB (default; ResNet-152 frames dominate), ~2
GB for :full. Numbers on synthetic data only show that the pipeline works.
Expected on 2 CPU cores: default 5.6 min (data 7 s, stage 1 66 s, stage 2
5 s, EAR 123 s, HAN 114 s); test Avg EAR 87.2, HAN 85.6, pseudo-labels
87.4, zero-shot 75.4, weak 47.1 (300 test clips; over seeds see
benchmarks/parser_comparison.py).
:tiny ~3-5 min (XLA compiles dominate); :full not measured yet (GPU).
"""

from ear_jax.configs import common
from ear_jax.configs import stage1
from ear_jax.configs import stage2
from ear_jax.configs import stage3


def get_config(arg=None):
  arg = common.parse_arg(arg, tiny=False, full=False)
  if arg.tiny and arg.full:
    raise ValueError("configs/demo.py: choose one of :tiny and :full.")
  variant = "tiny" if arg.tiny else None if arg.full else "small"
  c = common.base(stage="demo")
  c.required = ("workdir",)
  # Synthetic dataset (data/synthetic.py), written once to <workdir>/data
  # unless data.llp_root / data.unav_root point at real data.
  c.synthetic = dict(seed=0, num_llp=(600, 200, 300), num_unav=(600, 100, 50))
  c.stage1 = stage1.get_config(variant)
  c.stage2 = stage2.get_config(variant)
  c.stage3 = stage3.get_config(variant)
  c.stage3_han = stage3.get_config(variant)
  c.stage3_han.model.name = "han"
  c.run_han = True
  # Seeds per training stage (stages 1 and 3, docs/SEEDS.md): N sets the
  # num_seeds of stage1, stage3 and stage3_han; None keeps their own (1).
  c.num_seeds = common.placeholder(int)
  c.num_timelines = 2  # test videos drawn in the report (GT, HAN, EAR)
  if variant == "small":
    # The small generator converges on synthetic UnAV by epoch ~10 (val
    # Seg-av ~80); half its 30 epochs keeps the demo within its budget.
    c.stage1.total_epochs = 15
  if arg.tiny:
    c.synthetic.update(num_llp=(48, 16, 16), num_unav=(48, 16, 8))
    c.num_timelines = 1
  if arg.full:
    c.synthetic.update(num_llp=(2000, 300, 500), num_unav=(2000, 300, 300))
  return c
