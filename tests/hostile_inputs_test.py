"""Parse and evaluate cannot be fooled: ids are file names, outputs never
follow links, a hostile file fails alone, eval refuses what it cannot
match, bad values never claim a workdir, errors are one line."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from ear_jax.configs import eval as eval_config
from ear_jax.configs import parse as parse_config
from ear_jax import jsonio
from ear_jax import parsing
from ear_jax import plots as plots_lib
from ear_jax import report as report_lib
from ear_jax import validate as validate_lib
from ear_jax import workdir as workdir_lib
from ear_jax.data import avvp
from ear_jax.data import features as features_lib
import parse_test  # pylint: disable=g-bad-import-order

REPO = pathlib.Path(__file__).resolve().parents[1]
LLP_CSVS = pathlib.Path(__file__).resolve().parent / "testdata" / "llp"


def _forge_npy(path, rows, dim=128):
  """A .npy whose header claims `rows` float32 rows but holds one."""
  header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (
      rows, dim)
  header += " " * (-(len(header) + 11) % 64) + "\n"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                   + header.encode() + np.zeros(dim, "<f4").tobytes())


# ------------------------------------------------------------ feature files
def test_header_claiming_1e15_rows_is_a_value_error(tmp_path):
  path = features_lib.feature_path(tmp_path, "vggish", "huge")
  _forge_npy(path, 10**15)
  with pytest.raises(ValueError, match=r"huge\.npy.*claims shape"
                     r" \(1000000000000000, 128\)"):
    features_lib.load_video_features(tmp_path, "vggish", "huge")
  with pytest.raises(ValueError, match="huge.npy"):
    features_lib.load_segment_features(tmp_path, "vggish", ["huge"])


def test_float64_beyond_float32_names_the_file(tmp_path):
  path = features_lib.feature_path(tmp_path, "vggish", "big")
  path.parent.mkdir(parents=True)
  x = np.zeros((10, 128))
  x[3, 5] = 1e300  # finite in float64, inf once used as float32
  np.save(path, x)
  with pytest.raises(ValueError, match=r"big\.npy.*float32's range"):
    features_lib.load_video_features(tmp_path, "vggish", "big")


# --------------------------------------------------------- links, atomicity
def test_timeline_replaces_a_planted_link_not_its_target(tmp_path):
  target = tmp_path / "precious.txt"
  target.write_text("keep me")
  link = tmp_path / "timelines" / "vid.png"
  link.parent.mkdir()
  link.symlink_to(target)
  pred = np.zeros((2, 5), np.uint8)
  plots_lib.timeline(str(link), {"p": (pred, pred)}, ["a", "b"])
  assert target.read_text() == "keep me"
  assert not link.is_symlink()
  assert link.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert [p.name for p in link.parent.iterdir()] == ["vid.png"]


def test_lock_and_metrics_refuse_planted_links(tmp_path):
  # pylint: disable=g-import-not-at-top
  from ear_jax import writer as writer_lib
  target = tmp_path / "precious.txt"
  target.write_text("keep me")
  work = tmp_path / "w"
  work.mkdir()
  (work / workdir_lib.LOCK).symlink_to(target)
  with pytest.raises(workdir_lib.WorkdirError, match="symbolic link"):
    with workdir_lib.lock(str(work)):
      pass
  (work / "metrics.jsonl").symlink_to(target)
  with pytest.raises(OSError):
    writer_lib.MetricWriter(str(work)).write(1, {"loss": 1.0})
  assert target.read_text() == "keep me"


# ------------------------------------------------- values checked up front
def _parse_cfg(tmp_path, **fields):
  c = parse_config.get_config("tiny")
  c.workdir = str(tmp_path / "out")
  c.parser_workdir = str(tmp_path)
  c.features_root = str(tmp_path)
  for k, v in fields.items():
    c[k] = v
  return c


@pytest.mark.parametrize("ids,why", [
    ("..", "names a directory"), ("sub/x", "path separator"),
    ("/etc/passwd", "path separator"), ("ok,../../x", "path separator"),
    (",,", "names no video id"), (" , ", "names no video id")])
def test_ids_are_file_names(tmp_path, ids, why):
  with pytest.raises(validate_lib.ConfigError, match=why):
    validate_lib.check(_parse_cfg(tmp_path, ids=ids))
  assert validate_lib.parse_ids("a, b,a") == ["a", "b"]


@pytest.mark.parametrize("field,value,expect", [
    ("videos_per_step", 0, "--config.videos_per_step=0: must be an integer"),
    ("stride", 11, r"--config.stride=11: must be an integer in \[0, 10\]"),
    ("stride", -1, "--config.stride=-1"),
    ("window", 0, "--config.window=0: must be an integer >= 1"),
    ("min_confidence", 1.5, "--config.min_confidence=1.5")])
def test_parse_values_are_checked_before_any_work(tmp_path, field, value,
                                                 expect):
  with pytest.raises(validate_lib.ConfigError, match=expect):
    validate_lib.check(_parse_cfg(tmp_path, **{field: value}))


def test_input_paths_are_checked_before_the_claim(tmp_path, monkeypatch):
  c = _parse_cfg(tmp_path, features_root=str(tmp_path / "nowhere"))
  with pytest.raises(validate_lib.ConfigError,
                     match="features_root=.*nowhere.*no such directory"):
    validate_lib.check_inputs(c)
  c = _parse_cfg(tmp_path, features_root=None, videos=str(tmp_path))
  monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed
  with pytest.raises(validate_lib.ConfigError, match=r"ear-jax\[export\]"):
    validate_lib.check_inputs(c)
  c = _parse_cfg(tmp_path, videos=str(tmp_path))
  with pytest.raises(validate_lib.ConfigError, match="exactly one of"):
    validate_lib.check_inputs(c)
  e = eval_config.get_config("tiny")
  e.workdir = str(tmp_path / "e")
  with pytest.raises(validate_lib.ConfigError, match="exactly one of"):
    validate_lib.check_inputs(e)


@pytest.mark.parametrize("stage,field", [
    ("stage1", "data.unav_root"), ("stage2", "generator_workdir"),
    ("stage3", "pseudo_labels_dir"), ("eval", "run_workdir")])
def test_training_stages_check_data_paths_before_the_claim(tmp_path, stage,
                                                          field):
  # pylint: disable=g-import-not-at-top
  import importlib
  from ear_jax import config_lib
  c = importlib.import_module(f"ear_jax.configs.{stage}").get_config("tiny")
  c.workdir = str(tmp_path / "w")
  config_lib.set_field(c, field, str(tmp_path / "typo"))
  with pytest.raises(validate_lib.ConfigError,
                     match=rf"--config.{field}=.*typo.*no such directory"):
    validate_lib.check_inputs(c)


def test_a_run_that_never_started_takes_new_values(tmp_path):
  # pylint: disable=g-import-not-at-top
  from ear_jax import cli

  def fail(config):
    raise FileNotFoundError(f"{config.features_root}/feats: not found")

  c = _parse_cfg(tmp_path, stride=3)
  with pytest.raises(SystemExit):
    cli.run_claimed(fail, c)  # failed before writing anything
  assert os.path.isfile(os.path.join(c.workdir, workdir_lib.ERROR_LOG))
  c2 = _parse_cfg(tmp_path, stride=5)
  cli.run_claimed(lambda config: None, c2)
  assert not os.path.exists(os.path.join(c.workdir, workdir_lib.ERROR_LOG))
  assert jsonio.read_json(os.path.join(c.workdir, "config.json"))[
      "stride"] == 5
  os.makedirs(os.path.join(c.workdir, "parsed"))  # it ran: guarded
  with pytest.raises(workdir_lib.WorkdirError, match="stride"):
    with workdir_lib.claim(_parse_cfg(tmp_path, stride=3)):
      pass


def test_parse_outputs_refuse_path_ids(tmp_path):
  # pylint: disable=g-import-not-at-top
  import types
  C, T = 2, 10
  z = np.zeros((1, T, C), np.float32)
  merged = parsing.merge_windows(np.zeros((1, C)), z, z, [0], T)
  parser = types.SimpleNamespace(classes=["a", "b"], window=T, stride=5)
  out = tmp_path / "parsed"
  for vid in ("../escape", "sub/x", ""):
    with pytest.raises(ValueError, match="not a file name"):
      parsing.write_parsed(str(out), parsing.Parsed(vid, [], merged), parser)
  assert not tmp_path.joinpath("escape.json").exists() and not out.exists()
  parsing.write_parsed(str(out), parsing.Parsed("ok", [], merged), parser)
  assert (out / "ok.json").is_file()


# ------------------------------------------------- video level, confidence
def test_video_level_and_confidence_are_in_0_1():
  C, T = 3, 10
  logits = np.full((1, T, C), 3.0, np.float32)
  g_1xC = np.array([[1.8, 0.6, 0.2]], np.float32)  # MMIL's pooled value
  merged = parsing.merge_windows(g_1xC, logits, logits, [0], T)
  events = parsing.events_of(merged, ["a", "b", "c"])
  out = parsing.Parsed("v", events, merged).to_json(["a", "b", "c"])
  assert out["video_level"] == {"a": 1.0, "b": pytest.approx(0.6),
                                "c": pytest.approx(0.2)}
  assert {e["class"] for e in events} == {"a", "b"}  # decisions unchanged
  assert all(0 <= e["confidence"] <= 1 for e in events)
  top = max(e["confidence"] for e in events)
  assert top == pytest.approx(1 / (1 + np.exp(-3.0)), abs=1e-6)  # x 1
  direct = report_lib.extract_events(
      merged.pred_a, merged.pred_v, merged.prob_a, merged.prob_v,
      np.array([1.8, 0.6, 0.2]), ["a", "b", "c"])
  assert all(0 <= e["confidence"] <= 1 for e in direct)


# ------------------------------------------------------------- evaluation
def _eval(tmp_path, lines):
  # pylint: disable=g-import-not-at-top
  from ear_jax.stages import evaluate as evaluate_stage
  preds = tmp_path / "preds"
  preds.mkdir(exist_ok=True)
  for m in ("audio", "visual"):
    (preds / f"eval_{m}.csv").write_text(avvp.format_llp_eval(lines))
  e = eval_config.get_config("tiny")
  e.workdir = str(tmp_path / "e")
  e.predictions_dir = str(preds)
  e.data.llp_root = str(LLP_CSVS)
  evaluate_stage.run(e)
  return jsonio.read_json(tmp_path / "e" / "eval" / "test.json")


def test_eval_refuses_predictions_that_name_no_split_video(tmp_path):
  rec = avvp.read_llp_split(LLP_CSVS, "test")
  by_id = [(vid, 0, 10, "Speech") for vid in rec.ids]  # bare ids
  with pytest.raises(ValueError) as e:
    _eval(tmp_path, by_id)
  msg = str(e.value)
  assert f"cover none of the {len(rec.ids)} 'test' videos" in msg
  assert any(repr(vid) in msg for vid in rec.ids)  # their naming
  assert rec.filenames[0] in msg  # the split's
  assert "--config.annotations_dir" in msg and "\n" not in msg
  assert not (tmp_path / "e" / "eval").exists()


def test_eval_says_when_predictions_cover_part_of_the_split(tmp_path):
  rec = avvp.read_llp_split(LLP_CSVS, "test")
  half = len(rec.filenames) // 2
  row = _eval(tmp_path, [(f, 0, 10, "Speech") for f in rec.filenames[:half]])
  assert row["coverage"] == dict(covered=half, total=len(rec.filenames),
                                 missing_example=rec.filenames[half])
  assert row["partial"].startswith(f"PARTIAL: the predictions cover {half}")
  full = _eval(tmp_path, [(f, 0, 10, "Speech") for f in rec.filenames])
  assert "partial" not in full and full["coverage"]["covered"] == len(
      rec.filenames)


# ------------------------------------------------- the parse stage, e2e
@pytest.fixture(scope="module")
def stage3(tmp_path_factory):
  """An untrained stage-3 run and a synthetic LLP root (CSVs + features)."""
  # pylint: disable=g-import-not-at-top
  from ear_jax.data import synthetic
  root = tmp_path_factory.mktemp("hostile")
  synthetic.write_synthetic(root / "data", seed=0, num_llp=(2, 2, 2),
                            num_unav=(1, 1, 1))
  llp = root / "data" / "LLP"
  parse_test.make_stage3_workdir(root / "s3", llp)
  return root, llp


def _features_only(llp, dest, ids=None):
  """A copy of llp's feature folders (no CSVs) under dest."""
  for name in ("vggish", "res152", "r2plus1d_18"):
    src = features_lib.feature_path(llp, name, "x").parent
    out = features_lib.feature_path(dest, name, "x").parent
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
      if ids is None or f.stem in ids:
        (out / f.name).write_bytes(f.read_bytes())


