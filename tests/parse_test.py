"""Tests for parsed-event extraction (report.extract_events) and its JSON."""

import json
import os

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
import pytest

from ear_jax import metrics as metrics_lib
from ear_jax import report as report_lib
from ear_jax.data import features as features_lib

C, T = 4, 10
CLASSES = ("Speech", "Dog", "Car", "Cat")


def bool_arrays(*shape):
  return hnp.arrays(np.bool_, shape)


def probs(*shape):
  return hnp.arrays(np.float64, shape,
                    elements=st.floats(0.0, 1.0, allow_nan=False))


def check_schema(events, class_names, num_segments):
  for e in events:
    assert set(e) == {"modality", "class", "onset", "offset", "confidence"}
    assert e["modality"] in report_lib.MODALITIES
    assert e["class"] in class_names
    assert isinstance(e["onset"], float) and isinstance(e["offset"], float)
    assert 0 <= e["onset"] < e["offset"] <= num_segments
    assert isinstance(e["confidence"], float)
    assert 0.0 <= e["confidence"] <= 1.0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(a=bool_arrays(C, T), v=bool_arrays(C, T), pa=probs(C, T),
       pv=probs(C, T), g=probs(C))
def test_events_reproduce_binarised_rows(a, v, pa, pv, g):
  events = report_lib.extract_events(a, v, pa, pv, g, CLASSES)
  check_schema(events, CLASSES, T)
  rows = report_lib.events_to_rows(events, CLASSES, T)
  np.testing.assert_array_equal(rows["audio"], a)
  np.testing.assert_array_equal(rows["visual"], v)
  np.testing.assert_array_equal(rows["audio-visual"], a & v)
  # Same events as the metrics' definition (maximal runs of 1s).
  n_runs = sum(int(metrics_lib.event_runs(x)[2].sum()) for x in (a, v, a & v))
  assert len(events) == n_runs
  json.dumps(events)  # plain JSON types only


def test_confidence_is_mean_segment_prob_times_video_prob():
  a = np.zeros((C, T), bool)
  v = np.zeros((C, T), bool)
  a[1, 2:5] = True
  v[1, 3:8] = True
  pa = np.full((C, T), 0.8)
  pa[1, 2] = 0.5
  pv = np.full((C, T), 0.6)
  g = np.array([0.1, 0.5, 0.2, 0.3])
  events = report_lib.extract_events(a, v, pa, pv, g, CLASSES,
                                     segment_seconds=1.0)
  by_mod = {e["modality"]: e for e in events}
  assert by_mod["audio"] == {"modality": "audio", "class": "Dog",
                             "onset": 2.0, "offset": 5.0,
                             "confidence": pytest.approx(0.7 * 0.5)}
  assert by_mod["visual"]["confidence"] == pytest.approx(0.6 * 0.5)
  assert (by_mod["audio-visual"]["onset"],
          by_mod["audio-visual"]["offset"]) == (3.0, 5.0)
  assert by_mod["audio-visual"]["confidence"] == pytest.approx(0.48 * 0.5)
  kept = report_lib.extract_events(a, v, pa, pv, g, CLASSES,
                                   min_confidence=0.3)
  assert [e["modality"] for e in kept] == ["audio", "visual"]


def test_extract_events_checks_shapes():
  z = np.zeros((C, T))
  with pytest.raises(ValueError, match="C = 4"):
    report_lib.extract_events(z[:3], z[:3], z[:3], z[:3], np.zeros(3),
                              CLASSES)
  with pytest.raises(ValueError, match="video_prob_C"):
    report_lib.extract_events(z, z, z, z, np.zeros(5), CLASSES)


# ----------------------------------------------------------------------------
# The parse stage on a stage-3 workdir.


def save_untrained_parser(cfg, step=3):
  """Leaves cfg.workdir as train_parser would (config.json + best/), with an
  untrained parser: enough to test everything downstream of stage 3."""
  # pylint: disable=g-import-not-at-top
  import optax
  from ear_jax import checkpoint as ckpt_lib
  from ear_jax import train_state as ts_lib
  from ear_jax import trainer as trainer_lib
  from ear_jax import parser_lib
  import jax
  trainer_lib.write_config(cfg.workdir, cfg)
  make_model = parser_lib.model_factory(cfg)
  # Jitted init: eager init dispatches (and compiles) every op one by one.
  state = jax.jit(
      lambda: ts_lib.create_train_state(make_model, optax.identity())[1])()
  ckpt = ckpt_lib.Checkpointer(cfg.workdir)
  ckpt.save_best(step, dict(params=state.params,
                            model_state=state.model_state),
                 dict(stage="train_parser", step=step, best_step=step))
  ckpt.wait()
  ckpt.close()


