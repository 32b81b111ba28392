r"""Writes tests/testdata/parity/*.npz from the PyTorch reference code.

  python tools/make_parity_fixtures.py --reference_root=/path/to/refs
  # only the whole-run (55-step) training fixtures; they need uwav/ only:
  PYTHONPATH=. python tools/make_parity_fixtures.py \
      --reference_root=/path/to/refs \
      --only=uwav_han_trajectory,uwav_generator_trajectory

--reference_root holds checkouts of the reference repositories (obtained
separately; nothing of them is copied into ear-jax); a job needs only the
ones it reads (NEEDS):
  uwav/   UWAV @eb81492 (model/, utils/)
  han/    AVVP-ECCV20 (nets/net_audiovisual.py)
  valor/  VALOR (main_network.py)
Needs torch and einops. Each reference model is built with a fixed seed at
small widths, its modules imported from the checkout and run on CPU in float32.
Weights and inputs are rounded to float16-representable values (stored as
float16, exact in float32) to keep the files small. Keys: "sd/<state-dict
key>", "in/<input>", "out/<reference output>", "grad/<key>", "step/<key>",
"final/<key>" (weights after a whole run, float32),
"cfg/<hyper-parameter>". Where the reference computes inline in a
training or evaluation loop (UWAV main.py / main_pretrain.py), the loop
body is re-expressed here around the reference functions it calls.
"""
# pylint: disable=invalid-name

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import tempfile
import types

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "tests", "testdata", "parity")
C = 25  # LLP classes
T = 10  # LLP segments


# ---------------------------------------------------------------- helpers
@contextlib.contextmanager
def reference_path(root: str):
  """Imports from `root` (a reference checkout); forgets its modules after."""
  before = set(sys.modules)
  sys.path.insert(0, root)
  try:
    yield
  finally:
    sys.path.remove(root)
    for name in set(sys.modules) - before:
      if name.split(".")[0] in ("model", "utils", "nets", "main_network"):
        del sys.modules[name]


def _np(x):
  import torch  # pylint: disable=g-import-not-at-top
  if isinstance(x, torch.Tensor):
    return x.detach().cpu().numpy()
  return np.asarray(x)


def _pack(x) -> np.ndarray:
  """float32 arrays that float16 holds exactly are stored as float16."""
  x = _np(x)
  if x.dtype == np.float32 and np.array_equal(
      x.astype(np.float16).astype(np.float32), x):
    return x.astype(np.float16)
  return x


def round_f16(x):
  return x.half().float()