def test_parse_survives_a_hostile_file_and_names_videos(stage3, tmp_path):
  # pylint: disable=g-import-not-at-top
  from ear_jax.stages import parse as parse_stage
  root, llp = stage3
  ids = features_lib.available_ids(llp, ["vggish"])
  # An LLP root (CSVs beside the features), one file forged to 10^15 rows.
  data = tmp_path / "LLP"
  _features_only(llp, data)
  for f in llp.glob("*.csv"):
    (data / f.name).write_bytes(f.read_bytes())
  _forge_npy(features_lib.feature_path(data, "vggish", ids[0]), 10**15)
  c = parse_config.get_config("tiny")
  c.workdir, c.parser_workdir = str(tmp_path / "out"), str(root / "s3")
  c.features_root, c.progress = str(data), False
  # Links planted where outputs go are replaced, their targets untouched.
  target = tmp_path / "precious.txt"
  target.write_text("keep me")
  for rel in (f"timelines/{ids[1]}.png", f"parsed/{ids[1]}.json",
              "parsed/eval_audio.csv"):
    (tmp_path / "out" / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "out" / rel).symlink_to(target)
  out = parse_stage.run(c)
  assert target.read_text() == "keep me"
  assert not (tmp_path / "out" / f"timelines/{ids[1]}.png").is_symlink()
  assert out["rows"][ids[0]]["status"] == "failed"
  assert "claims shape (1000000000000000, 128)" in out["rows"][ids[0]][
      "reason"]
  assert all(out["rows"][v]["status"] == "parsed" for v in ids[1:])
  index = jsonio.read_json(tmp_path / "out" / "parsed" / "index.json")
  assert index["filenames"].startswith("LLP filenames from the split CSVs")
  names = {}
  for split in ("train", "val", "test"):
    rec = avvp.read_llp_split(llp, split)
    names.update(zip(rec.ids, rec.filenames))
  for v in ids[1:]:
    assert out["rows"][v]["filename"] == names[v] != v
  # Features without CSVs: the CSVs use ids, and the index says so.
  bare = tmp_path / "bare"
  _features_only(llp, bare, ids[1:3])
  c.workdir, c.features_root = str(tmp_path / "out2"), str(bare)
  c.timelines = False
  parse_stage.run(c)
  index = jsonio.read_json(tmp_path / "out2" / "parsed" / "index.json")
  assert index["filenames"].startswith("video ids: no LLP split CSV")


