"""Pseudo-labels: label migration, threshold search, binarise, soft labels.

docs/METHOD.md: Eq. (1)-(2), (S-19)-(S-21), (P1)-(P2), (9), (S-22).
Their files (the UWAV layout): ear_jax/data/pseudo_label_files.py.
"""
# pylint: disable=invalid-name

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST
MIGRATION_SCOPES = ("batch", "video")


# ----------------------------------------------------------------------------
# Label migration, Eq. (1)-(2), (S-19)-(S-21).


@functools.partial(jax.jit, static_argnames=("strict",))
def migrate_from_similarity(sim_NxN: jax.Array, y_NxC: jax.Array,
                            ok_N: jax.Array, tau: float | jax.Array,
                            same_video_NxN: jax.Array | None = None,
                            strict: bool = False) -> jax.Array:
  """Eq. (1)-(2), (S-19)-(S-21) given the similarity matrix S; Ŷ [N, C]."""
  sim_NxN = jnp.asarray(sim_NxN, jnp.float32)
  y_NxC = jnp.asarray(y_NxC, jnp.float32)
  ok_N = jnp.asarray(ok_N, jnp.float32)
  n = y_NxC.shape[0]
  if sim_NxN.shape != (n, n) or ok_N.shape != (n,):
    raise ValueError(f"sim_NxN {sim_NxN.shape}, y_NxC {y_NxC.shape} and ok_N"
                     f" {ok_N.shape} disagree; expected [N, N], [N, C], [N].")
  high = sim_NxN > tau if strict else sim_NxN >= tau
  mask_NxN = high.astype(jnp.float32) * ok_N[:, None] * ok_N[None, :]  # Eq. (1)
  if same_video_NxN is not None:
    mask_NxN = mask_NxN * jnp.asarray(same_video_NxN, jnp.float32)
  # Eq. (2): summed similarity of the contributors of each class.
  y_mig_NxC = jnp.matmul(mask_NxN * sim_NxN, y_NxC, precision=HIGHEST)
  # Eq. (S-19, S-20): their mean; Eq. (S-21): original labels stay 1.
  k_NxC = jnp.matmul(mask_NxN, y_NxC, precision=HIGHEST)
  y_avg_NxC = jnp.where(k_NxC > 0, y_mig_NxC / jnp.maximum(k_NxC, 1.0), 0.0)
  y_hat_NxC = jnp.maximum(y_avg_NxC, y_NxC) * ok_N[:, None]
  return jax.lax.stop_gradient(y_hat_NxC)


@jax.jit
def cosine_similarity(feats_NxD: jax.Array) -> jax.Array:
  """S = F̄ F̄ᵀ with F̄ = F / max(‖F‖, 1e-8), clipped to [-1, 1]."""
  feats_NxD = jnp.asarray(feats_NxD, jnp.float32)
  norm_Nx1 = jnp.sqrt(jnp.sum(feats_NxD * feats_NxD, axis=-1, keepdims=True))
  unit_NxD = feats_NxD / jnp.maximum(norm_Nx1, 1e-8)
  sim_NxN = jnp.matmul(unit_NxD, unit_NxD.T, precision=HIGHEST)
  # Rounding can give 1 + eps on the diagonal; a cosine never exceeds 1, and
  # the clip keeps migrated labels inside [0, 1].
  return jnp.clip(sim_NxN, -1.0, 1.0)


@functools.partial(jax.jit, static_argnames=("strict",))
def migrate(feats_NxD: jax.Array, y_NxC: jax.Array, ok_N: jax.Array,
            tau: float | jax.Array, video_id_N: jax.Array | None = None,
            strict: bool = False) -> jax.Array:
  """Similarity-based uni-modal label migration; Ŷ [N, C] float32.

  Args:
    feats_NxD: frozen input features of the N flattened segments.
    y_NxC: 0/1 AV labels.
    ok_N: 1 for valid segments (0 on padding and dummy videos).
    tau: cosine threshold (0.98 audio / CLAP, 0.95 visual / CLIP).
    video_id_N: if given, only pairs from the same video migrate ("video"
      scope); None compares all valid segments ("batch" scope).
    strict: use S > tau instead of S >= tau.
  """
  same_NxN = None
  if video_id_N is not None:
    video_id_N = jnp.asarray(video_id_N)
    same_NxN = video_id_N[:, None] == video_id_N[None, :]
  return migrate_from_similarity(cosine_similarity(feats_NxD), y_NxC, ok_N,
                                 tau, same_NxN, strict)


