"""HAN baseline parser (UWAV config): projections, hybrid attention encoder
with shared a/v layer weights, and the attentive MMIL head shared with EAR."""

# pylint: disable=invalid-name

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from ear_jax.models import layers as layers_lib


AUDIO_PROJ = ("mlp", "linear")
VISUAL_PROJ = ("linear", "mlp", "none", "split")
HAN_NORM = ("post", "pre")
HAN_UPDATE = ("sequential", "eccv20")


def _opt(cfg, name: str, default):
  """cfg.name, or `default` for configs written before the switch existed."""
  return getattr(cfg, name, default)


def _check_choice(name: str, value, choices):
  if value not in choices:
    raise ValueError(f"config.model.{name}={value!r}; expected one of"
                     f" {choices}.")


class Projections(nnx.Module):
  """Static features S_a, S_v (docs/METHOD.md, "HAN").

  cfg.audio_proj: "mlp" (default, UWAV fc_a): Linear(in_a ->
  audio_proj_hidden), ReLU, Linear(-> d) | "linear" (HAN-ECCV20 / VALOR
  fc_a): one Linear(in_a -> d).
  cfg.visual_proj on the concatenated 2D+3D features:
    "linear" (default, UWAV num_proj_layers=1): one Linear(in_v -> d);
    "mlp" (UWAV num_proj_layers=2): Linear(in_v -> visual_proj_hidden),
      ReLU, Linear(-> d);
    "none" (UWAV on CLIP without 3D): the features as they are (in_v = d);
    "split" (HAN-ECCV20 / VALOR): Linear(2D -> d) and Linear(3D -> d) on
      the two parts (the last visual_3d_dim channels are 3D), concatenated,
      then Linear(2d -> d).
  """

  def __init__(self, cfg, in_dim_a: int, in_dim_v: int, *, rngs: nnx.Rngs):
    dtype = layers_lib.get_dtype(cfg.dtype)
    d = cfg.hidden_dim
    self.audio_mode = _opt(cfg, "audio_proj", "mlp")
    self.visual_mode = _opt(cfg, "visual_proj", "linear")
    _check_choice("audio_proj", self.audio_mode, AUDIO_PROJ)
    _check_choice("visual_proj", self.visual_mode, VISUAL_PROJ)
    if self.audio_mode == "mlp":
      self.audio = layers_lib.MLP(
          in_dim_a, cfg.audio_proj_hidden, d, dtype=dtype, rngs=rngs
      )
    else:
      self.audio = layers_lib.Dense(in_dim_a, d, dtype=dtype, rngs=rngs)
    if self.visual_mode == "linear":
      self.visual = layers_lib.Dense(in_dim_v, d, dtype=dtype, rngs=rngs)
    elif self.visual_mode == "mlp":
      self.visual = layers_lib.MLP(
          in_dim_v, cfg.visual_proj_hidden, d, dtype=dtype, rngs=rngs
      )
    elif self.visual_mode == "none":
      if in_dim_v != d:
        raise ValueError(
            f"config.model.visual_proj='none' uses the visual features as"
            f" they are, so their dim {in_dim_v} must equal hidden_dim={d}."
        )
    else:
      self.dim_3d = int(cfg.visual_3d_dim)
      if not 0 < self.dim_3d < in_dim_v:
        raise ValueError(
            f"config.model.visual_3d_dim={self.dim_3d} must be in (0,"
            f" {in_dim_v}) for visual_proj='split' (the 3D channels are the"
            " last ones of the visual input)."
        )
      self.visual_2d = layers_lib.Dense(
          in_dim_v - self.dim_3d, d, dtype=dtype, rngs=rngs
      )
      self.visual_3d = layers_lib.Dense(self.dim_3d, d, dtype=dtype, rngs=rngs)
      self.fusion = layers_lib.Dense(2 * d, d, dtype=dtype, rngs=rngs)
    self.in_dim_a, self.in_dim_v = in_dim_a, in_dim_v

  def __call__(self, batch) -> tuple[jax.Array, jax.Array]:
    audio, visual = batch["audio"], batch["visual"]
    if audio.shape[-1] != self.in_dim_a or visual.shape[-1] != self.in_dim_v:
      raise ValueError(
          f"batch audio/visual dims {audio.shape[-1]}/{visual.shape[-1]}; the"
          f" model was built for {self.in_dim_a}/{self.in_dim_v}. Check the"
          " feature set in the config."
      )
    f32 = jnp.float32
    s_a = self.audio(audio.astype(f32)).astype(f32)
    visual = visual.astype(f32)
    if self.visual_mode == "none":
      return s_a, visual
    if self.visual_mode == "split":
      split = self.in_dim_v - self.dim_3d
      s_2d = self.visual_2d(visual[..., :split]).astype(f32)
      s_3d = self.visual_3d(visual[..., split:]).astype(f32)
      s_v = self.fusion(jnp.concatenate([s_2d, s_3d], axis=-1))
      return s_a, s_v.astype(f32)
    return s_a, self.visual(visual).astype(f32)