def test_parse_refuses_path_ids_before_writing(stage3, tmp_path):
  # pylint: disable=g-import-not-at-top
  from ear_jax.stages import parse as parse_stage
  root, llp = stage3
  c = parse_config.get_config("tiny")
  c.workdir, c.parser_workdir = str(tmp_path / "out"), str(root / "s3")
  c.features_root, c.progress = str(llp), False
  for bad in ("../s3/config", "sub/x", str(llp / "x")):
    c.ids = bad
    with pytest.raises(validate_lib.ConfigError, match="not a video id"):
      parse_stage.run(c)
  assert not (tmp_path / "out").exists()


def test_raw_video_errors_name_the_parse_flags(stage3, tmp_path):
  # pylint: disable=g-import-not-at-top
  pytest.importorskip("av")
  from ear_jax.stages import parse as parse_stage
  root, _ = stage3
  (tmp_path / "videos").mkdir()
  (tmp_path / "videos" / "notes.txt").write_text("not a video")
  c = parse_config.get_config("tiny")
  c.workdir, c.parser_workdir = str(tmp_path / "out"), str(root / "s3")
  c.videos, c.progress = str(tmp_path / "videos"), False
  with pytest.raises(FileNotFoundError) as e:
    parse_stage.run(c)
  assert "--config.export_han.video_extensions" in str(e.value)
  assert "--config.video_extensions" not in str(e.value)
  c.export_han.random_init_for_testing = False  # weights now required
  with pytest.raises(ValueError) as e:
    parse_stage.run(c)
  assert "--config.export_han.vggish_weights=PATH" in str(e.value)
  assert "--config.vggish_weights" not in str(e.value)


