"""Tests for ear_jax.pseudo_labels: migration, thresholds, soft labels."""
# pylint: disable=invalid-name

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ear_jax import pseudo_labels as pl_lib

HYP = settings(max_examples=50, deadline=None, derandomize=True)


# ----------------------------------------------------------------------------
# Label migration, Eq. (1)-(2), (S-19)-(S-21): worked examples.


def test_example_a_from_similarity():
  S = np.array([[1.00, 0.97, 0.90, 0.96],
                [0.97, 1.00, 0.96, 0.99],
                [0.90, 0.96, 1.00, 0.80],
                [0.96, 0.99, 0.80, 1.00]], np.float32)
  Y = np.array([[1, 0], [1, 0], [1, 1], [0, 1]], np.float32)
  out = pl_lib.migrate_from_similarity(S, Y, np.ones(4), 0.95)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(
      out, [[1.0, 0.96], [1.0, 0.975], [1.0, 1.0], [0.975, 1.0]], atol=1e-6)
  # Row 3, class 0 is the mean of two contributors, not their sum 1.95.
  np.testing.assert_allclose(out[3, 0], (0.96 + 0.99) / 2, atol=1e-6)


def test_example_b_from_features():
  F = np.array([[1, 0], [2, 0], [0, 3]], np.float32)
  np.testing.assert_allclose(pl_lib.cosine_similarity(F),
                             [[1, 1, 0], [1, 1, 0], [0, 0, 1]], atol=1e-7)
  out = pl_lib.migrate(F, np.array([[1], [0], [0]]), np.ones(3), 0.95)
  np.testing.assert_array_equal(out, [[1], [1], [0]])


def test_example_c_scope():
  S = np.full((4, 4), 0.10, np.float32)  # order A0, A1, B0, B1
  np.fill_diagonal(S, 1.0)
  S[0, 2] = S[2, 0] = 0.97
  S[0, 1] = S[1, 0] = 0.90
  Y = np.array([[1], [0], [0], [0]], np.float32)
  vid = np.array([0, 0, 1, 1])
  batch = pl_lib.migrate_from_similarity(S, Y, np.ones(4), 0.95)
  video = pl_lib.migrate_from_similarity(S, Y, np.ones(4), 0.95,
                                         vid[:, None] == vid[None, :])
  np.testing.assert_allclose(batch, [[1], [0], [0.97], [0]], atol=1e-6)
  np.testing.assert_allclose(video, [[1], [0], [0], [0]], atol=1e-6)


def test_migrate_batch_scopes_from_features():
  # B0 points like A0 (another video); A1 and B1 point elsewhere.
  feats_BxTxD = np.array([[[1, 0, 0], [0, 1, 0]], [[3, 0, 0], [0, 0, 1]]],
                         np.float32)
  y_BxTxC = np.array([[[1, 0], [0, 1]], [[0, 0], [0, 0]]], np.float32)
  valid_BxT = np.ones((2, 2), np.float32)
  batch = pl_lib.migrate_batch(feats_BxTxD, y_BxTxC, valid_BxT, 0.95)
  video = pl_lib.migrate_batch(feats_BxTxD, y_BxTxC, valid_BxT, 0.95,
                               scope="video")
  assert batch.shape == (2, 2, 2)
  np.testing.assert_array_equal(batch[1, 0], [1, 0])
  np.testing.assert_array_equal(video[1, 0], [0, 0])
  np.testing.assert_array_equal(video, y_BxTxC)
  with pytest.raises(ValueError, match=r"scope 'clip' is unknown.*'batch'"):
    pl_lib.migrate_batch(feats_BxTxD, y_BxTxC, valid_BxT, 0.95, scope="clip")


def test_example_d_padding():
  F = np.array([[1, 0], [2, 0], [0, 3], [1, 0]], np.float32)
  Y = np.array([[1], [0], [0], [0]], np.float32)
  out = pl_lib.migrate(F, Y, np.array([1, 1, 1, 0]), 0.95)
  np.testing.assert_array_equal(out, [[1], [1], [0], [0]])
  # A padded row that carries a label neither gives nor keeps it.
  Y2 = np.array([[0], [0], [0], [1]], np.float32)
  out = pl_lib.migrate(F, Y2, np.array([1, 1, 1, 0]), 0.95)
  np.testing.assert_array_equal(out, np.zeros((4, 1)))