def round_module(module) -> None:
  """Rounds every parameter to a float16-representable float32 value."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(round_f16(p))


def state_dict(module) -> dict:
  # Copies: state_dict() shares storage with parameters an optimizer moves.
  return {f"sd/{k}": v.detach().clone() for k, v in
          module.state_dict().items()}


def save(name: str, arrays: dict) -> None:
  os.makedirs(OUT_DIR, exist_ok=True)
  path = os.path.join(OUT_DIR, f"{name}.npz")
  tmp = path + ".tmp.npz"
  np.savez_compressed(tmp, **{k: _pack(v) for k, v in arrays.items()})
  os.replace(tmp, path)
  print(f"{path}: {os.path.getsize(path) / 1e3:.0f} kB, {len(arrays)} arrays")


def randn(gen, *shape):
  import torch  # pylint: disable=g-import-not-at-top
  return round_f16(torch.randn(*shape, generator=gen))


# ------------------------------------------------------- UWAV generator
def uwav_generator(root: str) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  with reference_path(os.path.join(root, "uwav")):
    tt = importlib.import_module("model.TemporalTransformer")
  gen = torch.Generator().manual_seed(1)
  num_classes, B, L = 7, 3, 6
  text_a = torch.nn.functional.normalize(torch.randn(num_classes, 512,
                                                     generator=gen), dim=-1)
  text_v = torch.nn.functional.normalize(torch.randn(num_classes, 768,
                                                     generator=gen), dim=-1)
  torch.manual_seed(1000)
  cfg = dict(hidden_dim=16, nhead=2, ff_dim=32, num_layers=2, dropout=0.3)
  model = tt.TemporalTransformer(
      input_v_2d_dim=768, input_v_3d_dim=1024, input_a_dim=512,
      hidden_dim=cfg["hidden_dim"], nhead=cfg["nhead"], ff_dim=cfg["ff_dim"],
      num_layers=cfg["num_layers"], dropout=cfg["dropout"],
      clap_event_feats=text_a, clip_event_feats=text_v)
  round_module(model)
  model.eval()
  clap = randn(gen, B, L, 512)
  clip = randn(gen, B, L, 768)
  lengths = torch.tensor([6, 4, 2])
  valid = (torch.arange(L)[None] < lengths[:, None]).float()  # (B, L)
  attn = valid.bool()[:, :, None] & valid.bool()[:, None, :]  # UnAV loader
  y_av = (torch.rand(B, L, num_classes, generator=gen) < 0.3).float()
  y_av = y_av * valid[..., None]
  with torch.no_grad():
    a_logit, v_logit = model(clap, clip, valid_mask=valid, attn_mask=attn)
    args = argparse.Namespace(pos_weight=5.0, neg_weight=1.0)
    loss, _ = model.calculate_loss(args, (a_logit, v_logit), y_av, valid)
  save("uwav_generator", {
      **state_dict(model),
      "in/text_a": text_a, "in/text_v": text_v, "in/clap": clap,
      "in/clip": clip, "in/valid": valid, "in/y_av": y_av,
      "out/a_logit": a_logit, "out/v_logit": v_logit, "out/loss_av": loss,
      "cfg/num_heads": np.int32(cfg["nhead"]),
      "cfg/pos_weight": np.float32(5.0), "cfg/neg_weight": np.float32(1.0),
  })


# ------------------------------------------------------------ UWAV HAN
def _uwav_han(han_mod, seed: int, **kw):
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  model = han_mod.HybridAttentionNet(num_classes=C, **kw)
  round_module(model)
  return model.eval()


def _loss_args(soft: bool, reweight: bool):
  return argparse.Namespace(
      cal_video_loss=True, cal_segment_loss=True, cal_mixup_loss=True,
      apply_uncertainty=soft, apply_uncertainty_mixup=soft,
      apply_reweighting=reweight, reweight_type="inverse_freq",
      pos_weight=0.5, neg_weight=1.0, alpha=1.7, segment_loss_weight=1.0,
      mixup_loss_weight=1.0)


def _fixed_mixup(draws):
  """Stands in for HybridAttentionNet.mixup_data with given (lambda, perm):
  the same arithmetic, the Beta draw and randperm replaced."""
  queue = list(draws)

  def mixup_data(x, y, alpha):
    del alpha
    lam, index = queue.pop(0)
    return lam * x + (1 - lam) * x[index, :], y, y[index], lam

  return mixup_data


def uwav_han(root: str) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  with reference_path(os.path.join(root, "uwav")):
    han_mod = importlib.import_module("model.HAN")
    train_utils = importlib.import_module("utils.train_utils")
  gen = torch.Generator().manual_seed(2)
  B = 4
  # train_han.sh architecture (num_proj_layers=1, num_MMIL_layers=1).
  arch = dict(input_v_2d_dim=2048, input_v_3d_dim=512, input_a_dim=128,
              hidden_dim=16, nhead=4, ff_dim=32, num_han_layers=2,
              num_proj_layers=1, num_MMIL_layers=1, dropout=0.1)
  model = _uwav_han(han_mod, 20000, **arch)
  audio, vis_2d, vis_3d = (randn(gen, B, T, 128), randn(gen, B, T, 2048),
                           randn(gen, B, T, 512))
  weak = torch.zeros(B, C)
  for b in range(B):
    weak[b, torch.randperm(C, generator=gen)[:b + 1]] = 1
  a_logit = randn(gen, B, T, C) * 3
  v_logit = randn(gen, B, T, C) * 3
  theta_a = round_f16(torch.randn(C, generator=gen))
  theta_v = round_f16(torch.randn(C, generator=gen))
  theta_a[[1, 5]] = float("-inf")  # "every weak-label segment positive"
  theta_v[[2]] = float("-inf")
  # Class frequencies are float64 in UWAV (numpy, dataloader.get_class_freq).
  freq_a = torch.rand(C, generator=gen, dtype=torch.float64) * 0.2
  freq_v = torch.rand(C, generator=gen, dtype=torch.float64) * 0.2
  N = B * T
  draws = [(0.3125, torch.randperm(N, generator=gen)),
           (0.71875, torch.randperm(N, generator=gen))]
  arrays = {**state_dict(model), "in/audio": audio, "in/vis_2d": vis_2d,
            "in/vis_3d": vis_3d, "in/weak": weak, "in/a_logit": a_logit,
            "in/v_logit": v_logit, "in/theta_a": theta_a,
            "in/theta_v": theta_v, "in/freq_a": freq_a, "in/freq_v": freq_v,
            "in/lam_a": np.float32(draws[0][0]), "in/perm_a": draws[0][1],
            "in/lam_v": np.float32(draws[1][0]), "in/perm_v": draws[1][1],
            "cfg/num_heads": np.int32(arch["nhead"])}

  with torch.no_grad():
    outs = model(audio, vis_2d, vis_3d_feat=vis_3d)
  for k, x in zip(("global_prob", "a_prob", "v_prob", "a_logits",
                   "v_logits", "a_feat", "v_feat"), outs):
    arrays[f"out/{k}"] = x

  # Binary pseudo-labels as main_pretrain.py saves them: (z > theta) & weak.
  hard = {m: ((z > th) & (weak[:, None, :] > 0)).float() for m, z, th in
          (("a", a_logit, theta_a), ("v", v_logit, theta_v))}
  # Soft labels as HybridAttentionNet.calculate_segment_loss forms them.
  for m, z, th in (("a", a_logit, theta_a), ("v", v_logit, theta_v)):
    zmin = z.amin(dim=(0, 1))
    th = torch.where(th == float("-inf"), zmin - 1, th)
    w = weak[:, None, :].expand(B, T, C)
    arrays[f"out/soft_{m}"] = torch.where(w == 1, torch.sigmoid(
        (z - th) / 2), w)
    arrays[f"out/hard_{m}"] = hard[m]

  # Loss terms (eval mode: no dropout), fixed mixup draws.
  for name, soft, reweight in (("soft_cb", True, True),
                               ("hard_plain", False, False)):
    model.mixup_data = _fixed_mixup(draws)
    outs = model(audio, vis_2d, vis_3d_feat=vis_3d)
    loss, terms = model.calculate_loss(
        _loss_args(soft, reweight), outs, (weak, hard["a"], hard["v"]), None,
        a_logits=a_logit, v_logits=v_logit, a_thresholds=theta_a,
        v_thresholds=theta_v, a_class_freq=freq_a, v_class_freq=freq_v)
    for k, v in terms.items():
      arrays[f"out/{name}/{k}"] = np.float64(v)
    arrays[f"out/{name}/loss"] = loss.detach()
    if name == "soft_cb":
      model.zero_grad()
      loss.backward()
      # Modules the forward never calls (post-norm final norms) get none.
      grads = {k: p.grad.detach().clone() for k, p in
               model.named_parameters() if p.grad is not None}
      arrays.update({f"grad/{k}": g for k, g in grads.items()})
  del model.mixup_data

  # One clipped AdamW step as main.py takes it (lr of epoch 1 from UWAV's
  # warm-up/cosine schedule). lr and decay are large so the step shows.
  opt_cfg = dict(lr=0.1, lr_min=5e-3, warm_up_epoch=10, epochs=80,
                 weight_decay=0.1, beta1=0.9, beta2=0.999, eps=1e-8,
                 grad_norm=0.05)
  optimizer = torch.optim.AdamW(
      model.parameters(), lr=opt_cfg["lr"],
      weight_decay=opt_cfg["weight_decay"],
      betas=(opt_cfg["beta1"], opt_cfg["beta2"]), eps=opt_cfg["eps"])
  train_utils.WarmUpCosineAnnealingLR(
      optimizer, opt_cfg["warm_up_epoch"], opt_cfg["epochs"],
      opt_cfg["lr_min"], opt_cfg["lr"])
  for k, p in model.named_parameters():
    p.grad = grads[k].clone() if k in grads else None
  norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                        opt_cfg["grad_norm"])
  optimizer.step()
  arrays["out/grad_norm"] = norm
  arrays["out/step_lr"] = np.float64(optimizer.param_groups[0]["lr"])
  arrays.update({f"step/{k}": p.detach().clone() for k, p in
                 model.named_parameters()})
  arrays.update({f"cfg/{k}": np.float64(v) for k, v in opt_cfg.items()})
  save("uwav_han", arrays)

  # Other architectures of the same class: MLP projection and MMIL
  # attention (num_proj_layers = num_MMIL_layers = 2), pre-norm.
  arch2 = dict(arch, num_proj_layers=2, num_MMIL_layers=2, pre_norm=True)
  model2 = _uwav_han(han_mod, 1, **arch2)
  with torch.no_grad():
    outs = model2(audio[:2], vis_2d[:2], vis_3d_feat=vis_3d[:2])
  arrays = {**state_dict(model2), "in/audio": audio[:2],
            "in/vis_2d": vis_2d[:2], "in/vis_3d": vis_3d[:2],
            "cfg/num_heads": np.int32(arch["nhead"])}
  for k, x in zip(("global_prob", "a_prob", "v_prob", "a_logits",
                   "v_logits", "a_feat", "v_feat"), outs):
    arrays[f"out/{k}"] = x
  save("uwav_han_mlp_prenorm", arrays)

  # main.py --use_clip_clap_feat: model(clap, clip) with no 3D, the visual
  # features enter the encoder unprojected (input width = hidden_dim; 16
  # stands in for CLIP's 768 to keep the file small).
  arch3 = dict(arch, input_a_dim=512, input_v_2d_dim=16)
  model3 = _uwav_han(han_mod, 2, **arch3)
  clap, clip = randn(gen, 2, T, 512), randn(gen, 2, T, 16)
  with torch.no_grad():
    outs = model3(clap, clip)
  arrays = {**state_dict(model3), "in/clap": clap, "in/clip": clip,
            "cfg/num_heads": np.int32(arch["nhead"])}
  for k, x in zip(("global_prob", "a_prob", "v_prob", "a_logits",
                   "v_logits", "a_feat", "v_feat"), outs):
    arrays[f"out/{k}"] = x
  save("uwav_han_clip_clap", arrays)


# -------------------------------------------------- UWAV threshold search
class _LogitTable:
  """Stands in for the generator in calculate_classwise_thresholds: the
  batch's "clip_feat" carries the video index, the logits are given."""

  def __init__(self, a, v):
    self.a, self.v = a, v

  def eval(self):
    return self

  def __call__(self, clap_feat, clip_feat, valid_mask=None, attn_mask=None):
    i = int(clip_feat.reshape(-1)[0])
    return self.a[i:i + 1], self.v[i:i + 1]


