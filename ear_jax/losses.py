"""Pure losses: stage-1 generator (UWAV/EAR Eq. (8)) and stage-3 parser (video
BCE, class-balanced soft segment BCE, uncertainty-weighted mixup)."""

# pylint: disable=invalid-name

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ear_jax import pseudo_labels as pl_lib

LOG_CLAMP = -100.0  # torch binary_cross_entropy clamps each log term here
PROB_CLIP = 1e-7  # UWAV clips global_prob before its video BCE
CB_WEIGHT_SCALES = ("code", "paper")


# ----------------------------------------------------------------- helpers --


def bce_with_logits(logits: jax.Array, target: jax.Array) -> jax.Array:
  """Element-wise torch BCEWithLogits (stable form), float32."""
  x = logits.astype(jnp.float32)
  y = target.astype(jnp.float32)
  return jnp.maximum(x, 0.0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))


def bce_prob(prob: jax.Array, target: jax.Array) -> jax.Array:
  """Element-wise torch binary_cross_entropy on probabilities."""
  p = prob.astype(jnp.float32)
  y = target.astype(jnp.float32)
  return -(
      y * jnp.maximum(jnp.log(p), LOG_CLAMP)
      + (1.0 - y) * jnp.maximum(jnp.log1p(-p), LOG_CLAMP)
  )


# --------------------------------------------------------------- stage 1 --


def weighted_bce(
    logp: jax.Array,
    log1mp: jax.Array,
    target: jax.Array,
    valid_BxT: jax.Array,
    weight_BxTxC: jax.Array,
) -> jax.Array:
  """UWAV weighted, masked BCE on log-probabilities, Eq. (B).

  l = -[y max(log P, -100) + (1 - y) max(log(1 - P), -100)];
  returns sum(l w valid) / (sum(valid) C).
  """
  y = target.astype(jnp.float32)
  loss = -(
      y * jnp.maximum(logp, LOG_CLAMP)
      + (1.0 - y) * jnp.maximum(log1mp, LOG_CLAMP)
  )
  valid = valid_BxT.astype(jnp.float32)[..., None]
  num = jnp.sum(loss * weight_BxTxC * valid)
  den = jnp.maximum(jnp.sum(valid_BxT.astype(jnp.float32)), 1.0)
  return num / (den * target.shape[-1])


def generator_class_weights(
    target_BxTxC: jax.Array, valid_BxT: jax.Array, pos: float, neg: float
) -> jax.Array:
  """pos where the class has a positive target in the video (valid t), else
  neg; broadcast over t -> [B, T, C]."""
  valid = valid_BxT.astype(jnp.float32)[..., None]
  present_Bx1xC = jnp.sum(target_BxTxC * valid, axis=1, keepdims=True) > 0
  w_Bx1xC = jnp.where(present_Bx1xC, pos, neg).astype(jnp.float32)
  return jnp.broadcast_to(w_Bx1xC, target_BxTxC.shape)


def generator_loss(out, batch, targets, cfg) -> tuple[jax.Array, dict]:
  """EAR Eq. (8), or UWAV(+LM) for a symmetric generator.

  out: Generator outputs; the variant is read from its keys ("logp_av1" =
  asymmetric). targets: y_av, y_a_mig, y_v_mig (migrated labels, from the
  caller). Terms, each behind cfg.use_*:
    av1: BCE_w(P_av1, y_av)  (symmetric: BCE_w(sigmoid(z_a) sigmoid(z_v)))
    av2: BCE_w(P_av2, y_av)  (asymmetric only)
    a:   lambda_a BCE_w(sigmoid(z_a), y_a_mig)  [R5: dynamic branch]
    v:   lambda_v BCE_w(sigmoid(z_v), y_v_mig)
  [R4] uni-modal class weights come from their own soft target. aux holds
  the unweighted terms under loss/<name> and loss/total.
  """
  valid = batch["valid"]
  pos, neg = cfg.pos_weight, cfg.neg_weight
  y_av = targets["y_av"]
  w_av = generator_class_weights(y_av, valid, pos, neg)
  asymmetric = "logp_av1" in out
  terms, weights = {}, {}
  if cfg.use_av1:
    if asymmetric:
      lp, l1mp = out["logp_av1"], out["log1mp_av1"]
    else:
      lp, l1mp = out["logp_av"], out["log1mp_av"]
    terms["av1"], weights["av1"] = weighted_bce(lp, l1mp, y_av, valid, w_av), 1
  if asymmetric and cfg.use_av2:
    terms["av2"] = weighted_bce(
        out["logp_av2"], out["log1mp_av2"], y_av, valid, w_av
    )
    weights["av2"] = 1.0
  for m, use, lam in (
      ("a", cfg.use_a, cfg.lambda_a),
      ("v", cfg.use_v, cfg.lambda_v),
  ):
    if not use:
      continue
    z, y = out[f"z_{m}"], targets[f"y_{m}_mig"]
    w = generator_class_weights(y, valid, pos, neg)
    terms[m] = weighted_bce(
        jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z), y, valid, w
    )
    weights[m] = lam
  if not terms:
    raise ValueError(
        "generator_loss: every term is switched off (use_av1/use_av2/use_a/"
        "use_v); enable at least one."
    )
  total = sum(weights[k] * terms[k] for k in terms)
  aux = {f"loss/{k}": v for k, v in terms.items()}
  aux["loss/total"] = total
  return total, aux