@functools.partial(jax.jit, static_argnames=("scope", "strict"))
def migrate_batch(feats_BxTxD: jax.Array, y_BxTxC: jax.Array,
                  valid_BxT: jax.Array, tau: float | jax.Array,
                  scope: str = "batch", strict: bool = False) -> jax.Array:
  """`migrate` on a padded batch; returns Ŷ [B, T, C] float32."""
  if scope not in MIGRATION_SCOPES:
    raise ValueError(f"migration scope {scope!r} is unknown; use one of"
                     f" {MIGRATION_SCOPES}.")
  B, T, C = y_BxTxC.shape
  if feats_BxTxD.shape[:2] != (B, T) or valid_BxT.shape != (B, T):
    raise ValueError(f"feats_BxTxD {feats_BxTxD.shape}, y_BxTxC {y_BxTxC.shape}"
                     f" and valid_BxT {valid_BxT.shape} disagree on [B, T].")
  video_id_N = None
  if scope == "video":
    video_id_N = jnp.repeat(jnp.arange(B), T)
  y_hat_NxC = migrate(feats_BxTxD.reshape(B * T, -1), y_BxTxC.reshape(B * T, C),
                      valid_BxT.reshape(B * T), tau, video_id_N, strict)
  return y_hat_NxC.reshape(B, T, C)


# ----------------------------------------------------------------------------
# Thresholds, binary and soft pseudo-labels, Eq. (P1), (P2), (9).


def _check_logits_gt_weak(logits_NxTxC, gt_NxCxT, weak_NxC):
  logits_NxTxC = np.asarray(logits_NxTxC)
  weak_NxC = np.asarray(weak_NxC)
  if logits_NxTxC.ndim != 3:
    raise ValueError(f"logits_NxTxC has shape {logits_NxTxC.shape}; expected"
                     " [N, T, C].")
  N, T, C = logits_NxTxC.shape
  if weak_NxC.shape != (N, C):
    raise ValueError(f"weak_NxC has shape {weak_NxC.shape}; expected"
                     f" {(N, C)} to match logits_NxTxC {logits_NxTxC.shape}.")
  if gt_NxCxT is not None and np.shape(gt_NxCxT) != (N, C, T):
    raise ValueError(f"gt_NxCxT has shape {np.shape(gt_NxCxT)}; expected"
                     f" {(N, C, T)} (video, class, segment) to match"
                     f" logits_NxTxC {logits_NxTxC.shape}.")
  if np.isnan(logits_NxTxC).any():
    raise ValueError("logits_NxTxC contains NaN; the generator output is"
                     " broken (check the stage-1 checkpoint).")
  return logits_NxTxC, weak_NxC


F_DTYPES = ("float64", "float32")


