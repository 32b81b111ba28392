r"""UWAV's public recipe as overrides of the stage configs (the `:uwav` arg).

  python launch.py --config=configs/stage1.py:uwav ...   # docs/REPRODUCE.md
  python launch.py --config=configs/stage3.py:uwav,tiny ...  # CPU smoke run

OVERRIDES[stage] holds every config field whose value decides what UWAV's
code computes, as UWAV (commit eb81492) runs it: the flags of its
scripts/*.sh, else the argparse defaults of main_pretrain.py / main.py,
else its model code. Fields the stage configs already set to UWAV's value
are listed too, so the table is the whole recipe (and a changed default
cannot drift from it). `:tiny` / `:small` shrink the sizes afterwards.
tests/uwav_config_test.py compares the resolved configs with
tests/testdata/uwav_recipe.json, a table of UWAV's values.
"""

from __future__ import annotations

from typing import Any

OVERRIDES: dict[str, dict[str, Any]] = {
    "pretrain_generator": {
        "seed": 1000,                          # train_transformer.sh --seed
        # TemporalTransformer.calculate_loss: BCE of sigmoid(z_a) sigmoid(z_v).
        "model.asymmetric": False,
        "migration.enabled": False,            # UWAV has no label migration
        # nn.TransformerEncoder deep-copies one initialised layer.
        "model.identical_layer_init": True,
        "model.hidden_dim": 1024,              # train_transformer.sh
        "model.proj_hidden": 2048,             # MLP(in, 2 * hidden, hidden)
        "model.num_layers": 5,                 # train_transformer.sh
        "model.num_heads": 16,                 # --nhead
        "model.ffn_dim": 2048,                 # --ff_dim
        "model.dropout": 0.3,                  # --dropout
        "model.logit_scale_a": 3.2912,         # a_logit_scale buffer
        "model.logit_scale_v": 4.6052,         # v_logit_scale buffer
        "loss.pos_weight": 5.0,                # main_pretrain.py default
        "loss.neg_weight": 1.0,                # main_pretrain.py default
        "optim.lr": 1e-4,                      # train_transformer.sh
        "optim.min_lr": 1e-5,                  # --lr_min
        "optim.warmup_epochs": 10,             # --warm_up_epoch
        "optim.b1": 0.5,                       # --beta1
        "optim.b2": 0.999,                     # main_pretrain.py default
        "optim.eps": 1e-8,                     # --eps
        "optim.weight_decay": 1e-3,            # --weight_decay
        "optim.clip_norm": 2.0,                # --grad_norm
        "batch_size": 64,                      # --batch_size
        "total_epochs": 80,                    # --epochs
        "eval_every_epochs": 1,                # main_pretrain.py main()
        "best_metric": "val/seg_av",           # best on val Seg-av
        # torch float32 matmuls (no TF32) on GPU.
        "matmul_precision": "highest",
    },
    "generate_pseudo_labels": {
        "seed": 1,                             # main_pretrain.py default
        # calculate_classwise_thresholds: Prec, Rec, F in torch float32.
        "threshold_precision": "float32",
        "logits": "dynamic",                   # the generator's z_a, z_v
        "checkpoint": "best",                  # --checkpoint_model default
        "matmul_precision": "highest",
    },
    "train_parser": {
        "seed": 20000,                         # train_han.sh --seed
        "model.name": "han",                   # --model HAN
        # Encoder deep-copies one HANLayer (_get_clones).
        "model.identical_layer_init": True,
        "model.hidden_dim": 512,               # train_han.sh
        "model.num_heads": 16,                 # --nhead
        "model.ffn_dim": 2048,                 # --ff_dim
        "model.han_layers": 5,                 # --num_han_layers
        "model.dropout": 0.1,                  # --dropout
        "model.audio_proj": "mlp",             # fc_a: MLP, 2 layers
        "model.audio_proj_hidden": 1024,       # 2 * hidden_dim
        "model.visual_proj": "linear",         # --num_proj_layers 1
        "model.mmil_att_hidden": 0,            # --num_MMIL_layers 1
        "model.han_norm": "post",              # no --pre_norm
        "model.han_update": "sequential",      # Encoder.forward
        "data.features": "vggish_res152_r2plus1d",  # --audio/video/st_dir
        "pseudo_labels_format": "uwav",
        "loss.use_soft": True,                 # --apply_uncertainty(_mixup)
        "loss.soft_label_temperature": 2.0,    # sigmoid((z - theta) / 2)
        "loss.use_reweight": True,             # --apply_reweighting
        "loss.cb_weight_scale": "code",        # --reweight_type inverse_freq
        "loss.pos_weight_factor": 0.5,         # --pos_weight
        "loss.use_mixup": True,                # --cal_mixup_loss
        "loss.mixup_alpha": 1.7,               # --alpha
        "loss.video_weight": 1.0,              # loss_video, unweighted
        "loss.seg_weight": 1.0,                # --segment_loss_weight
        "loss.mix_weight": 1.0,                # --mixup_loss_weight
        "optim.lr": 1e-4,                      # train_han.sh
        "optim.min_lr": 5e-6,                  # --lr_min
        "optim.warmup_epochs": 10,             # --warm_up_epoch
        "optim.b1": 0.9,                       # --beta1
        "optim.b2": 0.999,                     # main.py default
        "optim.eps": 1e-8,                     # --eps
        "optim.weight_decay": 1e-4,            # --weight_decay
        "optim.clip_norm": 1.0,                # --grad_norm
        "batch_size": 64,                      # --batch_size
        "total_epochs": 80,                    # --epochs
        "eval_every_epochs": 1,                # main.py main()
        "best_metric": "val/seg_type",         # best on val Seg-type
        "eval.strict": True,                   # get_seg_pred: p > 0.5
        "matmul_precision": "highest",
    },
}


def apply(config, stage: str) -> None:
  """Sets OVERRIDES[stage] on `config` (unlocked), field by field."""
  if stage not in OVERRIDES:
    raise ValueError(f"configs/uwav.py has no recipe for stage {stage!r};"
                     f" it has {sorted(OVERRIDES)}.")
  for dotted, value in OVERRIDES[stage].items():
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
      node = node.get(part) if hasattr(node, "get") else None
    if node is None or leaf not in node:
      raise KeyError(f"configs/uwav.py: {stage} override {dotted!r} names no"
                     " field of the stage config; rename it in OVERRIDES.")
    node[leaf] = value
