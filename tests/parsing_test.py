"""Windowed parsing of any length (ear_jax/parsing.py): windows, the merge
rule, and the trained-parser API (Parser) on features and raw videos."""

import numpy as np
import pytest

from ear_jax import jsonio
from ear_jax import metrics as metrics_lib
from ear_jax import parsing
from ear_jax import report as report_lib
from ear_jax.data import avvp

C = len(avvp.LLP_CLASSES)


def test_window_starts():
  assert parsing.window_starts(10, 10, 5) == [0]
  assert parsing.window_starts(4, 10, 5) == [0]
  assert parsing.window_starts(35, 10, 5) == [0, 5, 10, 15, 20, 25]
  assert parsing.window_starts(35, 10, 10) == [0, 10, 20, 25]  # end-aligned
  assert parsing.window_starts(30, 10, 10) == [0, 10, 20]
  assert parsing.window_starts(11, 10, 3) == [0, 1]
  with pytest.raises(ValueError, match="stride=11 > window=10"):
    parsing.window_starts(30, 10, 11)
  with pytest.raises(ValueError, match=">= 1"):
    parsing.window_starts(0, 10, 5)


def test_make_windows_zero_pads():
  x = np.arange(12.0).reshape(4, 3)
  w = parsing.make_windows(x, 10, [0])
  assert w.shape == (1, 10, 3) and w.dtype == np.float32
  np.testing.assert_array_equal(w[0, :4], x)
  assert not w[0, 4:].any()


def _random_outputs(rng, K, W=10):
  return (rng.uniform(0, 1, (K, C)).astype(np.float32),
          rng.normal(0, 2, (K, W, C)).astype(np.float32),
          rng.normal(0, 2, (K, W, C)).astype(np.float32))


@pytest.mark.parametrize("strict", [True, False])
def test_one_window_is_exactly_the_ten_segment_path(strict):
  """T = W: predictions and events are today's (binarize_parser_outputs,
  float64 probabilities, extract_events with the video-level gate)."""
  rng = np.random.default_rng(0)
  for _ in range(20):
    g, a, v = _random_outputs(rng, 1)
    m = parsing.merge_windows(g, a, v, [0], 10, strict)
    pred_a, pred_v = metrics_lib.binarize_parser_outputs(g, a, v, strict)
    np.testing.assert_array_equal(m.pred_a, pred_a[0])
    np.testing.assert_array_equal(m.pred_v, pred_v[0])
    sig = lambda x: np.moveaxis(1 / (1 + np.exp(-x.astype(np.float64))), 1, 2)
    today = report_lib.extract_events(pred_a[0], pred_v[0], sig(a)[0],
                                      sig(v)[0], g[0], avvp.LLP_CLASSES)
    assert parsing.events_of(m) == today
    np.testing.assert_array_equal(m.video_prob, g[0])


def test_overlapping_windows_average_probabilities_and_gates():
  rng = np.random.default_rng(1)
  starts = parsing.window_starts(15, 10, 5)  # [0, 5]
  g, a, v = _random_outputs(rng, 2)
  m = parsing.merge_windows(g, a, v, starts, 15)
  sa = metrics_lib.sigmoid_f32(a).astype(np.float64)
  t = 7  # covered by window 0 (row 7) and window 1 (row 2)
  np.testing.assert_allclose(m.prob_a[:, t], (sa[0, 7] + sa[1, 2]) / 2,
                             rtol=1e-6)
  np.testing.assert_allclose(m.gate[:, t], (g[0] + g[1]) / 2, rtol=1e-6)
  np.testing.assert_allclose(m.prob_a[:, 2], sa[0, 2], rtol=1e-6)  # only w0
  np.testing.assert_allclose(m.prob_a[:, 12], sa[1, 7], rtol=1e-6)  # only w1
  np.testing.assert_array_equal(m.video_prob, g.max(0))
  want = (m.prob_a > 0.5) & (m.gate > 0.5)
  np.testing.assert_array_equal(m.pred_a, want)
  rows = report_lib.events_to_rows(parsing.events_of(m), avvp.LLP_CLASSES,
                                   15)
  np.testing.assert_array_equal(rows["audio"], m.pred_a)
  np.testing.assert_array_equal(rows["audio-visual"], m.pred_a & m.pred_v)


def test_short_video_is_padded_and_masked():
  rng = np.random.default_rng(2)
  g, a, v = _random_outputs(rng, 1)
  m = parsing.merge_windows(g, a, v, [0], 4)
  assert m.pred_a.shape == (C, 4) and m.prob_v.shape == (C, 4)
  full = parsing.merge_windows(g, a, v, [0], 10)
  np.testing.assert_array_equal(m.pred_a, full.pred_a[:, :4])
  for e in parsing.events_of(m):
    assert e["offset"] <= 4.0