def search_thresholds(logits_NxTxC, gt_NxCxT, weak_NxC,
                      f_dtype: str = "float64") -> np.ndarray:
  """Per-class logit thresholds maximising pooled F1, Eq. (P1); f32 [C].

  Classes absent from a video's weak label are masked to -inf. A result of
  -inf means "every segment of a weak-label class is positive".
  f_dtype: precision of precision/recall/F. Cuts with equal F in exact
  arithmetic are common (F = 2 TP / (n_pred + n_true)); rounding decides
  which one argmax takes. "float32" is UWAV's torch arithmetic and gives its
  thresholds bit for bit; "float64" (default) rounds differently.
  """
  if f_dtype not in F_DTYPES:
    raise ValueError(f"f_dtype={f_dtype!r}; expected one of {F_DTYPES}.")
  dt = np.dtype(f_dtype)
  logits_NxTxC, weak_NxC = _check_logits_gt_weak(logits_NxTxC, gt_NxCxT,
                                                 weak_NxC)
  N, T, C = logits_NxTxC.shape
  z_NxTxC = np.where(weak_NxC[:, None, :] != 0,
                     logits_NxTxC.astype(np.float32), np.float32(-np.inf))
  z_KxC = z_NxTxC.reshape(N * T, C)  # video-major, then time
  label_KxC = (np.asarray(gt_NxCxT).transpose(0, 2, 1) != 0).reshape(N * T, C)
  order_KxC = np.argsort(z_KxC, axis=0, kind="stable")
  p_KxC = np.take_along_axis(z_KxC, order_KxC, axis=0)
  l_KxC = np.take_along_axis(label_KxC, order_KxC, axis=0).astype(dt)
  # Cut i predicts p_i ... p_{n-1} positive (counts are exact in both).
  tp_KxC = np.cumsum(l_KxC[::-1], axis=0)[::-1]
  n_pred_K = (N * T - np.arange(N * T, dtype=dt))[:, None]
  with np.errstate(invalid="ignore", divide="ignore"):
    precision = tp_KxC / n_pred_K
    recall = tp_KxC / tp_KxC[:1]  # NaN for a class with no positives
    # (2 P) R / max(P + R, 1e-12), evaluated in this order as torch does.
    f_KxC = dt.type(2) * precision * recall / np.maximum(
        precision + recall, dt.type(1e-12))
  best_C = np.argmax(f_KxC, axis=0)  # first max; NaN counts as maximal
  p_prev_KxC = np.concatenate(
      [np.full((1, C), -np.inf, np.float32), p_KxC[:-1]], axis=0)
  theta_KxC = (p_KxC + p_prev_KxC) / np.float32(2)
  return theta_KxC[best_C, np.arange(C)].astype(np.float32)


def binarize(logits_NxTxC, thresholds_C, weak_NxC) -> np.ndarray:
  """Binary pseudo-labels 1[z > θ] · w, Eq. (P2); uint8 [N, T, C]."""
  logits_NxTxC, weak_NxC = _check_logits_gt_weak(logits_NxTxC, None, weak_NxC)
  thresholds_C = np.asarray(thresholds_C, np.float32)
  if thresholds_C.shape != logits_NxTxC.shape[2:]:
    raise ValueError(f"thresholds_C has shape {thresholds_C.shape}; expected"
                     f" ({logits_NxTxC.shape[2]},).")
  pos = logits_NxTxC.astype(np.float32) > thresholds_C[None, None, :]
  return (pos & (weak_NxC[:, None, :] != 0)).astype(np.uint8)


@jax.jit
def soft_labels(logits_BxTxC: jax.Array, thresholds_C: jax.Array,
                weak_BxC: jax.Array, video_mask_B: jax.Array,
                temperature: float = 2.0) -> jax.Array:
  """Soft segment targets σ((z − θ') / temperature) · w, Eq. (9); [B,T,C].

  θ' replaces a non-finite θ_c by (min of z[:, :, c] over the real videos of
  this batch) − 1. Dummy videos (video_mask 0) get 0 and do not enter the
  minimum, so padding a batch leaves the real rows unchanged.
  """
  z_BxTxC = jnp.asarray(logits_BxTxC, jnp.float32)
  theta_C = jnp.asarray(thresholds_C, jnp.float32)
  real_B = jnp.asarray(video_mask_B) > 0
  weak_BxC = jnp.asarray(weak_BxC, jnp.float32)
  z_min_C = jnp.min(jnp.where(real_B[:, None, None], z_BxTxC, jnp.inf),
                    axis=(0, 1))
  theta_C = jnp.where(jnp.isfinite(theta_C), theta_C, z_min_C - 1.0)
  q_BxTxC = jax.nn.sigmoid((z_BxTxC - theta_C[None, None, :]) / temperature)
  keep_BxC = weak_BxC * real_B[:, None].astype(jnp.float32)
  return jax.lax.stop_gradient(q_BxTxC * keep_BxC[:, None, :])


def class_frequencies(binary_NxTxC) -> np.ndarray:
  """Positive segments per class / (N · T), Eq. (S-22); float32 [C]."""
  binary_NxTxC = np.asarray(binary_NxTxC)
  if binary_NxTxC.ndim != 3 or 0 in binary_NxTxC.shape[:2]:
    raise ValueError(f"binary_NxTxC has shape {binary_NxTxC.shape}; expected"
                     " [N, T, C] with N, T >= 1.")
  N, T = binary_NxTxC.shape[:2]
  pos_C = np.sum(binary_NxTxC != 0, axis=(0, 1), dtype=np.float64)
  return (pos_C / (N * T)).astype(np.float32)
