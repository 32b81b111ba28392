"""Pseudo-labels: label migration, threshold search, binarise, soft labels, IO.

docs/METHOD.md: Eq. (1)-(2), (S-19)-(S-21), (P1)-(P2), (9), (S-22).
"""
# pylint: disable=invalid-name

from __future__ import annotations

import concurrent.futures
import datetime
import functools
import json
import os
from typing import Any, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST
MIGRATION_SCOPES = ("batch", "video")

# UWAV's file names, typo included, so its released labels drop in.
LLP_DIR = "LLP_Dataset"
THRESHOLD_FILE = "{m}_classwise_threhsolds.npy"
LOGIT_DIR = "{m}_segmentwise_logits"
LABEL_DIR = "{m}_segmentwise_pseudo_labels"
MANIFEST = "manifest.json"
FORMAT = "uwav_llp_dataset"
VERSION = 1


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


# ----------------------------------------------------------------------------
# Stage-2 files (UWAV layout, ARCHITECTURE.md "Pseudo-labels").


def _atomic_write(path: str, write_fn) -> None:
  """Writes via a temporary file in the same directory, then os.replace."""
  tmp = os.path.join(os.path.dirname(path),
                     f".{os.path.basename(path)}.{os.getpid()}.tmp")
  try:
    with open(tmp, "wb") as f:
      write_fn(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _save_npy(path: str, x: np.ndarray) -> None:
  _atomic_write(path, lambda f: np.save(f, x, allow_pickle=False))


def _thresholds_to_json(theta_C: np.ndarray) -> list:
  # JSON has no infinities; -inf (a legal threshold) is written as a string.
  return [("-inf" if x < 0 else "inf") if np.isinf(x) else float(x)
          for x in np.asarray(theta_C, np.float32)]


def _thresholds_from_json(values: Sequence[Any]) -> np.ndarray:
  return np.asarray([float(x) for x in values], np.float32)


def _check_thresholds(name: str, theta, C: int) -> np.ndarray:
  theta = np.asarray(theta, np.float32)
  if theta.shape != (C,):
    raise ValueError(f"{name} has shape {theta.shape}; expected ({C},).")
  if np.isnan(theta).any() or (theta == np.inf).any():
    raise ValueError(f"{name} contains NaN or +inf ({theta.tolist()}); only"
                     " finite values and -inf are valid thresholds.")
  return theta


def write_stage2(out_dir, split_ids: Mapping[str, Sequence[str]],
                 a_logits: Mapping[str, np.ndarray],
                 v_logits: Mapping[str, np.ndarray], thresholds_a,
                 thresholds_v, weak: Mapping[str, np.ndarray],
                 manifest: Mapping[str, Any], num_workers: int = 16) -> str:
  """Writes stage-2 outputs in the UWAV layout under <out_dir>/LLP_Dataset.

  Args:
    out_dir: run directory (the workdir).
    split_ids: {split: [11-character ids]}.
    a_logits, v_logits: {split: float32 [N, T, C]} raw generator logits.
    thresholds_a, thresholds_v: float32 [C], may hold -inf.
    weak: {split: 0/1 [N, C]} video-level labels used to filter the binary
      labels.
    manifest: metadata to record; must hold "classes" (C names). The
      format, version, shapes, ids and thresholds are added here.
  Returns:
    The LLP_Dataset directory. Its manifest.json is written last, so a
    directory with a manifest is complete.
  """
  if "classes" not in manifest:
    raise ValueError("manifest must hold 'classes' (the C class names in"
                     " index order, e.g. avvp.LLP_CLASSES).")
  classes = [str(c) for c in manifest["classes"]]
  C = len(classes)
  theta = {"a": _check_thresholds("thresholds_a", thresholds_a, C),
           "v": _check_thresholds("thresholds_v", thresholds_v, C)}
  splits = list(split_ids)
  for name, d in (("a_logits", a_logits), ("v_logits", v_logits),
                  ("weak", weak)):
    if set(d) != set(splits):
      raise ValueError(f"{name} has splits {sorted(d)}; expected the splits"
                       f" of split_ids {sorted(splits)}.")
  T = None
  seen = {}
  for split in splits:
    ids = list(split_ids[split])
    for vid in ids:
      if vid in seen:
        raise ValueError(f"id {vid!r} appears in split {seen[vid]!r} and in"
                         f" {split!r}; one file per id cannot hold both.")
      seen[vid] = split
    for name, x in (("a_logits", a_logits[split]),
                    ("v_logits", v_logits[split])):
      x = np.asarray(x)
      if T is None and x.ndim == 3:
        T = x.shape[1]
      if x.ndim != 3 or x.shape != (len(ids), T, C):
        raise ValueError(f"{name}[{split!r}] has shape {x.shape}; expected"
                         f" {(len(ids), T, C)} ([N ids, T, C classes]).")
      if not np.isfinite(x).all():
        raise ValueError(f"{name}[{split!r}] holds non-finite logits.")
    if np.shape(weak[split]) != (len(ids), C):
      raise ValueError(f"weak[{split!r}] has shape {np.shape(weak[split])};"
                       f" expected {(len(ids), C)}.")
  if T is None:
    raise ValueError("split_ids is empty; nothing to write.")

  root = os.path.join(os.fspath(out_dir), LLP_DIR)
  os.makedirs(root, exist_ok=True)
  manifest_path = os.path.join(root, MANIFEST)
  if os.path.exists(manifest_path):
    os.remove(manifest_path)  # the directory is incomplete until rewritten
  for m in ("a", "v"):
    os.makedirs(os.path.join(root, LOGIT_DIR.format(m=m)), exist_ok=True)
    os.makedirs(os.path.join(root, LABEL_DIR.format(m=m)), exist_ok=True)
    _save_npy(os.path.join(root, THRESHOLD_FILE.format(m=m)), theta[m])

  jobs = []
  for split in splits:
    logits = {"a": np.asarray(a_logits[split], np.float32),
              "v": np.asarray(v_logits[split], np.float32)}
    for m in ("a", "v"):
      labels = binarize(logits[m], theta[m], weak[split]).astype(np.float32)
      for i, vid in enumerate(split_ids[split]):
        jobs.append((os.path.join(root, LOGIT_DIR.format(m=m), vid + ".npy"),
                     logits[m][i]))
        jobs.append((os.path.join(root, LABEL_DIR.format(m=m), vid + ".npy"),
                     labels[i]))
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    list(pool.map(lambda job: _save_npy(*job), jobs))

  out = dict(manifest)
  out.update(
      format=FORMAT, version=VERSION, classes=classes, num_segments=int(T),
      num_classes=C, ids={s: list(split_ids[s]) for s in splits},
      thresholds_a=_thresholds_to_json(theta["a"]),
      thresholds_v=_thresholds_to_json(theta["v"]),
      created=datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"))
  payload = json.dumps(out, indent=1).encode() + b"\n"
  _atomic_write(manifest_path, lambda f: f.write(payload))
  return root


def _resolve_root(pseudo_dir) -> str:
  pseudo_dir = os.fspath(pseudo_dir)
  for root in (os.path.join(pseudo_dir, LLP_DIR), pseudo_dir):
    if os.path.isfile(os.path.join(root, THRESHOLD_FILE.format(m="a"))):
      return root
  raise FileNotFoundError(
      f"no stage-2 pseudo-labels at {pseudo_dir}: expected"
      f" {os.path.join(pseudo_dir, LLP_DIR, THRESHOLD_FILE.format(m='a'))}"
      " (or that file directly inside the given directory). Run stage 2"
      " (configs/stage2.py) or point pseudo_labels_dir at its workdir.")


def read_stage2(pseudo_dir, ids: Sequence[str],
                expect_classes: Sequence[str] | None = None,
                expect_num_segments: int = 10, num_workers: int = 16) -> dict:
  """Reads and checks stage-2 outputs for `ids`.

  Args:
    pseudo_dir: the stage-2 workdir or its LLP_Dataset directory. UWAV's
      released labels (no manifest.json) are accepted with a warning.
    ids: the 11-character ids to load, in the order wanted.
    expect_classes: class names the manifest must list (their count is
      checked against the files in any case).
    expect_num_segments: T.
  Returns:
    dict(a_logit, v_logit: float32 [N, T, C], a_label, v_label: uint8
    [N, T, C], thresholds_a, thresholds_v: float32 [C], manifest: dict or
    None).
  """
  root = _resolve_root(pseudo_dir)
  T = int(expect_num_segments)
  manifest_path = os.path.join(root, MANIFEST)
  manifest = None
  if os.path.isfile(manifest_path):
    with open(manifest_path) as f:
      manifest = json.load(f)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
      raise ValueError(
          f"{manifest_path}: format {manifest.get('format')!r} version"
          f" {manifest.get('version')!r}; expected {FORMAT!r} version"
          f" {VERSION}. Re-run stage 2 with this version of ear_jax.")
    classes = manifest.get("classes")
    if expect_classes is not None and classes != list(expect_classes):
      raise ValueError(
          f"{manifest_path}: classes {classes} differ from the"
          f" expected {list(expect_classes)}. The labels were made for"
          " another dataset or class order; re-run stage 2 for this one.")
    if manifest.get("num_segments") != T:
      raise ValueError(
          f"{manifest_path}: num_segments {manifest.get('num_segments')};"
          f" expected"
          f" {T}. Re-run stage 2 with the LLP data of this run.")
  else:
    logging.warning(
        "%s has no %s; reading it as UWAV-released pseudo-labels without"
        " provenance checks.", root, MANIFEST)

  theta = {}
  for m in ("a", "v"):
    path = os.path.join(root, THRESHOLD_FILE.format(m=m))
    x = np.load(path, allow_pickle=False)
    if x.ndim != 1:
      raise ValueError(f"{path}: shape {x.shape}; expected (C,).")
    theta[m] = _check_thresholds(path, x, x.shape[0])
  C = theta["a"].shape[0]
  if theta["v"].shape != (C,):
    raise ValueError(f"{root}: audio thresholds have {C} classes, visual"
                     f" {theta['v'].shape[0]}; the directory is inconsistent.")
  if expect_classes is not None and C != len(expect_classes):
    raise ValueError(f"{root}: thresholds have {C} classes; expected"
                     f" {len(expect_classes)}. Re-run stage 2 for this"
                     " class list.")
  if manifest is not None:
    for m in ("a", "v"):
      listed = _thresholds_from_json(manifest[f"thresholds_{m}"])
      if not np.array_equal(listed, theta[m]):
        raise ValueError(
            f"{root}: {THRESHOLD_FILE.format(m=m)} differs from the"
            f" thresholds in {MANIFEST}; the directory was partly rewritten."
            " Re-run stage 2 into a clean directory.")

  folders = [(key, os.path.join(root, fmt.format(m=m)))
             for m in ("a", "v")
             for key, fmt in ((f"{m}_logit", LOGIT_DIR),
                              (f"{m}_label", LABEL_DIR))]
  for _, folder in folders:
    present = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    missing = [vid for vid in ids if vid + ".npy" not in present]
    if missing:
      raise FileNotFoundError(
          f"{folder}: {len(missing)} of {len(ids)} requested ids have no file,"
          f" e.g. {missing[:5]}. Re-run stage 2 with the same LLP data"
          " (annotations) as this run.")

  def load(job):
    key, path = job
    x = np.load(path, allow_pickle=False)
    if x.shape != (T, C):
      raise ValueError(f"{path}: shape {x.shape}; expected {(T, C)} (T"
                       " segments, C classes). Re-run stage 2 for this data.")
    if key.endswith("logit"):
      if not np.isfinite(x).all():
        raise ValueError(f"{path}: non-finite logits; re-run stage 2 (the"
                         " generator checkpoint may be broken).")
      return x.astype(np.float32)
    if ((x != 0) & (x != 1)).any():
      raise ValueError(f"{path}: pseudo-labels must be 0/1; re-run stage 2.")
    return x.astype(np.uint8)

  out = {}
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    for key, folder in folders:
      paths = [(key, os.path.join(folder, vid + ".npy")) for vid in ids]
      rows = list(pool.map(load, paths))
      dtype = np.float32 if key.endswith("logit") else np.uint8
      out[key] = (np.stack(rows) if rows else np.zeros((0, T, C), dtype))
  out.update(thresholds_a=theta["a"], thresholds_v=theta["v"],
             manifest=manifest)
  return out