def uwav_thresholds(root: str) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  with reference_path(os.path.join(root, "uwav")):
    eval_utils = importlib.import_module("utils.eval_utils")
  gen = torch.Generator().manual_seed(3)
  N = 24
  a = torch.randn(N, T, C, generator=gen) * 2
  v = torch.randn(N, T, C, generator=gen) * 2
  weak = (torch.rand(N, C, generator=gen) < 0.25).float()
  weak[:, 0] = 1  # a frequent class
  gt_a = ((torch.rand(N, T, C, generator=gen) < 0.4).float()
          * weak[:, None, :])
  gt_v = ((torch.rand(N, T, C, generator=gen) < 0.3).float()
          * weak[:, None, :])
  # Logits that follow the GT a little, so the best cut is not trivial.
  a = round_f16(a + 1.5 * gt_a)
  v = round_f16(v + 1.5 * gt_v)
  # A GT positive outside the weak label (an LLP quirk) stays -inf.
  gt_a[0, 3, 24] = 1
  batches = [dict(clip_feat=torch.full((1, T, 1), float(i)),
                  clap_feat=torch.zeros(1, T, 1),
                  valid_mask=torch.ones(1, T),
                  attn_mask=torch.ones(1, T, T, dtype=torch.bool),
                  weak_label=weak[i:i + 1], duration=torch.tensor([T]),
                  gt_a_label=gt_a[i:i + 1], gt_v_label=gt_v[i:i + 1])
             for i in range(N)]

  class Loader(list):
    dataset = types.SimpleNamespace(categories=list(range(C)))

  args = argparse.Namespace(dataset="LLP", threshold_type="classwise")
  theta_a, theta_v = eval_utils.calculate_classwise_thresholds(
      args, _LogitTable(a, v), Loader(batches), "cpu")
  # main_pretrain.py eval() with --label_filtering: (z > theta) & weak.
  w = weak[:, None, :] > 0
  pred_a = ((a > theta_a) & w).to(torch.uint8)
  pred_v = ((v > theta_v) & w).to(torch.uint8)
  save("uwav_thresholds", {
      "in/a_logit": a, "in/v_logit": v, "in/weak": weak,
      "in/gt_a": gt_a.permute(0, 2, 1), "in/gt_v": gt_v.permute(0, 2, 1),
      "out/theta_a": theta_a, "out/theta_v": theta_v,
      "out/pred_a": pred_a, "out/pred_v": pred_v})


