"""Per-class F1 and per-video scores written beside eval/<split>.json."""

import json

import numpy as np
import pytest

from ear_jax import metrics as metrics_lib


def _arrays():
  # 2 videos, 3 classes, 4 segments.
  pa = np.zeros((2, 3, 4), np.uint8)
  pv = np.zeros((2, 3, 4), np.uint8)
  ga = np.zeros((2, 3, 4), np.uint8)
  gv = np.zeros((2, 3, 4), np.uint8)
  pa[0, 0, 0:2] = 1   # class 0 audio: 2 TP segments in video 0
  ga[0, 0, 0:2] = 1
  pa[1, 0, 3] = 1     # 1 FP segment in video 1
  ga[1, 1, 1:3] = 1   # class 1 audio: 2 FN segments
  pv[0, 0, 0:4] = 1   # class 0 visual: 4 predicted, 2 true
  gv[0, 0, 2:4] = 1
  return pa, pv, ga, gv


def test_per_class_f1_pools_counts_over_videos():
  f = metrics_lib.per_class_f1(*_arrays())
  # Audio, class 0: TP 2, FP 1, FN 0 -> 2*2 / (4 + 1) = 80 %.
  assert f["seg"]["a"][0] == pytest.approx(80.0)
  assert f["seg"]["a"][1] == 0.0  # only FNs
  assert f["seg"]["a"][2] is None  # absent everywhere
  # Visual, class 0: TP 2, FP 2 -> 4 / 6.
  assert f["seg"]["v"][0] == pytest.approx(100 * 4 / 6)
  # AV, class 0: pred a&v = segs 0,1 (v0) ; gt a&v = none -> 2 FP.
  assert f["seg"]["av"][0] == 0.0
  # Event = a + v counts: TP 4, FP 3, FN 2 (class 1) ... class 0: FN 0.
  assert f["seg"]["event"][0] == pytest.approx(100 * 8 / (8 + 3))
  # Events: audio class 0 video 0 matches (IoU 1); video 1 one FP event.
  assert f["evt"]["a"][0] == pytest.approx(100 * 2 / 3)


def test_write_eval_details(tmp_path):
  pa, pv, ga, gv = _arrays()
  paths = metrics_lib.write_eval_details(
      tmp_path, "test", ["x_0_10", "y_0_10"], ["A", "B", "C"], pa, pv, ga, gv)
  with open(paths["per_class"]) as f:
    per_class = json.load(f)
  assert per_class["seg"]["a"] == {"A": pytest.approx(80.0), "B": 0.0,
                                   "C": None}
  lines = open(paths["per_video"]).read().splitlines()
  assert lines[0].split("\t") == ["filename", *metrics_lib.PER_VIDEO_KEYS]
  per_video = metrics_lib.avvp_scores(pa, pv, ga, gv,
                                      per_video=True)["per_video"]
  for i, line in enumerate(lines[1:]):
    name, *vals = line.split("\t")
    assert name == ["x_0_10", "y_0_10"][i]
    np.testing.assert_allclose(
        [float(v) for v in vals],
        [100 * per_video[k][i] for k in metrics_lib.PER_VIDEO_KEYS],
        atol=1e-4)
  with pytest.raises(ValueError, match="1 filenames for 2"):
    metrics_lib.write_eval_details(tmp_path, "t", ["x"], "ABC", pa, pv, ga, gv)
