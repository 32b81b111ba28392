"""Tests for ear_jax/data/features.py: layouts, pooling, loading, errors."""

import math
import os

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from ear_jax import jsonio
from ear_jax.data import features

# pylint: disable=invalid-name


def _pool_reference(x_LxD, T):
  """torch adaptive_avg_pool1d, written out one window at a time."""
  L = len(x_LxD)
  rows = []
  for i in range(T):
    lo, hi = math.floor(i * L / T), math.ceil((i + 1) * L / T)
    rows.append(x_LxD[lo:hi].mean(0))
  return np.stack(rows)


def _write(root, name, vid, x):
  return jsonio.save_npy_atomic(features.feature_path(root, name, vid), x)


def test_layouts():
  specs = features.SEGMENT_FEATURES
  assert {n: (s.subdir, s.dim, s.frames_per_segment)
          for n, s in specs.items()} == {
              "clip": ("feats_CLIP/segment_feats", 768, 1),
              "clap": ("feats_CLAP/segment_feats", 512, 1),
              "vggish": ("feats/vggish", 128, 1),
              "res152": ("feats/res152", 2048, 8),
              "r2plus1d_18": ("feats/r2plus1d_18", 512, 1),
          }
  assert features.EVENT_FEATURES == {
      "clip": "feats_CLIP/event_feats/all_event_feats.npy",
      "clap": "feats_CLAP/event_feats/all_event_feats.npy",
  }
  p = features.feature_path("/data/LLP", "clip", "BjCEufrlXm4")
  assert str(p) == "/data/LLP/feats_CLIP/segment_feats/BjCEufrlXm4.npy"
  with pytest.raises(ValueError, match=r"unknown feature set 'vgg'.*'clap'"):
    features.feature_path("/data", "vgg", "x")


