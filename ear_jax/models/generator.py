"""Stage-1 pseudo-label generator: UWAV (symmetric) and EAR (asymmetric)
per-modality temporal transformers scored against frozen text embeddings."""

# pylint: disable=invalid-name

from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp

from ear_jax.models import layers as layers_lib

STATIC_MODES = ("frozen_zeroshot", "shared_mlp_no_temporal")
_EPS_NORM = 1e-12  # torch F.normalize
_LOG_HALF = math.log(0.5)


def log1mexp(logp: jax.Array) -> jax.Array:
  """log(1 - exp(logp)) for logp <= 0, accurate at both ends, finite grads.

  Where P = exp(logp) rounds to 1 (torch would give log(0) and clamp to
  -100), logp is capped at -1e-30, i.e. log(1 - P) >= -69.
  """
  x = jnp.minimum(logp, -1e-30)
  near_one = x > _LOG_HALF
  # The unused branch sees a safe input, so its gradient is never 0 * inf.
  x_small = jnp.where(near_one, _LOG_HALF, x)
  return jnp.where(
      near_one, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x_small))
  )


def l2_normalize(x: jax.Array) -> jax.Array:
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, _EPS_NORM)


def text_logits(h_BxTxD, text_CxD, scale) -> jax.Array:
  """s * h E^T in float32 (h is not normalised; E is, by the exporter)."""
  return scale * jnp.einsum(
      "btd,cd->btc",
      h_BxTxD.astype(jnp.float32),
      text_CxD.astype(jnp.float32),
  )


class ModalityStack(nnx.Module):
  """proj MLP -> post-LN encoder (no positional encoding) -> final_proj MLP,
  Eq. (3)."""

  def __init__(self, in_dim: int, cfg, *, rngs: nnx.Rngs):
    dtype = layers_lib.get_dtype(cfg.dtype)
    d = cfg.hidden_dim
    self.proj = layers_lib.MLP(
        in_dim, cfg.proj_hidden, d, dtype=dtype, rngs=rngs
    )
    self.layers = layers_lib.stack_layers(
        lambda r: layers_lib.EncoderLayer(
            d,
            cfg.num_heads,
            cfg.ffn_dim,
            dropout=cfg.dropout,
            dtype=dtype,
            rngs=r,
        ),
        cfg.num_layers,
        identical=cfg.identical_layer_init,
        rngs=rngs,
    )
    self.final_proj = layers_lib.MLP(d, in_dim, in_dim, dtype=dtype, rngs=rngs)

  def __call__(self, x_BxTxD, mask_Bx1xTxT, *, deterministic, rngs=None):
    h = self.proj(x_BxTxD)
    for layer in self.layers:
      h = layer(h, mask_Bx1xTxT, deterministic=deterministic, rngs=rngs)
    return self.final_proj(h)


