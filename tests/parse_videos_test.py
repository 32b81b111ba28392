"""Raw videos of any length -> events in one command (configs/parse.py with
`videos`), broken inputs, resume, and the ear_jax.Parser API on videos and
features (tiny random exporters, an untrained tiny parser)."""

import json
import os

import numpy as np
import pytest

# pylint: disable=g-import-not-at-top,wrong-import-position
# pylint: disable=redefined-outer-name

pytest.importorskip("av")

import ear_jax
import export_fixtures
import parse_test
from ear_jax.configs import export_han
from ear_jax.configs import parse as parse_config
from ear_jax import report as report_lib
from ear_jax.data import avvp
from ear_jax.stages import parse as parse_stage
from feature_export import registry

BROKEN = {
    "empty": "the file is empty (0 bytes)",
    "corrupt": "cannot open: InvalidDataError",
    "noaudio": "NoAudioError: no audio stream (vggish)",
    "codec": "no decoder for the video stream's codec",
}


@pytest.fixture(scope="module")
def parser_workdir(tmp_path_factory):
  """An untrained tiny EAR parser on the HAN feature set (stage-3 layout)."""
  root = tmp_path_factory.mktemp("parse_videos")
  cfg = parse_test.make_stage3_workdir(root / "s3", root / "unused")
  assert cfg.data.features == "vggish_res152_r2plus1d"
  return str(root / "s3")


@pytest.fixture(scope="module")
def one_command(tmp_path_factory, parser_workdir):
  """videos/ = a 35-s repeat of a 10-s clip, the clip, and broken files."""
  root = tmp_path_factory.mktemp("one_command")
  videos = root / "videos"
  export_fixtures.write_broken_videos(videos)
  export_fixtures.write_clip(videos / "clip10.mp4", 10.0, 8, size=(64, 48))
  export_fixtures.repeat_clip(videos / "clip10.mp4", videos / "long35.mp4",
                              35.0)
  c = parse_config.get_config("tiny")
  c.workdir = str(root / "out")
  c.parser_workdir = parser_workdir
  c.videos = str(videos)
  c.progress = False
  c.strict = False  # an untrained parser sits near 0.5: more events
  return c, parse_stage.run(c)


def _index(c):
  with open(os.path.join(c.workdir, "parsed", "index.json")) as f:
    return json.load(f)


def test_one_command_parses_a_long_video_and_records_failures(one_command):
  c, out = one_command
  index = _index(c)
  rows = {r["video_id"]: r for r in index["videos"]}
  assert set(rows) == {"clip10", "long35", *BROKEN}
  assert index["counts"] == dict(total=6, parsed=2, failed=4)
  for name, message in BROKEN.items():
    assert rows[name]["status"] == "failed", name
    assert message in rows[name]["reason"], (name, rows[name]["reason"])
  long35 = rows["long35"]
  assert long35["status"] == "parsed" and long35["num_segments"] == 35
  assert long35["duration"] == pytest.approx(35.0, abs=0.05)
  with open(os.path.join(c.workdir, long35["json"])) as f:
    parsed = json.load(f)
  assert parsed["num_segments"] == 35 and parsed["windowing"] == dict(
      window=10, stride=5, starts=[0, 5, 10, 15, 20, 25])
  events = parsed["events"]
  assert any(e["onset"] >= 10 for e in events), events
  assert max(e["offset"] for e in events) <= 35
  rows_ = report_lib.events_to_rows(events, avvp.LLP_CLASSES, 35)
  p = out["parsed"]["long35"].merged
  np.testing.assert_array_equal(rows_["audio"], p.pred_a)
  np.testing.assert_array_equal(rows_["visual"], p.pred_v)
  # A 35-s timeline: PNG, wider than a 10-s one.
  from PIL import Image
  widths = {}
  for vid in ("long35", "clip10"):
    with Image.open(os.path.join(c.workdir, rows[vid]["timeline"])) as im:
      widths[vid] = im.size[0]
  assert widths["long35"] > widths["clip10"]
  # LLP-format CSVs: every audio / visual event, any length.
  for modality in ("audio", "visual"):
    path = os.path.join(c.workdir, "parsed", f"eval_{modality}.csv")
    got = avvp.read_llp_eval(path, ["long35"], num_segments=35)[0]
    np.testing.assert_array_equal(got, rows_[modality])
    with open(path) as f:
      assert f.readline() == "filename\tonset\toffset\tevent_labels\n"