# ------------------------------------------------------ original HAN
def han_eccv20(root: str) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  with reference_path(os.path.join(root, "han")):
    net = importlib.import_module("nets.net_audiovisual")
  # MMIL_Net hard-codes 512-wide layers (~8M parameters). Its forward is
  # kept; its layers are swapped for the same classes at width 32 (two HAN
  # layers, to show that every layer reads the encoder inputs).
  model = net.MMIL_Net()
  torch.manual_seed(7)
  d = 32
  model.fc_prob, model.fc_frame_att, model.fc_av_att = (
      nn.Linear(d, C), nn.Linear(d, C), nn.Linear(d, C))
  model.fc_a, model.fc_v = nn.Linear(128, d), nn.Linear(2048, d)
  model.fc_st, model.fc_fusion = nn.Linear(512, d), nn.Linear(2 * d, d)
  model.audio_encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(
      d_model=d, nhead=1, dim_feedforward=d), num_layers=1)
  model.visual_encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(
      d_model=d, nhead=1, dim_feedforward=d), num_layers=1)
  model.cmt_encoder = net.Encoder(net.CMTLayer(d_model=d, nhead=1,
                                               dim_feedforward=d), 1)
  model.hat_encoder = net.Encoder(net.HANLayer(d_model=d, nhead=1,
                                               dim_feedforward=d), 2)
  round_module(model)
  model.eval()
  gen = torch.Generator().manual_seed(4)
  audio = randn(gen, 2, T, 128)
  visual = randn(gen, 2, 8 * T, 2048)  # ResNet-152: 8 frames per segment
  visual_st = randn(gen, 2, T, 512)
  with torch.no_grad():
    global_prob, a_prob, v_prob, frame_prob = model(audio, visual, visual_st)
  save("han_eccv20", {
      **state_dict(model), "in/audio": audio, "in/visual": visual,
      "in/visual_st": visual_st, "out/global_prob": global_prob,
      "out/a_prob": a_prob, "out/v_prob": v_prob,
      "out/frame_prob": frame_prob, "cfg/num_heads": np.int32(1)})


def valor_han(root: str) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  with reference_path(os.path.join(root, "valor")):
    valor = importlib.import_module("main_network")
  gen = torch.Generator().manual_seed(5)
  audio = randn(gen, 2, T, 128)
  visual = randn(gen, 2, T, 2048)  # pooled ResNet-152 rows (fc_v then mean
  visual_st = randn(gen, 2, T, 512)  # equals mean then fc_v)
  arrays = {"in/audio": audio, "in/visual": visual, "in/visual_st": visual_st}
  for norm in ("post_norm", "pre_norm"):
    torch.manual_seed(87)
    args = argparse.Namespace(hidden_dim=32, input_a_dim=128,
                              input_v_dim=2048, nhead=4, ff_dim=64,
                              num_layers=2, norm_where=norm)
    model = valor.MMIL_Net(args)
    round_module(model)
    model.eval()
    with torch.no_grad():
      outs = model(audio, visual, visual_st)
    p = norm.split("_")[0]
    arrays.update({f"{p}/{k}": v for k, v in state_dict(model).items()})
    for k, x in zip(("global_prob", "a_prob", "v_prob", "frame_prob",
                     "frame_logits"), outs):
      arrays[f"{p}/out/{k}"] = x
  # VALOR's training loss (main_avvp.py train(): nn.BCELoss on the clamped
  # video probability + BCE-with-logits on its binary pseudo-labels), on
  # the post-norm model's outputs.
  weak = (torch.rand(2, C, generator=gen) < 0.3).float()
  weak[:, 0] = 1
  labels = {m: (torch.rand(2, T, C, generator=gen) < 0.5).float()
            * weak[:, None, :] for m in ("a", "v")}
  torch.manual_seed(87)
  model = valor.MMIL_Net(argparse.Namespace(
      hidden_dim=32, input_a_dim=128, input_v_dim=2048, nhead=4, ff_dim=64,
      num_layers=2, norm_where="post_norm"))
  round_module(model)
  model.eval()
  with torch.no_grad():
    output, _, _, _, frame_logits = model(audio, visual, visual_st)
    output.clamp_(min=1e-7, max=1 - 1e-7)
    loss_video = torch.nn.BCELoss()(output, weak)
    loss_a = torch.nn.functional.binary_cross_entropy_with_logits(
        frame_logits[:, :, 0], labels["a"])
    loss_v = torch.nn.functional.binary_cross_entropy_with_logits(
        frame_logits[:, :, 1], labels["v"])
  arrays.update({"in/weak": weak, "in/a_label": labels["a"],
                 "in/v_label": labels["v"], "out/loss_video": loss_video,
                 "out/loss_valor_a": loss_a, "out/loss_valor_v": loss_v,
                 "out/loss": loss_video + loss_a + loss_v})
  arrays["cfg/num_heads"] = np.int32(4)
  save("valor_han", arrays)


# -------------------------------------- whole model on a synthetic LLP set
SYNTHETIC = dict(seed=0, num_llp=(48, 16, 24), num_unav=(4, 2, 2))


def write_synthetic_llp(tmp: str) -> str:
  """ear-jax's synthetic LLP set (published layouts); returns its root."""
  from ear_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  synthetic.write_synthetic(tmp, **SYNTHETIC)
  return os.path.join(tmp, "LLP")


FINGERPRINT_FEATURES = ("vggish", "res152", "r2plus1d_18", "clip", "clap")


def data_fingerprint(llp: str) -> np.ndarray:
  """Sums of every test-split feature set and label of the synthetic set:
  the tests check them first, so a changed data/synthetic.py is named as
  the cause instead of showing up as a parity failure."""
  from ear_jax.data import avvp  # pylint: disable=g-import-not-at-top
  from ear_jax.data import features  # pylint: disable=g-import-not-at-top
  rec = avvp.read_llp_split(llp, "test")
  sums = [float(np.sum(features.load_segment_features(llp, name, rec.ids),
                       dtype=np.float64)) for name in FINGERPRINT_FEATURES]
  sums += [float(rec.weak.sum()), float(rec.gt_a.sum()), float(rec.gt_v.sum())]
  return np.asarray(sums, np.float64)