class HANLayer(nnx.Module):
  """Hybrid attention layer (query x, other modality y).

  post-norm (default): x = LN1(x + Drop(MCA(x, y)) + Drop(MSA(x)));
    x = LN2(x + Drop(FFN(x))).
  pre-norm (UWAV/VALOR pre_norm): n = LN1(x);
    x = x + Drop(MCA(n, y)) + Drop(MSA(n)); x = x + Drop(FFN(LN2(x))).
  """

  def __init__(self, dim, num_heads, ffn_dim, *, dropout, dtype=None,
               pre_norm: bool = False, rngs):
    self.rate = dropout
    self.pre_norm = pre_norm
    kw = dict(dropout=dropout, dtype=dtype, rngs=rngs)
    self.cross_attn = layers_lib.MultiHeadAttention(dim, num_heads, **kw)
    self.self_attn = layers_lib.MultiHeadAttention(dim, num_heads, **kw)
    self.ffn = layers_lib.FeedForward(dim, ffn_dim, **kw)
    self.norm1 = layers_lib.layer_norm(dim, rngs=rngs)
    self.norm2 = layers_lib.layer_norm(dim, rngs=rngs)
    self.dropout = layers_lib.Dropout(dropout)

  def __call__(self, x_BxTxD, y_BxTxD, *, deterministic, rngs=None):
    kw = dict(deterministic=deterministic, rngs=rngs)
    if self.pre_norm:
      n = self.norm1(x_BxTxD)
      c = self.cross_attn(n, y_BxTxD, **kw)
      s = self.self_attn(n, n, **kw)
      x = x_BxTxD + self.dropout(c, **kw) + self.dropout(s, **kw)
      return x + self.dropout(self.ffn(self.norm2(x), **kw), **kw)
    c = self.cross_attn(x_BxTxD, y_BxTxD, **kw)
    s = self.self_attn(x_BxTxD, x_BxTxD, **kw)
    x = self.norm1(x_BxTxD + self.dropout(c, **kw) + self.dropout(s, **kw))
    return self.norm2(x + self.dropout(self.ffn(x, **kw), **kw))


class HANEncoder(nnx.Module):
  """Stack of HANLayers; layer i is shared by the audio and visual passes.

  cfg.han_update "sequential" (default, UWAV/VALOR): inside each layer
  a <- L_i(a, v), then v <- L_i(v, a_new), so the visual pass sees the
  updated audio. "eccv20" (the original HAN code): every layer reads the
  encoder inputs, a_out = L_i(a_0, v_0), v_out = L_i(v_0, a_0), and the last
  layer's outputs are returned.
  cfg.han_norm "post" (default) | "pre": pre-norm layers and a final
  LayerNorm per modality (final_norm_a, final_norm_v).
  """

  def __init__(self, cfg, num_layers: int, *, rngs: nnx.Rngs):
    dtype = layers_lib.get_dtype(cfg.dtype)
    self.rate = cfg.dropout
    self.update = _opt(cfg, "han_update", "sequential")
    norm = _opt(cfg, "han_norm", "post")
    _check_choice("han_update", self.update, HAN_UPDATE)
    _check_choice("han_norm", norm, HAN_NORM)
    self.pre_norm = norm == "pre"
    self.layers = layers_lib.stack_layers(
        lambda r: HANLayer(
            cfg.hidden_dim,
            cfg.num_heads,
            cfg.ffn_dim,
            dropout=cfg.dropout,
            dtype=dtype,
            pre_norm=self.pre_norm,
            rngs=r,
        ),
        num_layers,
        identical=getattr(cfg, "identical_layer_init", False),
        rngs=rngs,
    )
    if self.pre_norm:
      self.final_norm_a = layers_lib.layer_norm(cfg.hidden_dim, rngs=rngs)
      self.final_norm_v = layers_lib.layer_norm(cfg.hidden_dim, rngs=rngs)

  def __call__(self, a_BxTxD, v_BxTxD, *, deterministic, rngs=None):
    layers_lib.check_rngs(deterministic, rngs, self.rate, "HANEncoder")
    kw = dict(deterministic=deterministic, rngs=rngs)
    a0, v0 = a_BxTxD, v_BxTxD
    for layer in self.layers:
      if self.update == "eccv20":
        a_BxTxD, v_BxTxD = layer(a0, v0, **kw), layer(v0, a0, **kw)
      else:
        a_BxTxD = layer(a_BxTxD, v_BxTxD, **kw)
        v_BxTxD = layer(v_BxTxD, a_BxTxD, **kw)
    if self.pre_norm:
      a_BxTxD = self.final_norm_a(a_BxTxD)
      v_BxTxD = self.final_norm_v(v_BxTxD)
    return a_BxTxD, v_BxTxD


