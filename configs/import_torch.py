r"""Import a PyTorch checkpoint (UWAV, original HAN, VALOR) as an ear-jax run.

  python launch.py --config=configs/import_torch.py --config.workdir=/runs/uwav_han \
      --config.checkpoint=checkpoint_best.pt --config.source=uwav_han \
      --config.data.llp_root=/data/LLP
  python launch.py --config=configs/eval.py --config.workdir=/runs/e \
      --config.run_workdir=/runs/uwav_han --config.split=test

Sources: uwav_generator (UWAV model/TemporalTransformer.py: a stage-1 run,
for configs/stage2.py --config.generator_workdir), uwav_han (UWAV
model/HAN.py, VGGish/ResNet-152/R(2+1)D or CLIP/CLAP input), han_eccv20 (the
original HAN, AVVP-ECCV20 MMIL_Net), valor_han (VALOR's MMIL_Net): stage-3
runs for configs/eval.py and configs/parse.py. Widths, depths and feature
set are read from the tensor shapes; what a state dict cannot tell is set
here: `num_heads` (None: the source's published script, 16 / 16 / 1 / 8) and
`pre_norm` (UWAV --pre_norm, VALOR --norm_where pre_norm). The workdir must
be new. Needs torch (the export extra). Expected: seconds.
"""

from ear_jax.configs import common
from ear_jax.configs import stage1
from ear_jax.configs import stage3


def get_config(arg=None):
  arg = common.parse_arg(arg, tiny=False)
  c = common.base(stage="import_torch")
  c.required = ("workdir", "checkpoint", "source")
  c.checkpoint = common.placeholder(str)  # .pt / .pth state dict
  c.source = common.placeholder(str)
  c.num_heads = common.placeholder(int)
  c.pre_norm = False
  # The configs the imported run is recorded with (model fields replaced by
  # the checkpoint's architecture); --config.parser.eval.strict=False etc.
  c.generator = stage1.get_config()
  c.parser = stage3.get_config()
  return c