def uwav_generator_stage2(root: str) -> None:
  """UWAV's stage 2 with the uwav_generator fixture's weights on the
  synthetic LLP set: main_pretrain.py --mode pseudo_label_generation
  (calculate_classwise_thresholds on val, batch size 1; then (z > theta)
  & weak on every split)."""
  import torch  # pylint: disable=g-import-not-at-top
  from ear_jax.data import avvp  # pylint: disable=g-import-not-at-top
  with reference_path(os.path.join(root, "uwav")):
    eval_utils = importlib.import_module("utils.eval_utils")
  with np.load(os.path.join(OUT_DIR, "uwav_generator.npz")) as f:
    sd = {k[3:]: torch.from_numpy(f[k].astype(np.float32))
          for k in f.files if k.startswith("sd/")}
    heads, layers = int(f["cfg/num_heads"]), 2
  with tempfile.TemporaryDirectory() as tmp:
    llp = write_synthetic_llp(tmp)
    fingerprint = data_fingerprint(llp)
    text = {m: torch.from_numpy(np.load(os.path.join(
        llp, f"feats_{m}", "event_feats", "all_event_feats.npy")))
            for m in ("CLIP", "CLAP")}
    recs, feats = {}, {}
    for split in ("train", "val", "test"):
      recs[split] = avvp.read_llp_split(llp, split)
      feats[split] = {m: torch.from_numpy(np.stack([np.load(os.path.join(
          llp, f"feats_{m}", "segment_feats", f"{i}.npy"))
          for i in recs[split].ids]).astype(np.float32))
                      for m in ("CLIP", "CLAP")}
  with reference_path(os.path.join(root, "uwav")):
    tt = importlib.import_module("model.TemporalTransformer")
  model = tt.TemporalTransformer(
      input_v_2d_dim=768, input_v_3d_dim=1024, input_a_dim=512,
      hidden_dim=sd["proj_a.layers.1.weight"].shape[0], nhead=heads,
      ff_dim=sd["a_transformer.encoder.layers.0.linear1.weight"].shape[0],
      num_layers=layers, dropout=0.3, clap_event_feats=text["CLAP"],
      clip_event_feats=text["CLIP"])
  model.load_state_dict(sd)
  model.eval()

  def batches(split):
    rec = recs[split]
    for i in range(len(rec.ids)):
      yield dict(clip_feat=feats[split]["CLIP"][i:i + 1],
                 clap_feat=feats[split]["CLAP"][i:i + 1],
                 valid_mask=torch.ones(1, T),
                 attn_mask=torch.ones(1, T, T, dtype=torch.bool),
                 weak_label=torch.from_numpy(rec.weak[i:i + 1].astype(
                     np.float32)), duration=torch.tensor([T]),
                 gt_a_label=torch.from_numpy(rec.gt_a[i:i + 1].transpose(
                     0, 2, 1).astype(np.float32)),
                 gt_v_label=torch.from_numpy(rec.gt_v[i:i + 1].transpose(
                     0, 2, 1).astype(np.float32)))

  class Loader(list):
    dataset = types.SimpleNamespace(categories=list(range(C)))

  args = argparse.Namespace(dataset="LLP", threshold_type="classwise")
  theta_a, theta_v = eval_utils.calculate_classwise_thresholds(
      args, model, Loader(batches("val")), "cpu")
  arrays = {"out/theta_a": theta_a, "out/theta_v": theta_v,
            "cfg/layers": np.int32(layers), "in/data_fingerprint": fingerprint}
  with torch.no_grad():
    for split in ("train", "val", "test"):
      a, v = model(feats[split]["CLAP"], feats[split]["CLIP"])
      w = torch.from_numpy(recs[split].weak)[:, None, :] > 0
      arrays[f"out/{split}/a_logit"] = a
      arrays[f"out/{split}/v_logit"] = v
      arrays[f"out/{split}/a_label"] = ((a > theta_a) & w).to(torch.uint8)
      arrays[f"out/{split}/v_label"] = ((v > theta_v) & w).to(torch.uint8)
  save("uwav_generator_stage2", arrays)


def uwav_han_synthetic(root: str) -> None:
  """A UWAV HAN trained briefly by the reference code on ear-jax's synthetic
  LLP set, then its test predictions (HybridAttentionNet.get_pred, batch 1
  as main.py evaluates) and UWAV's ten metrics on them."""
  import torch  # pylint: disable=g-import-not-at-top
  from ear_jax.data import avvp  # pylint: disable=g-import-not-at-top
  with reference_path(os.path.join(root, "uwav")):
    han_mod = importlib.import_module("model.HAN")
    eval_utils = importlib.import_module("utils.eval_utils")
    metrics = importlib.import_module("utils.eval_metrics")
  seed, sizes = SYNTHETIC["seed"], SYNTHETIC["num_llp"]
  with tempfile.TemporaryDirectory() as tmp:
    llp = write_synthetic_llp(tmp)
    fingerprint = data_fingerprint(llp)

    def load(split):
      rec = avvp.read_llp_split(llp, split)
      feats = {name: torch.from_numpy(np.stack([
          np.load(os.path.join(llp, "feats", name, f"{i}.npy"))
          for i in rec.ids]).astype(np.float32))
               for name in ("vggish", "res152", "r2plus1d_18")}
      return rec, feats

    train_rec, train = load("train")
    test_rec, test = load("test")
  arch = dict(input_v_2d_dim=2048, input_v_3d_dim=512, input_a_dim=128,
              hidden_dim=32, nhead=4, ff_dim=64, num_han_layers=2,
              num_proj_layers=1, num_MMIL_layers=1, dropout=0.1)
  torch.manual_seed(0)
  model = han_mod.HybridAttentionNet(num_classes=C, **arch)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
  args = argparse.Namespace(cal_video_loss=True, cal_segment_loss=False,
                            cal_mixup_loss=False, segment_loss_weight=1.0,
                            mixup_loss_weight=1.0)
  weak = torch.from_numpy(train_rec.weak.astype(np.float32))
  model.train()
  for _ in range(150):  # main.py's train() body, full-batch
    optimizer.zero_grad()
    outs = model(train["vggish"], train["res152"],
                 vis_3d_feat=train["r2plus1d_18"])
    loss, _ = model.calculate_loss(args, outs, (weak, None, None), None)
    loss.backward()
    optimizer.step()
  model.eval()
  pred_a, pred_v = [], []
  evaluator = eval_utils.AVVPEvaluator()
  with torch.no_grad():
    for i in range(len(test_rec.ids)):  # main.py eval(): batch size 1
      outs = model(test["vggish"][i:i + 1], test["res152"][i:i + 1],
                   vis_3d_feat=test["r2plus1d_18"][i:i + 1])
      pa, pv, pav = model.get_pred(outs)  # (C, T)
      ga = test_rec.gt_a[i].astype(np.float64)
      gv = test_rec.gt_v[i].astype(np.float64)
      evaluator.update("segment", *metrics.segment_level(
          pa, pv, pav, ga, gv, ga * gv))
      evaluator.update("event", *metrics.event_level(
          pa, pv, pav, ga, gv, ga * gv))
      pred_a.append(pa.astype(np.uint8))
      pred_v.append(pv.astype(np.uint8))
  scores = evaluator.output_result()
  print("UWAV HAN on synthetic test:", {k: round(v, 2) for k, v in
                                        scores.items()})
  arrays = state_dict(model)
  arrays.update({
      "cfg/seed": np.int32(seed), "cfg/num_llp": np.asarray(sizes, np.int32),
      "cfg/num_heads": np.int32(arch["nhead"]),
      "in/data_fingerprint": fingerprint,
      "out/pred_a": np.stack(pred_a), "out/pred_v": np.stack(pred_v)})
  names = {"Seg-a": "seg_a", "Seg-v": "seg_v", "Seg-av": "seg_av",
           "Seg-type": "seg_type", "Seg-event": "seg_event",
           "Event-a": "evt_a", "Event-v": "evt_v", "Event-av": "evt_av",
           "Event-type": "evt_type", "Event-event": "evt_event"}
  arrays.update({f"out/metrics/{names[k]}": np.float64(v)
                 for k, v in scores.items()})
  save("uwav_han_synthetic", arrays)