def _np_migrate(F, Y, ok, tau, vid=None):
  """Eq. (1)-(2), (S-19)-(S-21) in float64 numpy, for comparison."""
  unit = F / np.maximum(np.linalg.norm(F, axis=1, keepdims=True), 1e-8)
  S = np.clip(unit @ unit.T, -1, 1)
  M = (S >= tau) * ok[:, None] * ok[None, :]
  if vid is not None:
    M = M * (vid[:, None] == vid[None, :])
  K = M @ Y
  avg = np.where(K > 0, ((M * S) @ Y) / np.maximum(K, 1), 0)
  return np.maximum(avg, Y) * ok[:, None]


def test_migrate_matches_numpy_jit_and_no_gradient():
  rng = np.random.default_rng(0)
  F = rng.normal(size=(12, 4)).astype(np.float32)
  F[5] = 2 * F[0]
  F[7] = F[0] + 0.05 * rng.normal(size=4).astype(np.float32)
  Y = (rng.random((12, 3)) < 0.3).astype(np.float32)
  ok = (rng.random(12) < 0.9).astype(np.float32)
  ok[[0, 5, 7]] = 1
  vid = np.repeat(np.arange(4), 3)
  for tau in (0.5, 0.9):
    np.testing.assert_allclose(pl_lib.migrate(F, Y, ok, tau),
                               _np_migrate(F, Y, ok, tau), atol=1e-6)
    np.testing.assert_allclose(pl_lib.migrate(F, Y, ok, tau, vid),
                               _np_migrate(F, Y, ok, tau, vid), atol=1e-6)
  # Traced inside an outer jit and differentiated, as in the train step.
  grad = jax.jit(jax.grad(lambda f: pl_lib.migrate(f, Y, ok, 0.5).sum()))(F)
  np.testing.assert_array_equal(grad, 0)


def test_migrate_batch_dummy_videos_change_nothing():
  """Batch scope: padding a batch with a dummy video equals the smaller one."""
  rng = np.random.default_rng(1)
  feats = rng.normal(size=(4, 5, 3)).astype(np.float32)
  feats[2, 1] = feats[0, 0]
  y = (rng.random((4, 5, 2)) < 0.3).astype(np.float32)
  valid = np.ones((4, 5), np.float32)
  valid[1, 3:] = 0  # a shorter video
  valid_pad = valid.copy()
  valid_pad[3] = 0  # a dummy video, features left as they are
  small = pl_lib.migrate_batch(feats[:3], y[:3], valid[:3], 0.5)
  padded = pl_lib.migrate_batch(feats, y, valid_pad, 0.5)
  np.testing.assert_allclose(padded[:3], small, atol=1e-6)
  assert (small[2, 1] > 0).sum() >= (y[0, 0] > 0).sum()  # crossed videos
  np.testing.assert_array_equal(padded[3], 0)
  np.testing.assert_array_equal(padded[1, 3:], 0)


def test_strict_threshold():
  S = np.array([[1.0, 0.95], [0.95, 1.0]], np.float32)
  Y = np.array([[1], [0]], np.float32)
  ok = np.ones(2)
  assert pl_lib.migrate_from_similarity(S, Y, ok, np.float32(0.95))[1, 0] > 0
  assert pl_lib.migrate_from_similarity(S, Y, ok, np.float32(0.95),
                                        strict=True)[1, 0] == 0


# ----------------------------------------------------------------------------
# Migration properties.

N_PROP = 8  # one static shape, so the jitted function compiles once


@jax.jit
def _both_scopes(F, Y, ok, vid, tau):
  return (pl_lib.migrate(F, Y, ok, tau),
          pl_lib.migrate(F, Y, ok, tau, video_id_N=vid))


@st.composite
def _migration_case(draw):
  # Small integer features make duplicates and exact collinearity common.
  F = draw(hnp.arrays(np.float32, (N_PROP, 3), elements=st.integers(-2, 2)))
  Y = draw(hnp.arrays(np.float32, (N_PROP, 3), elements=st.integers(0, 1)))
  ok = draw(hnp.arrays(np.float32, (N_PROP,), elements=st.integers(0, 1)))
  vid = draw(hnp.arrays(np.int32, (N_PROP,), elements=st.integers(0, 2)))
  tau = draw(st.sampled_from([0.5, 0.8, 0.95, 0.98]))
  return F, Y, ok, vid, np.float32(tau)