@settings(max_examples=40, deadline=None, derandomize=True)
@given(L=st.integers(1, 40), T=st.integers(1, 40), D=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_adaptive_pool_matches_reference(L, T, D, seed):
  x = np.random.default_rng(seed).standard_normal((L, D)).astype(np.float32)
  got = features.adaptive_avg_pool1d(x, T)
  assert got.shape == (T, D) and got.dtype == np.float32
  np.testing.assert_allclose(got, _pool_reference(x, T), rtol=1e-5, atol=1e-6)


def test_adaptive_pool_examples():
  x = np.arange(6, dtype=np.float64)[:, None]
  np.testing.assert_array_equal(features.adaptive_avg_pool1d(x, 6), x)
  # L=6 -> T=4: windows [0,2) [1,3) [3,5) [4,6).
  np.testing.assert_allclose(
      features.adaptive_avg_pool1d(x, 4)[:, 0], [0.5, 1.5, 3.5, 4.5])
  # L=2 -> T=5 repeats rows; L=3 -> T=2 overlaps on the middle row.
  np.testing.assert_allclose(
      features.adaptive_avg_pool1d(x[:2], 5)[:, 0], [0, 0, 0.5, 1, 1])
  np.testing.assert_allclose(
      features.adaptive_avg_pool1d(x[:3], 2)[:, 0], [0.5, 1.5])
  with pytest.raises(ValueError, match="out_len must be >= 1"):
    features.adaptive_avg_pool1d(x, 0)


def test_save_npy_atomic(tmp_path):
  x = np.arange(12, dtype=np.float64).reshape(3, 4)
  path = jsonio.save_npy_atomic(tmp_path / "a" / "b" / "x.npy", x)
  np.testing.assert_array_equal(np.load(path), x)
  assert np.load(path).dtype == np.float64
  assert os.listdir(path.parent) == ["x.npy"]  # no temporary left behind


def test_load_llp(tmp_path):
  rng = np.random.default_rng(0)
  ids = ["a" * 11, "b" * 11, "c" * 11]
  clip = {v: rng.standard_normal((10, 768)).astype(np.float16) for v in ids}
  res = {v: rng.standard_normal((80, 2048)).astype(np.float32) for v in ids}
  for v in ids:
    _write(tmp_path, "clip", v, clip[v])
    _write(tmp_path, "res152", v, res[v])
  got = features.load_segment_features(tmp_path, "clip", ids[::-1])
  assert got.shape == (3, 10, 768) and got.dtype == np.float32
  np.testing.assert_array_equal(got[0], clip[ids[2]].astype(np.float32))
  got = features.load_segment_features(tmp_path, "res152", ids)
  assert got.shape == (3, 10, 2048)
  # Segment t = mean of frames 8t .. 8t+7.
  np.testing.assert_allclose(got[1, 3], res[ids[1]][24:32].mean(0), atol=1e-6)


def test_load_unav_pools_and_pads(tmp_path):
  rng = np.random.default_rng(1)
  lengths, t_v = [7, 12, 3], [10, 12, 5]
  xs = [rng.standard_normal((L, 512)).astype(np.float32) for L in lengths]
  ids = [f"v{i}" for i in range(3)]
  for v, x in zip(ids, xs):
    _write(tmp_path, "clap", v, x)
  got = features.load_segment_features(tmp_path, "clap", ids, t_v, 15)
  assert got.shape == (3, 15, 512)
  for i, (x, t) in enumerate(zip(xs, t_v)):
    np.testing.assert_allclose(got[i, :t], _pool_reference(x, t), atol=1e-5)
    assert not got[i, t:].any()
  assert features.load_segment_features(
      tmp_path, "clap", ids, t_v).shape == (3, 12, 512)
  with pytest.raises(ValueError, match=r"max_segments=11 .*'v1'.* >= 12"):
    features.load_segment_features(tmp_path, "clap", ids, t_v, 11)


def test_threaded_load_matches_serial(tmp_path):
  rng = np.random.default_rng(2)
  ids = [f"id{i:04d}" for i in range(100)]  # two thread-pool chunks
  for v in ids:
    _write(tmp_path, "vggish", v,
           rng.standard_normal((10, 128)).astype(np.float32))
  a = features.load_segment_features(tmp_path, "vggish", ids, num_workers=4)
  b = features.load_segment_features(tmp_path, "vggish", ids, num_workers=1)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(
      a[77], np.load(features.feature_path(tmp_path, "vggish", ids[77])))
  with open(features.feature_path(tmp_path, "vggish", ids[90]), "wb") as f:
    f.write(b"not npy")  # in the second chunk, on a worker thread
  with pytest.raises(ValueError, match=r"id0090.npy: cannot read as .npy"):
    features.load_segment_features(tmp_path, "vggish", ids, num_workers=4)


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=r"feats_CLIP/segment_feats not found.*export_clip"):
    features.load_segment_features(tmp_path, "clip", ["x"])
  with pytest.raises(FileNotFoundError, match=r"feats/res152 not found.*"
                     r"export_han.py"):
    features.load_segment_features(tmp_path, "res152", ["x"])
  _write(tmp_path, "vggish", "good", np.zeros((10, 128)))
  missing = [f"m{i}" for i in range(7)]
  with pytest.raises(FileNotFoundError,
                     match=r"7 of 8 videos, e.g. \['m0', 'm1', 'm2', 'm3',"
                     r" 'm4'\]"):
    features.load_segment_features(tmp_path, "vggish", ["good"] + missing)
  _write(tmp_path, "vggish", "short", np.zeros((9, 128)))
  with pytest.raises(ValueError, match=r"short.npy: 'vggish' features have"
                     r" shape \(9, 128\); expected \(10, 128\)"):
    features.load_segment_features(tmp_path, "vggish", ["good", "short"])
  _write(tmp_path, "vggish", "flat", np.zeros(1280))
  with pytest.raises(ValueError, match=r"flat.npy.*shape \(1280,\)"):
    features.load_segment_features(tmp_path, "vggish", ["flat"])
  with pytest.raises(ValueError, match=r"flat.npy.*expected \(L, 128\)"):
    features.load_segment_features(tmp_path, "vggish", ["flat"], [3])
  bad = np.zeros((10, 128), np.float32)
  bad[3, 5] = np.nan
  _write(tmp_path, "vggish", "nan", bad)
  with pytest.raises(ValueError, match=r"nan.npy: 'vggish' features contain"
                     " NaN or inf"):
    features.load_segment_features(tmp_path, "vggish", ["good", "nan"])
  bad[3, 5] = np.inf
  _write(tmp_path, "vggish", "inf", bad)
  with pytest.raises(ValueError, match=r"inf.npy.*NaN or inf"):
    features.load_segment_features(tmp_path, "vggish", ["inf"], [4])
  with pytest.raises(ValueError, match=r"max_segments is only for UnAV"):
    features.load_segment_features(tmp_path, "vggish", ["good"],
                                   max_segments=12)
  with pytest.raises(ValueError, match=r"num_segments must hold one value"):
    features.load_segment_features(tmp_path, "vggish", ["good"], [0])


def test_event_features(tmp_path):
  rng = np.random.default_rng(3)
  x = rng.standard_normal((25, 768))
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  path = tmp_path / features.EVENT_FEATURES["clip"]
  jsonio.save_npy_atomic(path, x)
  got = features.load_event_features(tmp_path, "clip", 25)
  assert got.shape == (25, 768) and got.dtype == np.float32
  np.testing.assert_allclose(got, x, rtol=1e-6)
  with pytest.raises(ValueError, match=r"shape \(25, 768\); expected"
                     r" \(100, 768\)"):
    features.load_event_features(tmp_path, "clip", 100)
  x[4] *= 1.01
  jsonio.save_npy_atomic(path, x)
  with pytest.raises(ValueError, match=r"1 rows are not L2-normalised \(row 4"
                     r" has norm 1.010000.*re-export"):
    features.load_event_features(tmp_path, "clip", 25)
  x[4] = np.nan
  jsonio.save_npy_atomic(path, x)
  with pytest.raises(ValueError, match="NaN or inf"):
    features.load_event_features(tmp_path, "clip", 25)
  with pytest.raises(FileNotFoundError, match=r"feats_CLAP/event_feats/"
                     r"all_event_feats.npy not found.*\(25, 512\)"):
    features.load_event_features(tmp_path, "clap", 25)
  with pytest.raises(ValueError, match="unknown event feature set 'vggish'"):
    features.load_event_features(tmp_path, "vggish", 25)