class Generator(nnx.Module):
  """UWAV / EAR generator, Eq. (3)-(7) of docs/METHOD.md.

  One independent stack per modality (audio = CLAP 512-d, visual = CLIP
  768-d). Dynamic logits z_m = s_m * h_m E_m^T (Eq. (4)) with fixed, not
  exponentiated scales. The encoder attention mask comes from batch["valid"]:
  valid queries see only valid keys; padded query rows attend uniformly.

  Reconstructions (docs/METHOD.md), each a config switch:
    R2 cfg.static_mode: "frozen_zeroshot" (default, z_sta = s * norm(F) E^T
       under stop_gradient, Eq. (5)) or "shared_mlp_no_temporal"
       (z_sta = s * final_proj(proj(F)) E^T, trainable, no encoder).
    R3 cfg.static_logit_scale_{a,v}: None = the dynamic scale s_m.
    R5 uni-modal loss terms act on the dynamic logits (losses.py).
    R7 p_av = (P_av1 + P_av2) / 2 is the asymmetric checkpoint criterion.
  The product forms P_av1 = P_v^dyn P_a^sta (Eq. (6)) and P_av2 = P_a^dyn
  P_v^sta (Eq. (7)) are themselves reconstructions of the lost equations.
  cfg.asymmetric=False gives UWAV: P_av = sigmoid(z_a) sigmoid(z_v).
  """

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    if cfg.static_mode not in STATIC_MODES:
      raise ValueError(
          f"static_mode={cfg.static_mode!r}; expected one of {STATIC_MODES}."
      )
    self.asymmetric = bool(cfg.asymmetric)
    self.static_mode = cfg.static_mode
    self.scale_a = float(cfg.logit_scale_a)
    self.scale_v = float(cfg.logit_scale_v)
    sa = cfg.static_logit_scale_a
    sv = cfg.static_logit_scale_v
    self.static_scale_a = self.scale_a if sa is None else float(sa)
    self.static_scale_v = self.scale_v if sv is None else float(sv)
    self.audio = ModalityStack(cfg.clap_dim, cfg, rngs=rngs)
    self.visual = ModalityStack(cfg.clip_dim, cfg, rngs=rngs)

  def _static(self, stack, feats_BxTxD, text_CxD, scale):
    if self.static_mode == "frozen_zeroshot":  # Eq. (5)
      return jax.lax.stop_gradient(
          text_logits(l2_normalize(feats_BxTxD), text_CxD, scale)
      )
    return text_logits(
        stack.final_proj(stack.proj(feats_BxTxD)), text_CxD, scale
    )

  def __call__(
      self,
      batch,
      text_a_CxDa: jax.Array,
      text_v_CxDv: jax.Array,
      *,
      deterministic: bool,
      rngs: nnx.Rngs | None = None,
  ) -> dict[str, jax.Array]:
    """Returns logits and the AV log-probabilities of the chosen variant."""
    clap_BxTxDa = batch["clap"].astype(jnp.float32)
    clip_BxTxDv = batch["clip"].astype(jnp.float32)
    for name, x, text in (
        ("clap", clap_BxTxDa, text_a_CxDa),
        ("clip", clip_BxTxDv, text_v_CxDv),
    ):
      if x.shape[-1] != text.shape[-1]:
        raise ValueError(
            f"batch[{name!r}] has dim {x.shape[-1]} but its text embeddings"
            f" have shape {text.shape}; both must come from the same encoder."
        )
    ok_BxT = batch["valid"] > 0
    mask_Bx1xTxT = ok_BxT[:, None, :, None] & ok_BxT[:, None, None, :]
    kw = dict(deterministic=deterministic, rngs=rngs)
    h_a = self.audio(clap_BxTxDa, mask_Bx1xTxT, **kw)
    h_v = self.visual(clip_BxTxDv, mask_Bx1xTxT, **kw)
    z_a = text_logits(h_a, text_a_CxDa, self.scale_a)  # Eq. (4)
    z_v = text_logits(h_v, text_v_CxDv, self.scale_v)
    z_a_sta = self._static(
        self.audio, clap_BxTxDa, text_a_CxDa, self.static_scale_a
    )
    z_v_sta = self._static(
        self.visual, clip_BxTxDv, text_v_CxDv, self.static_scale_v
    )
    out = dict(z_a=z_a, z_v=z_v, z_a_sta=z_a_sta, z_v_sta=z_v_sta)
    ls = jax.nn.log_sigmoid
    if self.asymmetric:
      logp_av1 = ls(z_v) + ls(z_a_sta)  # Eq. (6)
      logp_av2 = ls(z_a) + ls(z_v_sta)  # Eq. (7)
      out.update(
          logp_av1=logp_av1,
          log1mp_av1=log1mexp(logp_av1),
          logp_av2=logp_av2,
          log1mp_av2=log1mexp(logp_av2),
          p_av=0.5 * (jnp.exp(logp_av1) + jnp.exp(logp_av2)),
      )
    else:
      logp_av = ls(z_a) + ls(z_v)
      out.update(
          logp_av=logp_av, log1mp_av=log1mexp(logp_av), p_av=jnp.exp(logp_av)
      )
    return out
