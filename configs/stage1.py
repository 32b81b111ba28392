r"""Stage 1: pre-train the EAR pseudo-label generator on UnAV-100 (CLIP/CLAP).

  python launch.py --config=configs/stage1.py --config.workdir=/runs/s1 \
      --config.data.unav_root=/data/UnAV
  python launch.py --config=configs/stage1.py:tiny --config.workdir=/tmp/s1 \
      --config.data.unav_root=/tmp/synth/UnAV        # CPU smoke run, seconds
  python launch.py --config=configs/stage1.py:small ...  # CPU, a few minutes

Variants of Table IV: `--config.model.asymmetric=False
--config.migration.enabled=False` is "UWAV"; asymmetric=False with migration
is "UWAV+LM"; asymmetric with migration off is "EAR w/o LM". `:uwav` is
UWAV's whole recipe (configs/uwav.py: also identical layer initialisation
and float32 matmuls); it combines with :tiny / :small.
Expected: full size on 1xH100 not measured yet (goal: 80 epochs < 45 s).
"""

from ear_jax.configs import common
from ear_jax.configs import uwav


def get_config(arg=None):
  arg = common.parse_arg(arg, tiny=False, small=False, uwav=False)
  c = common.base(stage="pretrain_generator")
  c.required = ("workdir", "data.unav_root")
  c.seed = 1000
  # Fixed padded length for every split (None: max ceil(duration) in the
  # JSON). All padding is masked, so it never changes a result.
  c.data.max_segments = common.placeholder(int)
  c.model = dict(
      name="generator",
      asymmetric=True,            # EAR Eq. (6)-(7); False = UWAV
      clip_dim=768, clap_dim=512,
      proj_hidden=2048, hidden_dim=1024,
      num_layers=5, num_heads=16, ffn_dim=2048, dropout=0.3,
      logit_scale_a=3.2912, logit_scale_v=4.6052,
      static_mode="frozen_zeroshot",   # R2 | "shared_mlp_no_temporal"
      static_logit_scale_a=common.placeholder(float),  # R3: None = same s_a
      static_logit_scale_v=common.placeholder(float),
      identical_layer_init=False,
      dtype="float32",
  )
  c.migration = dict(
      enabled=True, scope="batch",  # R1: "batch" | "video"
      tau_a=0.98, tau_v=0.95,
  )
  c.loss = dict(
      lambda_a=0.05, lambda_v=0.15,
      use_av1=True, use_av2=True, use_a=True, use_v=True,
      pos_weight=5.0, neg_weight=1.0,
  )
  c.optim = common.optim(lr=1e-4, min_lr=1e-5, b1=0.5, weight_decay=1e-3,
                         clip_norm=2.0, warmup_epochs=10)
  c.batch_size = 64
  c.eval_batch_size = 64
  c.total_epochs = 80
  c.eval_every_epochs = 1
  c.checkpoint_every_epochs = 10
  # R7: AV probability for model selection: mean of the two asymmetric
  # products (EAR) or sigma(z_a) sigma(z_v) (UWAV); threshold 0.5, >=.
  c.best_metric = "val/seg_av"
  c.num_seeds = common.NUM_SEEDS
  c.seed_mode = common.SEED_MODE
  if arg.uwav:
    uwav.apply(c, c.stage)
  if arg.tiny or arg.small:
    _shrink(c, tiny=arg.tiny)
  return c


def _shrink(c, tiny):
  c.model.update(proj_hidden=32 if tiny else 128, hidden_dim=16 if tiny
                 else 64, num_layers=1 if tiny else 2, num_heads=2 if tiny
                 else 4, ffn_dim=32 if tiny else 128,
                 dropout=0.1 if tiny else 0.3)
  c.batch_size = 8 if tiny else 32
  c.eval_batch_size = 16 if tiny else 64
  c.total_epochs = 2 if tiny else 30
  c.optim.warmup_epochs = 1 if tiny else 3
  c.optim.lr = 1e-3 if tiny else 5e-4
  c.checkpoint_every_epochs = 1 if tiny else 10
  c.log_every_steps = 5