# ------------------------------------------------ training trajectories
# Whole runs, step by step: N videos in batches of B (the last one partial,
# as UWAV's DataLoader keeps it), E epochs of warm-up + cosine, a fixed
# batch order per epoch (in/order), dropout p = 0, no mixup.
TRAJECTORY = dict(num_videos=18, batch_size=4, epochs=11)  # 5 x 11 = 55 steps


def _grid(gen, *shape, scale=1.0):
  """Gaussian inputs on a 1/8 grid (float16-exact, small npz files)."""
  import torch  # pylint: disable=g-import-not-at-top
  return torch.round(torch.randn(*shape, generator=gen) * scale * 8) / 8


def _epoch_orders(seed: int, epochs: int, n: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.stack([rng.permutation(n) for _ in range(epochs)]).astype(np.int32)


def _train_uwav_loop(model, opt_cfg: dict, orders: np.ndarray, batch_size: int,
                     loss_of, train_utils) -> dict:
  """UWAV's training as main.py / main_pretrain.py run it: AdamW, the
  WarmUpCosineAnnealingLR stepped once per epoch, and train()'s body per
  batch (zero_grad, loss, backward, clip_grad_norm_, step), over the given
  batch order instead of a shuffling DataLoader. Returns the per-step
  loss, learning rate and pre-clipping gradient norm, and the final state
  dict."""
  import torch  # pylint: disable=g-import-not-at-top
  optimizer = torch.optim.AdamW(
      model.parameters(), lr=opt_cfg["lr"],
      weight_decay=opt_cfg["weight_decay"],
      betas=(opt_cfg["beta1"], opt_cfg["beta2"]), eps=opt_cfg["eps"])
  scheduler = train_utils.WarmUpCosineAnnealingLR(
      optimizer, opt_cfg["warm_up_epoch"], opt_cfg["epochs"],
      opt_cfg["lr_min"], opt_cfg["lr"])
  losses, lrs, norms = [], [], []
  for order in orders:
    model.train()
    for start in range(0, len(order), batch_size):
      idx = torch.from_numpy(order[start:start + batch_size]).long()
      optimizer.zero_grad()
      loss = loss_of(idx)
      loss.backward()
      norms.append(float(torch.nn.utils.clip_grad_norm_(
          model.parameters(), opt_cfg["grad_norm"])))
      lrs.append(optimizer.param_groups[0]["lr"])
      optimizer.step()
      losses.append(loss.item())
    scheduler.step()
  return {"out/loss": np.asarray(losses, np.float64),
          "out/lr": np.asarray(lrs, np.float64),
          "out/grad_norm": np.asarray(norms, np.float64),
          **{f"final/{k}": v.detach().clone().numpy() for k, v in
             model.state_dict().items()}}


def uwav_han_trajectory(root: str) -> None:
  """55 steps of UWAV's stage-3 HAN training (train_han.sh's losses:
  video BCE + uncertainty-weighted, class-balanced segment BCE; mixup off)
  on random inputs and stage-2 logits."""
  import torch  # pylint: disable=g-import-not-at-top
  with reference_path(os.path.join(root, "uwav")):
    han_mod = importlib.import_module("model.HAN")
    train_utils = importlib.import_module("utils.train_utils")
  N, B, E = (TRAJECTORY[k] for k in ("num_videos", "batch_size", "epochs"))
  gen = torch.Generator().manual_seed(6)
  # train_han.sh's architecture at width 16; a 16-d stand-in for the
  # 2048-d ResNet-152 rows keeps the file small (fc_fusion reads 2D + 3D).
  arch = dict(input_v_2d_dim=16, input_v_3d_dim=512, input_a_dim=128,
              hidden_dim=16, nhead=2, ff_dim=32, num_han_layers=2,
              num_proj_layers=1, num_MMIL_layers=1, dropout=0.0)
  model = _uwav_han(han_mod, 20000, **arch)
  audio, vis_2d, vis_3d = (_grid(gen, N, T, 128), _grid(gen, N, T, 16),
                           _grid(gen, N, T, 512))
  weak = torch.zeros(N, C)
  for b in range(N):
    weak[b, torch.randperm(C, generator=gen)[:1 + b % 3]] = 1
  logits = {m: _grid(gen, N, T, C, scale=3.0) for m in ("a", "v")}
  theta = {m: _grid(gen, C) for m in ("a", "v")}
  theta["a"][[1, 5]] = float("-inf")  # "every weak-label segment positive"
  theta["v"][[2]] = float("-inf")
  # Stage-2 binary labels (z > theta) & weak, and the class frequencies
  # LLP_Dataset.get_class_freq computes from them (float64).
  hard = {m: ((logits[m] > theta[m]) & (weak[:, None, :] > 0)).float()
          for m in ("a", "v")}
  freq = {m: torch.from_numpy(hard[m].numpy().astype(np.float64).sum(
      (0, 1)) / (N * T)) for m in ("a", "v")}
  args = _loss_args(soft=True, reweight=True)
  args.cal_mixup_loss = False
  attn = torch.ones(N, T, T, dtype=torch.bool)  # LLP loader: nothing masked
  valid = torch.ones(N, T)

  def loss_of(idx):
    outs = model(audio[idx], vis_2d[idx], vis_3d_feat=vis_3d[idx],
                 attn_mask=attn[idx])
    loss, _ = model.calculate_loss(
        args, outs, (weak[idx], hard["a"][idx], hard["v"][idx]), valid[idx],
        a_logits=logits["a"][idx], v_logits=logits["v"][idx],
        a_thresholds=theta["a"], v_thresholds=theta["v"],
        a_class_freq=freq["a"], v_class_freq=freq["v"])
    return loss

  opt_cfg = dict(lr=3e-3, lr_min=1e-4, warm_up_epoch=3, epochs=E,
                 weight_decay=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                 grad_norm=1.0)
  orders = _epoch_orders(6, E, N)
  arrays = {**state_dict(model), "in/audio": audio, "in/vis_2d": vis_2d,
            "in/vis_3d": vis_3d, "in/weak": weak, "in/a_logit": logits["a"],
            "in/v_logit": logits["v"], "in/theta_a": theta["a"],
            "in/theta_v": theta["v"], "in/a_label": hard["a"],
            "in/v_label": hard["v"], "in/freq_a": freq["a"],
            "in/freq_v": freq["v"], "in/order": orders,
            "cfg/num_heads": np.int32(arch["nhead"]),
            "cfg/batch_size": np.int32(B),
            "cfg/pos_weight": np.float64(args.pos_weight),
            **{f"cfg/{k}": np.float64(v) for k, v in opt_cfg.items()}}
  arrays.update(_train_uwav_loop(model, opt_cfg, orders, B, loss_of,
                                 train_utils))
  _report_trajectory("uwav_han_trajectory", arrays, opt_cfg)
  save("uwav_han_trajectory", arrays)


def uwav_generator_trajectory(root: str) -> None:
  """55 steps of UWAV's stage-1 training (train_transformer.sh's loss: the
  weighted, masked BCE of sigma(z_a) sigma(z_v)) on random UnAV-like
  videos of 2 to 8 segments padded to 8."""
  import torch  # pylint: disable=g-import-not-at-top
  with reference_path(os.path.join(root, "uwav")):
    tt = importlib.import_module("model.TemporalTransformer")
    train_utils = importlib.import_module("utils.train_utils")
  N, B, E = (TRAJECTORY[k] for k in ("num_videos", "batch_size", "epochs"))
  gen = torch.Generator().manual_seed(7)
  num_classes, L, Da, Dv = 10, 8, 32, 48
  text_a = torch.nn.functional.normalize(torch.randn(num_classes, Da,
                                                     generator=gen), dim=-1)
  text_v = torch.nn.functional.normalize(torch.randn(num_classes, Dv,
                                                     generator=gen), dim=-1)
  torch.manual_seed(1000)
  model = tt.TemporalTransformer(
      input_v_2d_dim=Dv, input_v_3d_dim=1024, input_a_dim=Da, hidden_dim=16,
      nhead=2, ff_dim=32, num_layers=2, dropout=0.0,
      clap_event_feats=text_a, clip_event_feats=text_v)
  # final_proj_{a,v} are MLP(d, 512, 512) / MLP(d, 768, 768) for CLAP/CLIP
  # text rows; the same class at the stand-in widths Da, Dv (as the
  # han_eccv20 fixture narrows MMIL_Net's layers).
  model.final_proj_a = tt.MLP(16, Da, Da, num_layers=2)
  model.final_proj_v = tt.MLP(16, Dv, Dv, num_layers=2)
  round_module(model)
  lengths = torch.randint(2, L + 1, (N,), generator=gen)
  valid = (torch.arange(L)[None] < lengths[:, None]).float()  # (N, L)
  attn = valid.bool()[:, :, None] & valid.bool()[:, None, :]  # UnAV loader
  clap = _grid(gen, N, L, Da) * valid[..., None]  # zero padding
  clip = _grid(gen, N, L, Dv) * valid[..., None]
  y_av = (torch.rand(N, L, num_classes, generator=gen) < 0.2).float()
  y_av = y_av * valid[..., None]
  args = argparse.Namespace(pos_weight=5.0, neg_weight=1.0)

  def loss_of(idx):
    outs = model(clap[idx], clip[idx], valid_mask=valid[idx],
                 attn_mask=attn[idx])
    loss, _ = model.calculate_loss(args, outs, y_av[idx], valid[idx])
    return loss

  opt_cfg = dict(lr=3e-3, lr_min=1e-4, warm_up_epoch=3, epochs=E,
                 weight_decay=1e-3, beta1=0.5, beta2=0.999, eps=1e-8,
                 grad_norm=2.0)
  orders = _epoch_orders(7, E, N)
  arrays = {**state_dict(model), "in/text_a": text_a, "in/text_v": text_v,
            "in/clap": clap, "in/clip": clip, "in/valid": valid,
            "in/y_av": y_av, "in/order": orders,
            "cfg/num_heads": np.int32(2), "cfg/batch_size": np.int32(B),
            "cfg/pos_weight": np.float64(5.0),
            "cfg/neg_weight": np.float64(1.0),
            **{f"cfg/{k}": np.float64(v) for k, v in opt_cfg.items()}}
  arrays.update(_train_uwav_loop(model, opt_cfg, orders, B, loss_of,
                                 train_utils))
  _report_trajectory("uwav_generator_trajectory", arrays, opt_cfg)
  save("uwav_generator_trajectory", arrays)


def _report_trajectory(name: str, arrays: dict, opt_cfg: dict) -> None:
  loss, norm = arrays["out/loss"], arrays["out/grad_norm"]
  clipped = int(np.sum(norm > opt_cfg["grad_norm"]))
  print(f"{name}: {len(loss)} steps, loss {loss[0]:.4f} -> {loss[-1]:.4f},"
        f" clipped in {clipped} steps, lr {sorted(set(arrays['out/lr']))}")


# ------------------------------------- published sizes (printed, not saved)
def full_size(root: str) -> None:
  """Random reference models at their published sizes, imported through
  ear_jax.torch_import; prints the largest relative output difference.
  Writes nothing (8M-parameter state dicts do not belong in the repo)."""
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from ear_jax.configs import stage1  # pylint: disable=g-import-not-at-top
  from ear_jax.configs import stage3  # pylint: disable=g-import-not-at-top
  from ear_jax import torch_import  # pylint: disable=g-import-not-at-top
  from ear_jax import trainer  # pylint: disable=g-import-not-at-top
  from ear_jax.data import features  # pylint: disable=g-import-not-at-top
  with reference_path(os.path.join(root, "uwav")):
    han_mod = importlib.import_module("model.HAN")
    tt = importlib.import_module("model.TemporalTransformer")
  with reference_path(os.path.join(root, "han")):
    net = importlib.import_module("nets.net_audiovisual")
  with reference_path(os.path.join(root, "valor")):
    valor = importlib.import_module("main_network")
  jax.config.update("jax_default_matmul_precision", "highest")
  torch.manual_seed(0)
  B = 2
  audio, res, st = (torch.randn(B, T, 128), torch.randn(B, 8 * T, 2048),
                    torch.randn(B, T, 512))
  pooled = np.stack([features.adaptive_avg_pool1d(x, T) for x in
                     res.numpy()]).astype(np.float32)
  batch = {"audio": audio.numpy(),
           "visual": np.concatenate([pooled, st.numpy()], -1)}

  def rel(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), _np(theirs).astype(
        np.float64)
    return np.abs(ours - theirs).max() / np.abs(theirs).max()

  def parser(source, model, outs, keys):
    with torch.no_grad():
      ref = model.eval()(*outs)
    sd = torch_import.state_dict_to_numpy(model.state_dict())
    _, graphdef, weights = torch_import.convert(source, sd,
                                                stage3.get_config())
    out = trainer.merge(graphdef, weights)(batch, deterministic=True)
    print(f"{source} (published size): {max(rel(out[k], r) for k, r in zip(keys, ref)):.2e}")

  keys = ("global_prob", "a_prob", "v_prob", "a_logits", "v_logits")
  parser("uwav_han", han_mod.HybridAttentionNet(  # scripts/train_han.sh
      num_classes=C, input_v_2d_dim=2048, input_v_3d_dim=512,
      input_a_dim=128, hidden_dim=512, nhead=16, ff_dim=2048,
      num_han_layers=5, num_proj_layers=1, num_MMIL_layers=1),
         (audio, res, st), keys)
  parser("han_eccv20", net.MMIL_Net(), (audio, res, st), keys[:3])
  parser("valor_han", valor.MMIL_Net(argparse.Namespace(  # train_valor.sh
      hidden_dim=512, input_a_dim=128, input_v_dim=2048, nhead=8,
      ff_dim=1024, num_layers=1, norm_where="post_norm")),
         (audio, res, st), keys[:3])
  text_a = torch.nn.functional.normalize(torch.randn(C, 512), dim=-1)
  text_v = torch.nn.functional.normalize(torch.randn(C, 768), dim=-1)
  model = tt.TemporalTransformer(  # scripts/train_transformer.sh
      input_v_2d_dim=768, input_v_3d_dim=1024, input_a_dim=512,
      hidden_dim=1024, nhead=16, ff_dim=2048, num_layers=5, dropout=0.3,
      clap_event_feats=text_a, clip_event_feats=text_v).eval()
  clap, clip = torch.randn(B, T, 512), torch.randn(B, T, 768)
  with torch.no_grad():
    z_a, z_v = model(clap, clip, attn_mask=torch.ones(B, T, T,
                                                      dtype=torch.bool))
  _, graphdef, weights = torch_import.convert(
      "uwav_generator", torch_import.state_dict_to_numpy(model.state_dict()),
      stage1.get_config())
  out = trainer.merge(graphdef, weights)(
      {"clap": clap.numpy(), "clip": clip.numpy(),
       "valid": np.ones((B, T), np.float32)}, text_a.numpy(),
      text_v.numpy(), deterministic=True)
  print(f"uwav_generator (published size): "
        f"{max(rel(out['z_a'], z_a), rel(out['z_v'], z_v)):.2e}")


FIXTURES = {
    "uwav_generator": uwav_generator,
    "uwav_generator_stage2": uwav_generator_stage2,
    "uwav_han": uwav_han,
    "uwav_thresholds": uwav_thresholds,
    "han_eccv20": han_eccv20,
    "valor_han": valor_han,
    "uwav_han_synthetic": uwav_han_synthetic,
    "uwav_han_trajectory": uwav_han_trajectory,
    "uwav_generator_trajectory": uwav_generator_trajectory,
}
CHECKS = {"full_size": full_size}  # --only=full_size; not in the default
# The checkouts each job reads (others: uwav/ only).
NEEDS = {"han_eccv20": ("han",), "valor_han": ("valor",),
         "full_size": ("uwav", "han", "valor")}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reference_root", required=True,
                      help="folder with uwav/, han/ and valor/ checkouts")
  parser.add_argument("--only", default="",
                      help=f"comma-separated subset of {sorted(FIXTURES)},"
                      " or full_size (prints published-size parity)")
  args = parser.parse_args()
  names = [n for n in args.only.split(",") if n] or list(FIXTURES)
  jobs = dict(FIXTURES, **CHECKS)
  for name in names:
    if name not in jobs:
      sys.exit(f"--only: unknown fixture {name!r}; one of {sorted(jobs)}")
  for sub in sorted({s for n in names for s in NEEDS.get(n, ("uwav",))}):
    if not os.path.isdir(os.path.join(args.reference_root, sub)):
      sys.exit(f"--reference_root={args.reference_root} has no {sub}/"
               " checkout (see this script's docstring).")
  sys.path.insert(0, REPO)  # ear_jax.data writes the synthetic LLP set
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)  # deterministic reductions
  for name in names:
    jobs[name](args.reference_root)


if __name__ == "__main__":
  main()