def test_one_command_resumes(one_command):
  c, _ = one_command
  json_path = os.path.join(c.workdir, "parsed", "long35.json")
  mtime = os.stat(json_path).st_mtime_ns
  out = parse_stage.run(c)
  assert not out["parsed"]  # both parsed videos skipped
  assert os.stat(json_path).st_mtime_ns == mtime
  assert _index(c)["counts"] == dict(total=6, parsed=2, failed=4)


def test_parser_api_on_a_video_equals_the_command(one_command,
                                                  parser_workdir):
  c, out = one_command
  parser = ear_jax.Parser.from_workdir(parser_workdir, batch_size=8,
                                       strict=False)
  e = export_han.get_config("tiny")
  e.num_segments = 0
  exporters = [registry.get_exporter(e)]
  events = parser.parse_video(os.path.join(c.videos, "long35.mp4"),
                              exporters, chunk_segments=7)
  assert events == out["parsed"]["long35"].events
  a, v = parser.check_inputs(*out_inputs(c, "long35"))
  assert parser.parse_features(a, v) == events
  parser.parse_features(a[:4], v[:4])  # padded window: no new compile
  assert parser._step._cache_size() == 1  # pylint: disable=protected-access


def out_inputs(c, vid):
  from ear_jax.data import llp_features
  return llp_features.load_video_inputs(
      os.path.join(c.workdir, "features"), vid, "vggish_res152_r2plus1d")


def test_repeated_clip_gives_the_clips_events_repeated(parser_workdir):
  """Features of a clip repeated 3x, stride = window: rows repeat exactly;
  exactly 10 segments: the one-window path."""
  parser = ear_jax.Parser.from_workdir(parser_workdir, batch_size=8,
                                       stride=10, strict=False)
  rng = np.random.default_rng(0)
  da, dv = parser.in_dims
  a, v = (rng.standard_normal((10, d)).astype(np.float32) for d in (da, dv))
  clip, rep = parser.parse_many([("clip", a, v),
                                 ("rep", np.tile(a, (3, 1)),
                                  np.tile(v, (3, 1)))])
  assert rep.merged.starts == [0, 10, 20]
  assert clip.merged.pred_a.any() or clip.merged.pred_v.any()
  for m in ("pred_a", "pred_v"):
    np.testing.assert_array_equal(getattr(rep.merged, m),
                                  np.tile(getattr(clip.merged, m), (1, 3)))
  rows = report_lib.events_to_rows(rep.events, avvp.LLP_CLASSES, 30)
  np.testing.assert_array_equal(rows["audio"],
                                np.tile(clip.merged.pred_a, (1, 3)))
  # Events inside one repetition come back shifted by 10 s and 20 s.
  inner = [e for e in clip.events if 0 < e["onset"] and e["offset"] < 10]
  for e in inner:
    for k in (1, 2):
      shifted = dict(e, onset=e["onset"] + 10 * k, offset=e["offset"] + 10 * k)
      assert shifted in rep.events


def test_parser_rejects_bad_features(parser_workdir):
  parser = ear_jax.Parser.from_workdir(parser_workdir, batch_size=8)
  da, dv = parser.in_dims
  with pytest.raises(ValueError, match="takes"):
    parser.parse_features(np.zeros((10, da + 1)), np.zeros((10, dv)))
  with pytest.raises(ValueError, match="same T"):
    parser.parse_features(np.zeros((10, da)), np.zeros((9, dv)))
  with pytest.raises(ValueError, match="NaN"):
    parser.parse_features(np.full((3, da), np.nan), np.zeros((3, dv)))
  with pytest.raises(ValueError, match="stride=11 > window=10"):
    ear_jax.Parser.from_workdir(parser_workdir, batch_size=8, stride=11)


def test_parse_needs_features_root_or_videos(parser_workdir, tmp_path):
  c = parse_config.get_config("tiny")
  c.workdir, c.parser_workdir = str(tmp_path), parser_workdir
  with pytest.raises(ValueError, match="exactly one of"):
    parse_stage.run(c)