def make_stage3_workdir(workdir, llp_root, name="ear"):
  # pylint: disable=g-import-not-at-top
  from ear_jax.configs import stage3 as stage3_config
  cfg = stage3_config.get_config("tiny")
  cfg.workdir = str(workdir)
  cfg.pseudo_labels_dir = str(workdir)
  cfg.data.llp_root = str(llp_root)
  cfg.model.name = name
  save_untrained_parser(cfg)
  return cfg


@pytest.fixture(scope="module")
def parsed_run(tmp_path_factory):
  # pylint: disable=g-import-not-at-top
  from ear_jax.configs import parse as parse_config
  from ear_jax.data import synthetic
  from ear_jax.stages import parse as parse_lib
  root = tmp_path_factory.mktemp("parse")
  synthetic.write_synthetic(root / "data", seed=0, num_llp=(4, 3, 3),
                            num_unav=(1, 1, 1))
  llp = root / "data" / "LLP"
  make_stage3_workdir(root / "s3", llp)
  c = parse_config.get_config("tiny")
  c.workdir = str(root / "out")
  c.parser_workdir = str(root / "s3")
  c.features_root = str(llp)
  c.annotations_dir = str(llp)
  c.progress = False
  return c, parse_lib, parse_lib.run(c)


def test_parse_writes_schema_index_and_timelines(parsed_run):
  # pylint: disable=g-import-not-at-top
  from ear_jax.data import avvp
  c, parse_lib, _ = parsed_run
  out = c.workdir
  with open(f"{out}/parsed/index.json") as f:
    index = json.load(f)
  ids = features_lib.available_ids(c.features_root, ["vggish", "res152",
                                                     "r2plus1d_18"])
  assert [v["video_id"] for v in index["videos"]] == ids and len(ids) >= 10
  assert index["model"] == "ear" and index["checkpoint_step"] == 3
  assert index["checkpoint"] == "best"  # "auto" resolved
  gt = parse_lib.ground_truth(c.annotations_dir)
  assert sum(v["has_gt"] for v in index["videos"]) == len(gt) == 6
  classes = list(avvp.LLP_CLASSES)
  for entry in index["videos"]:
    with open(f"{out}/{entry['json']}") as f:
      parsed = json.load(f)
    assert set(parsed) == {"video_id", "num_segments", "events",
                           "video_level", "filename", "duration",
                           "segment_seconds", "windowing"}
    assert parsed["video_id"] == entry["video_id"]
    assert parsed["num_segments"] == 10 and entry["status"] == "parsed"
    assert parsed["windowing"] == dict(window=10, stride=5, starts=[0])
    # Named by the LLP filename (<id>_<start>_<end>) in the CSVs.
    assert parsed["filename"].startswith(parsed["video_id"] + "_")
    assert list(parsed["video_level"]) == classes
    assert all(0 <= p <= 1 for p in parsed["video_level"].values())
    check_schema(parsed["events"], classes, 10)
    assert len(parsed["events"]) == entry["num_events"]
    with open(f"{out}/{entry['timeline']}", "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_ten_segment_videos_give_exactly_todays_events(parsed_run):
  """T = 10 (one window): the events equal the 10-segment path's (all LLP
  inputs predicted at once, binarize_parser_outputs, extract_events)."""
  # pylint: disable=g-import-not-at-top
  from ear_jax import parser_lib
  from ear_jax.data import avvp
  from ear_jax.data import llp_features
  c, _, out = parsed_run
  cfg, graphdef, weights, _, _ = parser_lib.load_parser(c.parser_workdir)
  inputs = llp_features.load_parser_inputs(
      c.features_root, out["ids"], cfg.data.features,
      cfg.model.use_3d_with_clip)
  today = parser_lib.predict(graphdef, weights, inputs, c.batch_size)
  pred_a, pred_v = metrics_lib.binarize_parser_outputs(
      today["global_prob"], today["a_logits"], today["v_logits"], strict=True)
  assert pred_a.any() and pred_v.any(), "untrained parser predicts nothing"
  for i, vid in enumerate(out["ids"]):
    with open(f"{c.workdir}/parsed/{vid}.json") as f:
      parsed = json.load(f)
    assert parsed["events"] == report_lib.extract_events(
        pred_a[i], pred_v[i], today["a_prob"][i], today["v_prob"][i],
        today["global_prob"][i], avvp.LLP_CLASSES)
    assert parsed["video_level"] == {
        name: round(float(p), 6)
        for name, p in zip(avvp.LLP_CLASSES, today["global_prob"][i])}
    np.testing.assert_array_equal(out["parsed"][vid].merged.pred_a, pred_a[i])


def test_llp_csvs_score_like_the_predictions(parsed_run):
  """eval_{audio,visual}.csv read back give the binarised rows exactly."""
  # pylint: disable=g-import-not-at-top
  from ear_jax.data import avvp
  c, _, out = parsed_run
  rec = avvp.read_llp_split(c.annotations_dir, "test")
  got = [avvp.read_llp_eval(f"{c.workdir}/parsed/eval_{m}.csv", rec.filenames)
         for m in ("audio", "visual")]
  want = [np.stack([getattr(out["parsed"][v].merged, k) for v in rec.ids])
          for k in ("pred_a", "pred_v")]
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])
  assert metrics_lib.avvp_scores(*got, rec.gt_a, rec.gt_v) == (
      metrics_lib.avvp_scores(*want, rec.gt_a, rec.gt_v))