# --------------------------------------------------------------- stage 3 --


def mixup_keys(key: jax.Array) -> dict[str, jax.Array]:
  """Named subkeys of the step's mixup key."""
  k = jax.random.split(key, 4)
  return dict(lambda_a=k[0], lambda_v=k[1], perm_a=k[2], perm_v=k[3])


def mixup_draw(
    key_lambda: jax.Array,
    key_perm: jax.Array,
    real_N: jax.Array,
    alpha: float,
) -> tuple[jax.Array, jax.Array]:
  """lambda ~ Beta(alpha, alpha) (one scalar) and a permutation pi of [N].

  pi is uniform over the real rows (real -> real) and maps every dummy row
  to itself, so dummies are never partners.
  """
  lam = jax.random.beta(key_lambda, alpha, alpha)  # Eq. (S-25)
  real = real_N > 0
  N = real.shape[0]
  u = jax.random.uniform(key_perm, (N,))
  # Real rows in ascending order, then dummies in ascending order...
  slots = jnp.argsort(jnp.where(real, 0, 1), stable=True)
  # ...and real rows in random order, then the dummies (tied keys, stable).
  shuffled = jnp.argsort(jnp.where(real, u, 2.0), stable=True)
  perm = jnp.zeros((N,), jnp.int32).at[slots].set(shuffled.astype(jnp.int32))
  return lam, perm


def class_balanced_weights(
    weak_BxC: jax.Array,
    class_freq_C: jax.Array,
    pos_factor: float,
    scale: str = "code",
) -> jax.Array:
  """Per (b, c) weight: (C - S) W if y = 1 else S, S = sum_c freq[c].

  scale "code" (UWAV code, default) or "paper" (divided by C).
  """
  if scale not in CB_WEIGHT_SCALES:
    raise ValueError(
        f"cb_weight_scale={scale!r}; expected one of {CB_WEIGHT_SCALES}."
    )
  C = weak_BxC.shape[-1]
  S = jnp.sum(class_freq_C.astype(jnp.float32))  # Eq. (S-23)
  w = jnp.where(weak_BxC > 0, (C - S) * pos_factor, S)  # Eq. (S-24)
  if scale == "paper":
    w = w / C
  return w.astype(jnp.float32)


HARD_TARGETS = ("threshold", "labels")


def segment_targets(
    logits_BxTxC, thresholds_C, weak_BxC, video_mask_B, cfg,
    labels_BxTxC=None,
) -> jax.Array:
  """Soft targets of Eq. (9) (pseudo_labels.soft_labels), or, when
  cfg.use_soft is False, binary ones: 1[z > theta] * y
  (cfg.hard_targets "threshold", default) or the stage-2 files' binary
  labels as they are ("labels": VALOR's labels, which have no logits)."""
  hard_targets = getattr(cfg, "hard_targets", "threshold")
  if hard_targets not in HARD_TARGETS:
    raise ValueError(f"config.loss.hard_targets={hard_targets!r}; expected"
                     f" one of {HARD_TARGETS}.")
  if not cfg.use_soft and hard_targets == "labels":
    if labels_BxTxC is None:
      raise ValueError("config.loss.hard_targets='labels' needs the binary"
                       " pseudo-labels in the batch (a_label, v_label).")
    return jax.lax.stop_gradient(jnp.asarray(labels_BxTxC, jnp.float32))
  if logits_BxTxC is None:
    raise ValueError(
        "the pseudo-labels have no logits (VALOR's binary labels): set"
        " --config.loss.use_soft=False --config.loss.hard_targets=labels.")
  if cfg.use_soft:
    return pl_lib.soft_labels(
        logits_BxTxC,
        thresholds_C,
        weak_BxC,
        video_mask_B,
        temperature=cfg.soft_label_temperature,
    )
  hard = logits_BxTxC > thresholds_C.astype(jnp.float32)[None, None, :]
  y = (weak_BxC > 0)[:, None, :]
  return jax.lax.stop_gradient((hard & y).astype(jnp.float32))