class MMILHead(nnx.Module):
  """Shared classifier fc_prob + attentive MMIL pooling over time, modality.

  X = stack(a, v) on axis 2 (index 0 = audio). Frame probabilities
  sigmoid(fc_prob(X)); time weights softmax over T of fc_frame_att(X);
  modality weights softmax over the size-2 axis of fc_av_att(X).
  att_hidden > 0 makes fc_frame_att and fc_av_att MLPs (Linear(d ->
  att_hidden), ReLU, Linear(-> C)), UWAV's num_MMIL_layers=2.
  """

  def __init__(self, dim: int, num_classes: int, *, dtype=None,
               att_hidden: int = 0, rngs):
    kw = dict(dtype=dtype, rngs=rngs)
    self.fc_prob = layers_lib.Dense(dim, num_classes, **kw)
    if att_hidden:
      self.fc_frame_att = layers_lib.MLP(dim, att_hidden, num_classes, **kw)
      self.fc_av_att = layers_lib.MLP(dim, att_hidden, num_classes, **kw)
    else:
      self.fc_frame_att = layers_lib.Dense(dim, num_classes, **kw)
      self.fc_av_att = layers_lib.Dense(dim, num_classes, **kw)

  def classify(self, feat_xD: jax.Array) -> jax.Array:
    """Segment logits from features [..., d] (float32)."""
    return self.fc_prob(feat_xD).astype(jnp.float32)

  def __call__(self, a_BxTxD, v_BxTxD) -> dict[str, jax.Array]:
    x_BxTx2xD = jnp.stack([a_BxTxD, v_BxTxD], axis=2)
    logits_BxTx2xC = self.classify(x_BxTx2xD)
    frame_prob = jax.nn.sigmoid(logits_BxTx2xC)
    frame_att = jax.nn.softmax(
        self.fc_frame_att(x_BxTx2xD).astype(jnp.float32), axis=1
    )
    av_att = jax.nn.softmax(
        self.fc_av_att(x_BxTx2xD).astype(jnp.float32), axis=2
    )
    temporal_BxTx2xC = frame_att * frame_prob
    return dict(
        global_prob=jnp.sum(temporal_BxTx2xC * av_att, axis=(1, 2)),
        a_prob=jnp.sum(temporal_BxTx2xC[:, :, 0], axis=1),
        v_prob=jnp.sum(temporal_BxTx2xC[:, :, 1], axis=1),
        a_logits=logits_BxTx2xC[:, :, 0],
        v_logits=logits_BxTx2xC[:, :, 1],
        frame_att=frame_att,
        av_att=av_att,
    )


OUTPUT_KEYS = (
    "global_prob",
    "a_prob",
    "v_prob",
    "a_logits",
    "v_logits",
    "a_feat",
    "v_feat",
)


def head_outputs(head: MMILHead, a_feat, v_feat) -> dict[str, jax.Array]:
  """The 7 parser outputs of ARCHITECTURE.md from the final features."""
  out = head(a_feat, v_feat)
  out = {k: out[k] for k in OUTPUT_KEYS[:5]}
  out.update(a_feat=a_feat, v_feat=v_feat)
  return out


class HAN(nnx.Module):
  """HAN parser as UWAV's train_han.sh runs it (docs/METHOD.md, "HAN").

  The audio_proj / visual_proj / han_norm / han_update / mmil_att_hidden
  switches (defaults: UWAV) also give UWAV's other variants, the original
  HAN (AVVP-ECCV20) and VALOR's HAN, so their checkpoints import exactly.
  """

  def __init__(
      self, cfg, in_dim_a: int, in_dim_v: int, num_classes: int, *, rngs
  ):
    dtype = layers_lib.get_dtype(cfg.dtype)
    self.proj = Projections(cfg, in_dim_a, in_dim_v, rngs=rngs)
    self.encoder = HANEncoder(cfg, cfg.han_layers, rngs=rngs)
    self.head = MMILHead(cfg.hidden_dim, num_classes, dtype=dtype,
                         att_hidden=_opt(cfg, "mmil_att_hidden", 0),
                         rngs=rngs)

  def classify(self, feat_xD: jax.Array) -> jax.Array:
    return self.head.classify(feat_xD)

  def __call__(self, batch, *, deterministic: bool, rngs=None):
    s_a, s_v = self.proj(batch)
    a, v = self.encoder(s_a, s_v, deterministic=deterministic, rngs=rngs)
    return head_outputs(self.head, a, v)