def test_checkpoint_errors_say_what_is_wrong(stage3, tmp_path):
  # pylint: disable=g-import-not-at-top
  import shutil
  from ear_jax import checkpoint as ckpt_lib
  from ear_jax import parser_lib
  root, _ = stage3
  wide = tmp_path / "wide"
  shutil.copytree(root / "s3", wide)
  cfg = jsonio.read_json(wide / "config.json")
  cfg["model"]["hidden_dim"] *= 2
  jsonio.write_json_atomic(wide / "config.json", cfg)
  with pytest.raises(ckpt_lib.ModelMismatchError) as e:
    parser_lib.load_parser(str(wide))
  msg = str(e.value)
  assert "does not fit this model" in msg and "model.hidden_dim" in msg
  assert "strict=False" not in msg and "\n" not in msg
  cut = tmp_path / "cut"
  shutil.copytree(root / "s3", cut)
  manifest = cut / "best" / "3" / "state" / "manifest.ocdbt"
  manifest.write_bytes(manifest.read_bytes()[:len(manifest.read_bytes())
                                             // 2])
  with pytest.raises(ckpt_lib.CheckpointError) as e:
    parser_lib.load_parser(str(cut))
  msg = str(e.value)
  assert f"{cut}/best/3 is truncated or corrupt" in msg
  assert str(manifest) in msg and "different model config" not in msg


# --------------------------------------------------------------- the CLI
def _launch(*args):
  return subprocess.run(
      [sys.executable, "launch.py", *args], cwd=REPO, capture_output=True,
      text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu",
                                       PYTHONPATH=str(REPO)))


def test_cli_stage_errors_are_one_line_and_ids_exit_2(stage3, tmp_path):
  root, llp = stage3
  base = ["--config=configs/parse.py:tiny", f"--config.features_root={llp}",
          "--config.compilation_cache_dir=none"]
  r = _launch(*base, f"--config.workdir={tmp_path / 'a'}",
              f"--config.parser_workdir={root / 's3'}", "--config.ids=../x")
  assert r.returncode == 2, r.stderr[-2000:]
  assert "'../x' is not a video id" in r.stderr
  assert not (tmp_path / "a").exists()
  # An error inside the stage (a folder that is no stage-3 run): one line.
  r = _launch(*base, f"--config.workdir={tmp_path / 'b'}",
              f"--config.parser_workdir={llp}")
  assert r.returncode == 1
  assert "Traceback" not in r.stderr, r.stderr[-2000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "config.json not found" in last
  log = tmp_path / "b" / workdir_lib.ERROR_LOG
  assert "Traceback" in log.read_text() and str(log) in last
  r = _launch(*base, f"--config.workdir={tmp_path / 'b'}",
              f"--config.parser_workdir={llp}", "--verbose")
  assert r.returncode == 1 and "Traceback" in r.stderr