def test_parse_rejects_a_workdir_of_another_stage(tmp_path):
  # pylint: disable=g-import-not-at-top
  from ear_jax import parser_lib
  (tmp_path / "config.json").write_text(json.dumps({"stage": "demo"}))
  with pytest.raises(ValueError, match="train_parser"):
    parser_lib.load_parser(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="config.json"):
    parser_lib.load_parser(str(tmp_path / "nope"))


def test_ground_truth_needs_a_split_csv(tmp_path):
  # pylint: disable=g-import-not-at-top
  from ear_jax.stages import parse as parse_lib
  assert not parse_lib.ground_truth(None)
  with pytest.raises(FileNotFoundError, match="AVVP_val_pd.csv"):
    parse_lib.ground_truth(str(tmp_path))


def test_resolve_checkpoint(tmp_path):
  # pylint: disable=g-import-not-at-top
  from ear_jax import runs as runs_lib
  assert runs_lib.resolve_checkpoint(str(tmp_path), "auto") == "latest"
  (tmp_path / "best" / "12").mkdir(parents=True)
  assert runs_lib.resolve_checkpoint(str(tmp_path), "auto") == "best"
  assert runs_lib.resolve_checkpoint(str(tmp_path), "latest") == "latest"
  with pytest.raises(ValueError, match="auto"):
    runs_lib.resolve_checkpoint(str(tmp_path), "last")


def test_parse_on_features_from_the_exporter(parsed_run, tmp_path,
                                            sample_video):
  """Raw video -> feature_export (HAN layout, tiny random nets) -> parse."""
  # pylint: disable=g-import-not-at-top
  from ear_jax.configs import export_han
  from ear_jax.configs import parse as parse_config
  from feature_export import driver as export_driver
  c_parse, parse_lib, _ = parsed_run
  videos = tmp_path / "videos"
  videos.mkdir()
  os.symlink(sample_video, videos / sample_video.name)
  e = export_han.get_config("tiny")
  e.workdir = str(tmp_path / "export_wd")
  e.videos_dir = str(videos)
  e.output_root = str(tmp_path / "feats")
  e.progress = False
  manifest = export_driver.run(e)
  assert manifest["counts"]["done"] == 1 and not manifest["failures"]
  p = parse_config.get_config("tiny")
  p.workdir = str(tmp_path / "parsed")
  p.parser_workdir = c_parse.parser_workdir
  p.features_root = e.output_root
  out = parse_lib.run(p)
  assert out["ids"] == ["BjCEufrlXm4"]
  with open(tmp_path / "parsed" / "parsed" / "BjCEufrlXm4.json") as f:
    parsed = json.load(f)
  assert parsed["video_id"] == "BjCEufrlXm4" and parsed["num_segments"] == 10
  assert os.path.exists(tmp_path / "parsed" / "timelines" / "BjCEufrlXm4.png")
