"""HAN baseline parser (UWAV config): projections, hybrid attention encoder
with shared a/v layer weights, and the attentive MMIL head shared with EAR."""

# pylint: disable=invalid-name

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from ear_jax.models import layers as layers_lib


class Projections(nnx.Module):
  """Static features S_a, S_v (spec STAGE3 §2 steps 1-2).

  Audio: Linear(in_a -> audio_proj_hidden), ReLU, Linear(-> d).
  Visual: one Linear(in_v -> d) on the concatenated 2D+3D features.
  """

  def __init__(self, cfg, in_dim_a: int, in_dim_v: int, *, rngs: nnx.Rngs):
    dtype = layers_lib.get_dtype(cfg.dtype)
    d = cfg.hidden_dim
    self.audio = layers_lib.MLP(
        in_dim_a, cfg.audio_proj_hidden, d, dtype=dtype, rngs=rngs
    )
    self.visual = layers_lib.Dense(in_dim_v, d, dtype=dtype, rngs=rngs)
    self.in_dim_a, self.in_dim_v = in_dim_a, in_dim_v

  def __call__(self, batch) -> tuple[jax.Array, jax.Array]:
    audio, visual = batch["audio"], batch["visual"]
    if audio.shape[-1] != self.in_dim_a or visual.shape[-1] != self.in_dim_v:
      raise ValueError(
          f"batch audio/visual dims {audio.shape[-1]}/{visual.shape[-1]}; the"
          f" model was built for {self.in_dim_a}/{self.in_dim_v}. Check the"
          " feature set in the config."
      )
    s_a = self.audio(audio.astype(jnp.float32))
    s_v = self.visual(visual.astype(jnp.float32)).astype(jnp.float32)
    return s_a, s_v


class HANLayer(nnx.Module):
  """Post-norm hybrid attention layer (query x, other modality y).

  x = LN1(x + Drop(MCA(x, y)) + Drop(MSA(x))); x = LN2(x + Drop(FFN(x))).
  """

  def __init__(self, dim, num_heads, ffn_dim, *, dropout, dtype=None, rngs):
    self.rate = dropout
    kw = dict(dropout=dropout, dtype=dtype, rngs=rngs)
    self.cross_attn = layers_lib.MultiHeadAttention(dim, num_heads, **kw)
    self.self_attn = layers_lib.MultiHeadAttention(dim, num_heads, **kw)
    self.ffn = layers_lib.FeedForward(dim, ffn_dim, **kw)
    self.norm1 = layers_lib.layer_norm(dim, rngs=rngs)
    self.norm2 = layers_lib.layer_norm(dim, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x_BxTxD, y_BxTxD, *, deterministic, rngs=None):
    kw = dict(deterministic=deterministic, rngs=rngs)
    c = self.cross_attn(x_BxTxD, y_BxTxD, **kw)
    s = self.self_attn(x_BxTxD, x_BxTxD, **kw)
    x = self.norm1(x_BxTxD + self.dropout(c, **kw) + self.dropout(s, **kw))
    return self.norm2(x + self.dropout(self.ffn(x, **kw), **kw))


class HANEncoder(nnx.Module):
  """Stack of HANLayers; layer i is shared by the audio and visual passes.

  Sequential update inside each layer: a <- L_i(a, v), then
  v <- L_i(v, a_new), so the visual pass sees the updated audio.
  """

  def __init__(self, cfg, num_layers: int, *, rngs: nnx.Rngs):
    dtype = layers_lib.get_dtype(cfg.dtype)
    self.rate = cfg.dropout
    self.layers = layers_lib.stack_layers(
        lambda r: HANLayer(
            cfg.hidden_dim,
            cfg.num_heads,
            cfg.ffn_dim,
            dropout=cfg.dropout,
            dtype=dtype,
            rngs=r,
        ),
        num_layers,
        identical=getattr(cfg, "identical_layer_init", False),
        rngs=rngs,
    )

  def __call__(self, a_BxTxD, v_BxTxD, *, deterministic, rngs=None):
    layers_lib.check_rngs(deterministic, rngs, self.rate, "HANEncoder")
    for layer in self.layers:
      a_BxTxD = layer(a_BxTxD, v_BxTxD, deterministic=deterministic, rngs=rngs)
      v_BxTxD = layer(v_BxTxD, a_BxTxD, deterministic=deterministic, rngs=rngs)
    return a_BxTxD, v_BxTxD


class MMILHead(nnx.Module):
  """Shared classifier fc_prob + attentive MMIL pooling over time, modality.

  X = stack(a, v) on axis 2 (index 0 = audio). Frame probabilities
  sigmoid(fc_prob(X)); time weights softmax over T of fc_frame_att(X);
  modality weights softmax over the size-2 axis of fc_av_att(X).
  """

  def __init__(self, dim: int, num_classes: int, *, dtype=None, rngs):
    kw = dict(dtype=dtype, rngs=rngs)
    self.fc_prob = layers_lib.Dense(dim, num_classes, **kw)
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
  """HAN parser as UWAV's train_han.sh runs it (spec STAGE3 §2)."""

  def __init__(
      self, cfg, in_dim_a: int, in_dim_v: int, num_classes: int, *, rngs
  ):
    dtype = layers_lib.get_dtype(cfg.dtype)
    self.proj = Projections(cfg, in_dim_a, in_dim_v, rngs=rngs)
    self.encoder = HANEncoder(cfg, cfg.han_layers, rngs=rngs)
    self.head = MMILHead(cfg.hidden_dim, num_classes, dtype=dtype, rngs=rngs)

  def classify(self, feat_xD: jax.Array) -> jax.Array:
    return self.head.classify(feat_xD)

  def __call__(self, batch, *, deterministic: bool, rngs=None):
    s_a, s_v = self.proj(batch)
    a, v = self.encoder(s_a, s_v, deterministic=deterministic, rngs=rngs)
    return head_outputs(self.head, a, v)
