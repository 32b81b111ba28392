r"""Stage 3: train the EAR parser (or HAN) on LLP with stage-2 pseudo-labels.

  python launch.py --config=configs/stage3.py --config.workdir=/runs/s3 \
      --config.pseudo_labels_dir=/runs/s2 --config.data.llp_root=/data/LLP
  python launch.py --config=configs/stage3.py:tiny --config.workdir=/tmp/s3 \
      --config.pseudo_labels_dir=/tmp/s2 --config.data.llp_root=/tmp/synth/LLP
  python launch.py --config=configs/stage3.py:small ...  # CPU, ~2 minutes

`pseudo_labels_dir` is any folder holding LLP_Dataset/ in the UWAV layout:
a stage-2 workdir, or UWAV's released pseudo-labels. Table VI (pseudo-label
source x parser) is this switch plus `model.name`: point it at UWAV / EAR
labels and train with `--config.model.name=han` or `ear`. VALOR's labels
(binary, no logits; its data/ folder with CLAP/ and CLIP/):
`--config.pseudo_labels_format=valor --config.loss.use_soft=False
--config.loss.hard_targets=labels`.
Table II: `--config.data.features=clip_clap` (CLAP audio, CLIP visual;
`--config.model.use_3d_with_clip=True` adds R(2+1)D).
Ablations (docs/METHOD.md, "EAR parser"):
  Table VII  --config.model.amdf=none (w/o AMDF) | --config.model.erm=none
             (w/o ERM; also --config.model.erm_keep_aggregation=False)
  Table VIII --config.model.amdf=msa_mca | han
  Table IX   --config.model.erm=attention | attention_direct | a_v_then_av
             | no_uni (w/o A/V) | no_multi (w/o AV)
  S-XX       --config.model.erm_layers=2 | 4
  UWAV A8    --config.loss.use_soft/use_reweight/use_mixup=False
UWAV's whole recipe (HAN, its switches, identical layer initialisation,
float32 matmuls; configs/uwav.py): `configs/stage3.py:uwav`.
Expected: 80 epochs on 1xH100 not measured yet (benchmarks/stage3_bench.py
estimates it); LLP test Avg 63.7 (EAR), 62.8 (HAN on UWAV labels).
:small keeps the paper's depths (HAN 5 layers, ERM L = 3, N_u = N_f = 1)
and narrows the widths. On the demo's synthetic data (stage 1/2 :small
labels, 2 CPU cores): EAR ~125 s, test Seg Type@AV 90.0 (89.5 +- 0.4 over
3 seeds); HAN ~115 s, 88.6 (87.8 +- 0.5); weak labels on every segment
46.7, zero-shot CLIP/CLAP 79.0, the pseudo-labels themselves 89.7
(benchmarks/parser_comparison.py).
"""

from ear_jax.configs import common
from ear_jax.configs import uwav