@HYP
@given(case=_migration_case())
def test_migration_properties(case):
  F, Y, ok, vid, tau = case
  batch, video = (np.asarray(x) for x in _both_scopes(F, Y, ok, vid, tau))
  for out in (batch, video):
    assert out.shape == Y.shape and out.dtype == np.float32
    assert ((out >= 0) & (out <= 1)).all()
    # Original positives of valid rows stay exactly 1; ok = 0 rows are 0.
    assert (out[(Y == 1) & (ok[:, None] == 1)] == 1).all()
    assert (out[ok == 0] == 0).all()
    # Every value is 0, 1 or a mean similarity in [tau, 1].
    soft = out[(out != 0) & (out != 1)]
    assert (soft >= tau - 1e-6).all()
  # Video scope only removes pairs, so it never adds support.
  assert not ((video > 0) & (batch == 0)).any()
  zero = np.asarray(_both_scopes(F, np.zeros_like(Y), ok, vid, tau)[0])
  assert (zero == 0).all()


# ----------------------------------------------------------------------------
# Thresholds, Eq. (P1).


def _column(values, labels, weak):
  """One class, T = 1: each entry is its own video."""
  n = len(values)
  return (np.asarray(values, np.float32).reshape(n, 1, 1),
          np.asarray(labels).reshape(n, 1, 1), np.asarray(weak).reshape(n, 1))


def test_threshold_worked_test_1():
  # The two -inf logits come from classes absent in the video.
  z, gt, w = _column([7.0, -3.0, 0.1, 0.5, 0.9, 2.0], [0, 0, 0, 1, 0, 1],
                     [0, 0, 1, 1, 1, 1])
  theta = pl_lib.search_thresholds(z, gt, w)
  assert theta.dtype == np.float32 and theta.shape == (1,)
  np.testing.assert_allclose(theta, [0.3], atol=1e-7)


def test_threshold_worked_test_2():
  z, gt, w = _column([5.0, 0.2, 0.4], [0, 1, 1], [0, 1, 1])
  theta = pl_lib.search_thresholds(z, gt, w)
  assert theta[0] == -np.inf


def test_threshold_class_without_positives_is_minus_inf():
  z, gt, w = _column([0.1, 0.2, 0.3], [0, 0, 0], [1, 1, 1])
  assert pl_lib.search_thresholds(z, gt, w)[0] == -np.inf


def _brute_force_thresholds(logits_NxTxC, gt_NxCxT, weak_NxC):
  """Eq. (P1) literally, one class at a time with python floats."""
  N, T, C = logits_NxTxC.shape
  out = []
  for c in range(C):
    pairs = []
    for n in range(N):
      for t in range(T):
        z = logits_NxTxC[n, t, c] if weak_NxC[n, c] else np.float32(-np.inf)
        pairs.append((np.float32(z), int(gt_NxCxT[n, c, t])))
    pairs = sorted(pairs, key=lambda p: p[0])  # python sort is stable
    p = [x[0] for x in pairs]
    labels = [x[1] for x in pairs]
    k = len(p)
    tp0 = sum(labels)
    fs = []
    for i in range(k):
      tp = sum(labels[i:])
      prec = tp / (k - i)
      rec = tp / tp0 if tp0 else float("nan")
      fs.append(2 * prec * rec / max(prec + rec, 1e-12)
                if prec + rec == prec + rec else float("nan"))
    best = int(np.argmax(fs))
    prev = p[best - 1] if best else np.float32(-np.inf)
    out.append(np.float32((p[best] + prev) / np.float32(2)))
  return np.array(out, np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_thresholds_match_brute_force(seed):
  rng = np.random.default_rng(seed)
  N, T, C = 12, 4, 6
  # Rounded logits give ties; class 0 has no positives, class 1 no weak.
  z = np.round(rng.normal(size=(N, T, C)), 1).astype(np.float32)
  gt = (rng.random((N, C, T)) < 0.3).astype(np.uint8)
  weak = (rng.random((N, C)) < 0.6).astype(np.uint8)
  gt[:, 0] = 0
  weak[:, 1] = 0
  got = pl_lib.search_thresholds(z, gt, weak)
  want = _brute_force_thresholds(z, gt, weak)
  np.testing.assert_array_equal(got, want)


def test_search_thresholds_errors():
  with pytest.raises(ValueError, match=r"weak_NxC has shape \(2, 3\)"):
    pl_lib.search_thresholds(np.zeros((2, 3, 1)), np.zeros((2, 1, 3)),
                             np.zeros((2, 3)))
  with pytest.raises(ValueError, match=r"gt_NxCxT has shape \(2, 3, 1\)"):
    pl_lib.search_thresholds(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)),
                             np.zeros((2, 1)))
  with pytest.raises(ValueError, match="contains NaN"):
    pl_lib.search_thresholds(np.full((2, 3, 1), np.nan), np.zeros((2, 1, 3)),
                             np.zeros((2, 1)))