def test_merge_checks_shapes():
  rng = np.random.default_rng(3)
  g, a, v = _random_outputs(rng, 2)
  with pytest.raises(ValueError, match="window outputs disagree"):
    parsing.merge_windows(g, a, v[:1], [0, 5], 15)
  with pytest.raises(ValueError, match="1 window starts for 2 windows"):
    parsing.merge_windows(g, a, v, [0], 15)
  with pytest.raises(ValueError, match="uncovered"):
    parsing.merge_windows(g, a, v, [0, 10], 25)


def test_timeline_ticks_stay_legible_for_long_videos(tmp_path):
  # pylint: disable=g-import-not-at-top
  from ear_jax import plots as plots_lib
  assert [plots_lib.time_tick_step(s) for s in (10, 35, 300, 3600)] == [
      1.0, 2.0, 15.0, 300.0]
  a = np.zeros((C, 300), np.uint8)
  a[3, 100:140] = 1
  path = plots_lib.timeline(str(tmp_path / "t.png"), {"p": (a, a)},
                            avvp.LLP_CLASSES)
  from PIL import Image
  with Image.open(path) as im:
    assert im.size[0] == 1600  # 16 in at 100 dpi: the widest


def test_any_length_inputs_and_their_errors(tmp_path):
  """Stored rows of any length -> parser inputs; bad files name the fix."""
  # pylint: disable=g-import-not-at-top
  from ear_jax.data import features as features_lib
  from ear_jax.data import llp_features
  rng = np.random.default_rng(0)
  arrays = dict(vggish=rng.standard_normal((13, 128)),
                res152=rng.standard_normal((13 * 8, 2048)),
                r2plus1d_18=rng.standard_normal((13, 512)))
  a, v = llp_features.inputs_from_arrays(arrays, "vggish_res152_r2plus1d")
  assert a.shape == (13, 128) and v.shape == (13, 2048 + 512)
  np.testing.assert_allclose(v[2, :2048], arrays["res152"][16:24].mean(0),
                             rtol=1e-5, atol=1e-6)
  for name, x in arrays.items():
    jsonio.save_npy_atomic(
        features_lib.feature_path(tmp_path, name, "vid"), x)
  a2, v2 = llp_features.load_video_inputs(str(tmp_path), "vid",
                                          "vggish_res152_r2plus1d")
  np.testing.assert_allclose(a2, a, rtol=1e-6)
  np.testing.assert_allclose(v2, v, rtol=1e-6)
  with pytest.raises(ValueError, match=r"\(T \* 8, 2048\)"):
    llp_features.inputs_from_arrays(dict(arrays, res152=arrays["res152"][:-1]),
                                    "vggish_res152_r2plus1d", name="x.mp4")
  with pytest.raises(ValueError, match="different numbers of 1-s segments"):
    llp_features.inputs_from_arrays(dict(arrays, vggish=arrays["vggish"][:5]),
                                    "vggish_res152_r2plus1d")
  with pytest.raises(ValueError, match="no 'clap' features"):
    llp_features.inputs_from_arrays(arrays, "clip_clap")
  with pytest.raises(FileNotFoundError, match="export_han.py"):
    llp_features.load_video_inputs(str(tmp_path), "other",
                                   "vggish_res152_r2plus1d")


def test_llp_eval_csv_round_trip_and_errors(tmp_path):
  text = avvp.format_llp_eval([("a_0_10", 2, 5, "Dog"), ("b_0_10", 0, 10,
                                                         "Speech")])
  assert text.splitlines() == ["filename\tonset\toffset\tevent_labels",
                               "a_0_10\t2\t5\tDog", "b_0_10\t0\t10\tSpeech"]
  path = tmp_path / "eval_audio.csv"
  path.write_text(text)
  x = avvp.read_llp_eval(path, ["b_0_10", "a_0_10", "c_0_10"])
  assert x.shape == (3, C, 10)
  assert x[1, avvp.LLP_CLASSES.index("Dog")].tolist() == [0, 0, 1, 1, 1, 0,
                                                          0, 0, 0, 0]
  assert x[0].sum() == 10 and not x[2].any()
  with pytest.raises(ValueError, match="tab/newline"):
    avvp.format_llp_eval([("a\tb", 0, 1, "Dog")])
  path.write_text(avvp.format_llp_eval([("a_0_10", 0, 12, "Dog")]))
  with pytest.raises(ValueError, match=r"integer second in \[0, 10\]"):
    avvp.read_llp_eval(path, ["a_0_10"])
  assert avvp.read_llp_eval(path, ["a_0_10"], num_segments=12).sum() == 12


def test_exporters_for_features():
  pytest.importorskip("av")
  pytest.importorskip("torch")
  # pylint: disable=g-import-not-at-top
  from feature_export import registry
  assert registry.exporters_for(["clap", "clip", "r2plus1d_18"]) == {
      "clip_clap": ("clap", "clip"), "han": ("r2plus1d_18",)}
  with pytest.raises(ValueError, match="no exporter writes feature 'x'"):
    registry.exporters_for(["x"])