def mixup_loss(
    classify: Callable[[jax.Array], jax.Array],
    feat_BxTxD: jax.Array,
    q_BxTxC: jax.Array,
    real_BxT: jax.Array,
    lam: jax.Array,
    perm_N: jax.Array,
) -> jax.Array:
  """lambda BCE(logits, q) + (1 - lambda) BCE(logits, q[pi]) over real rows,
  logits = classify(lambda f + (1 - lambda) f[pi])."""
  B, T, D = feat_BxTxD.shape
  C = q_BxTxC.shape[-1]
  f_NxD = feat_BxTxD.reshape(B * T, D)
  q_NxC = q_BxTxC.reshape(B * T, C)
  real_Nx1 = real_BxT.reshape(B * T, 1).astype(jnp.float32)
  f_mix = lam * f_NxD + (1.0 - lam) * f_NxD[perm_N]  # Eq. (S-26)
  logits_NxC = classify(f_mix).astype(jnp.float32)
  loss = lam * bce_with_logits(logits_NxC, q_NxC) + (  # Eq. (S-27)
      1.0 - lam
  ) * bce_with_logits(logits_NxC, q_NxC[perm_N])
  den = jnp.maximum(jnp.sum(real_Nx1), 1.0) * C
  return jnp.sum(loss * real_Nx1) / den


def parser_loss(
    out,
    batch,
    *,
    classify: Callable[[jax.Array], jax.Array],
    key: jax.Array,
    thresholds_a: jax.Array,
    thresholds_v: jax.Array,
    class_freq_a: jax.Array,
    class_freq_v: jax.Array,
    cfg,
) -> tuple[jax.Array, dict]:
  """UWAV parser loss, Eq. (16), exact to the code; dummy videos
  (video_mask = 0) are excluded from every mean, the batch minimum and mixup.

  L = w_video L_video + w_seg (L_seg^a + L_seg^v) + w_mix (L_mix^a + L_mix^v)
  """
  weak_BxC = batch["weak"].astype(jnp.float32)
  B, C = weak_BxC.shape
  T = out["a_logits"].shape[1]
  mask_B = batch["video_mask"].astype(jnp.float32)
  n_real = jnp.maximum(jnp.sum(mask_B), 1.0)
  aux = {}

  # Eq. (16): video loss on the clipped global probability.
  p = jnp.clip(out["global_prob"], PROB_CLIP, 1.0 - PROB_CLIP)
  l_video = jnp.sum(bce_prob(p, weak_BxC) * mask_B[:, None]) / (n_real * C)
  aux["loss/video"] = l_video

  use_reweight = cfg.use_reweight
  use_mixup = cfg.use_mixup
  keys = mixup_keys(key)
  real_BxT = jnp.broadcast_to(mask_B[:, None], (B, T))
  total = cfg.video_weight * l_video
  for m, thresholds, freq in (
      ("a", thresholds_a, class_freq_a),
      ("v", thresholds_v, class_freq_v),
  ):
    q = segment_targets(batch.get(f"{m}_logit"), thresholds, weak_BxC,
                        mask_B, cfg, labels_BxTxC=batch.get(f"{m}_label"))
    # Eq. (S-24): class-balanced, soft-target segment BCE.
    if use_reweight:
      w_Bx1xC = class_balanced_weights(
          weak_BxC,
          freq,
          cfg.pos_weight_factor,
          cfg.cb_weight_scale,
      )[:, None, :]
    else:
      w_Bx1xC = jnp.ones((B, 1, C), jnp.float32)
    seg = bce_with_logits(out[f"{m}_logits"], q) * w_Bx1xC
    l_seg = jnp.sum(seg * mask_B[:, None, None]) / (n_real * T * C)
    aux[f"loss/seg_{m}"] = l_seg
    total = total + cfg.seg_weight * l_seg
    # Eq. (S-25)-(S-27): mixup, own lambda and permutation per modality.
    if use_mixup:
      lam, perm = mixup_draw(
          keys[f"lambda_{m}"],
          keys[f"perm_{m}"],
          real_BxT.reshape(B * T),
          cfg.mixup_alpha,
      )
      l_mix = mixup_loss(classify, out[f"{m}_feat"], q, real_BxT, lam, perm)
      aux[f"loss/mix_{m}"] = l_mix
      total = total + cfg.mix_weight * l_mix
  aux["loss/total"] = total
  return total, aux