# ----------------------------------------------------------------------------
# Binary and soft labels, class frequencies.


@HYP
@given(z=hnp.arrays(np.float32, (3, 4, 5),
                    elements=st.floats(-3, 3, width=32)),
       weak=hnp.arrays(np.uint8, (3, 5), elements=st.integers(0, 1)),
       theta=hnp.arrays(np.float32, (5,),
                        elements=st.sampled_from([-np.inf, -1.0, 0.0, 2.0])))
def test_binarize_within_weak(z, weak, theta):
  out = pl_lib.binarize(z, theta, weak)
  assert out.dtype == np.uint8 and out.shape == z.shape
  assert not (out & (1 - weak[:, None, :])).any()
  np.testing.assert_array_equal(
      out, ((z > theta) & (weak[:, None, :] == 1)).astype(np.uint8))
  # -inf means every segment of a weak-label class is positive.
  minus_inf = np.isneginf(theta)
  assert (out[:, :, minus_inf] == weak[:, None, minus_inf]).all()


def test_soft_label_values():
  z = np.array([[[2.3, 0.0], [-0.7, 0.0]]], np.float32)
  theta = np.array([0.3, 0.3], np.float32)
  q = pl_lib.soft_labels(z, theta, np.array([[1, 0]]), np.array([1]))
  np.testing.assert_allclose(q[0, :, 0], [0.731059, 0.377541], atol=1e-6)
  np.testing.assert_array_equal(q[0, :, 1], [0, 0])
  q1 = pl_lib.soft_labels(z, theta, np.array([[1, 0]]), np.array([1]),
                          temperature=1.0)
  np.testing.assert_allclose(q1[0, 0, 0], 1 / (1 + np.exp(-2.0)), atol=1e-6)


def test_soft_label_minus_inf_uses_batch_min():
  z = np.array([[[1.0], [3.0]], [[-2.0], [0.5]]], np.float32)
  q = pl_lib.soft_labels(z, np.array([-np.inf]), np.ones((2, 1)), np.ones(2))
  # θ' = -2 - 1 = -3.
  np.testing.assert_allclose(q[:, :, 0], jax.nn.sigmoid((z[:, :, 0] + 3) / 2),
                             atol=1e-7)


def test_soft_labels_padding_invariance():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(3, 10, 5)).astype(np.float32)
  weak = (rng.random((3, 5)) < 0.6).astype(np.float32)
  theta = np.array([-np.inf, 0.1, -np.inf, np.inf, -0.5], np.float32)
  real = pl_lib.soft_labels(z, theta, weak, np.ones(3))
  z_pad = np.concatenate([z, np.full((2, 10, 5), -1e6, np.float32)])
  weak_pad = np.concatenate([weak, np.ones((2, 5), np.float32)])
  fn = jax.jit(pl_lib.soft_labels, static_argnames="temperature")
  padded = fn(z_pad, theta, weak_pad, np.array([1, 1, 1, 0, 0]))
  np.testing.assert_array_equal(padded[:3], real)
  np.testing.assert_array_equal(padded[3:], 0)
  grad = jax.grad(lambda x: fn(x, theta, weak, np.ones(3)).sum())(z)
  np.testing.assert_array_equal(grad, 0)


def test_class_frequencies():
  x = np.zeros((4, 10, 3), np.uint8)
  x[0, :5, 0] = 1
  x[:, :, 2] = 1
  freq = pl_lib.class_frequencies(x)
  assert freq.dtype == np.float32
  np.testing.assert_allclose(freq, [5 / 40, 0, 1])
  with pytest.raises(ValueError, match=r"binary_NxTxC has shape \(4, 10\)"):
    pl_lib.class_frequencies(x[..., 0])