def get_config(arg=None):
  arg = common.parse_arg(arg, tiny=False, small=False, uwav=False)
  c = common.base(stage="train_parser")
  c.required = ("workdir", "pseudo_labels_dir", "data.llp_root")
  c.seed = 20000
  c.pseudo_labels_dir = common.placeholder(str)
  # "uwav": LLP_Dataset/ (logits, thresholds, binary labels) | "valor":
  # VALOR's binary labels (<dir>/CLAP|CLIP/segment_pseudo_labels); needs
  # --config.loss.use_soft=False --config.loss.hard_targets=labels.
  c.pseudo_labels_format = "uwav"
  # "vggish_res152_r2plus1d": audio VGGish 128, visual ResNet-152 + R(2+1)D
  # 2560 | "clip_clap": audio CLAP 512, visual CLIP 768.
  c.data.features = "vggish_res152_r2plus1d"
  c.model = dict(
      name="ear",                  # "ear" | "han"
      hidden_dim=512, num_heads=16, ffn_dim=2048, dropout=0.1,
      audio_proj_hidden=1024,
      han_layers=5,                # HAN encoder (and amdf="han")
      temporal_layers=1,           # N_u, Eq. (10)
      fusion_layers=1,             # N_f, Eq. (11)-(12)
      amdf="asymmetric",           # "none" | "msa_mca" | "han"
      aggregation="decoder",       # Eq. (13)-(14): "decoder" | "sum"
      # "alternate" (Eq. (15)) | "none" | "a_v_then_av" | "no_uni" |
      # "no_multi" | "attention" | "attention_direct"
      erm="alternate",
      erm_layers=3, node_dim=128, leaky_slope=0.2,
      erm_keep_aggregation=True,
      erm_attention_heads=4,
      bn_momentum=0.9,             # Flax convention (PyTorch 0.1)
      adjacency_init="identity",
      use_3d_with_clip=False,
      # HAN variants of other codebases (checkpoint import): "mlp" |
      # "linear"; "linear" | "mlp" | "none" | "split" (2D and 3D Linears,
      # then a fusion Linear); "post" | "pre" (+ final LayerNorms);
      # "sequential" | "eccv20" (every layer reads the encoder inputs);
      # MMIL attention MLP width (0: Linear).
      audio_proj="mlp", visual_proj="linear", visual_proj_hidden=1024,
      visual_3d_dim=512, han_norm="post", han_update="sequential",
      mmil_att_hidden=0,
      # True: every layer of a stack starts from one initialised copy, like
      # PyTorch's cloned layers (UWAV's HAN Encoder, nn.TransformerEncoder).
      identical_layer_init=False,
      dtype="float32",
  )
  c.loss = dict(
      video_weight=1.0, seg_weight=1.0, mix_weight=1.0,
      pos_weight_factor=0.5,       # W
      cb_weight_scale="code",      # "code" (UWAV) | "paper" (1/C of it)
      soft_label_temperature=2.0,  # Eq. (9) as UWAV's code: sigma((z-θ)/2)
      mixup_alpha=1.7,
      use_soft=True, use_reweight=True, use_mixup=True,
      # use_soft=False targets: "threshold" (1[z > θ] w from the logits) |
      # "labels" (the binary label files as they are; VALOR's labels).
      hard_targets="threshold",
  )
  c.optim = common.optim(lr=1e-4, min_lr=5e-6, b1=0.9, weight_decay=1e-4,
                         clip_norm=1.0, warmup_epochs=10)
  c.batch_size = 64
  c.eval_batch_size = 256
  c.total_epochs = 80
  c.eval_every_epochs = 1
  c.checkpoint_every_epochs = 10
  c.best_metric = "val/seg_type"
  c.num_seeds = common.NUM_SEEDS
  c.seed_mode = common.SEED_MODE
  c.eval = dict(strict=True)  # UWAV `>`; False: HAN-code / VALOR `>=`
  if arg.uwav:
    uwav.apply(c, c.stage)
  if arg.tiny or arg.small:
    _shrink(c, tiny=arg.tiny)
  return c


def _shrink(c, tiny):
  if tiny:
    c.model.update(hidden_dim=32, num_heads=2, ffn_dim=64,
                   audio_proj_hidden=64, han_layers=1, temporal_layers=1,
                   fusion_layers=1, erm_layers=1, node_dim=16,
                   erm_attention_heads=2)
    c.batch_size, c.eval_batch_size, c.total_epochs = 8, 16, 2
    c.optim.update(warmup_epochs=1, lr=1e-3)
    c.checkpoint_every_epochs = 1
  else:
    # Narrow, not shallow: the paper's depths (HAN 5, ERM 3) stay.
    c.model.update(hidden_dim=64, num_heads=4, ffn_dim=128,
                   audio_proj_hidden=128, han_layers=5, erm_layers=3,
                   node_dim=16, erm_attention_heads=2)
    c.batch_size, c.eval_batch_size, c.total_epochs = 32, 64, 40
    c.optim.update(warmup_epochs=2, lr=1e-3, min_lr=5e-5)
  c.log_every_steps = 5
