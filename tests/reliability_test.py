"""Workdirs nobody can break: config checks, config guard, lock, checkpoint
integrity, metrics.jsonl at any point of death, file errors naming files.

Training runs are trainer_test's toy model (seconds); kills are simulated by
raising at phase boundaries; one lock test uses a real second process.
"""

import importlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import types

import numpy as np
import pytest

from ear_jax.configs import stage3 as stage3_config
from ear_jax import checkpoint as ckpt_lib
from ear_jax import config_lib
from ear_jax import generator_lib
from ear_jax import jsonio
from ear_jax import runs as runs_lib
from ear_jax import validate as validate_lib
from ear_jax import workdir as workdir_lib
from ear_jax import writer as writer_lib
from ear_jax.data import avvp
from ear_jax.data import pseudo_label_files as pl_files
from ear_jax.data import synthetic
from ear_jax.stages import generate_pseudo_labels as stage2_lib
import trainer_test as toy

REPO = pathlib.Path(__file__).resolve().parents[1]


def _get(name, arg="tiny"):
  return importlib.import_module(f"ear_jax.configs.{name}").get_config(arg)


# ------------------------------------------------------------- validation
@pytest.mark.parametrize("name", sorted(
    p.stem for p in (REPO / "configs").glob("*.py")
    if p.stem not in ("__init__", "common", "uwav")))
@pytest.mark.parametrize("arg", ["tiny", None])
def test_shipped_configs_are_valid(name, arg):
  validate_lib.check(_get(name, arg))


@pytest.mark.parametrize("field,value,flag,example", [
    ("batch_size", 0, "--config.batch_size=0", "--config.batch_size=8"),
    ("batch_size", -8, "--config.batch_size=-8", "--config.batch_size=8"),
    ("eval_batch_size", 0, "--config.eval_batch_size=0", "=8"),
    ("eval_every_epochs", 0, "--config.eval_every_epochs=0",
     "--config.eval_every_epochs=1"),
    ("checkpoint_every_epochs", 0, "--config.checkpoint_every_epochs=0",
     "--config.checkpoint_every_epochs=1"),
    ("log_every_steps", 0, "--config.log_every_steps=0", "=1"),
    ("total_epochs", 0, "--config.total_epochs=0",
     "--config.total_epochs=1"),
    ("best_metric", "val/seg_avg", "--config.best_metric='val/seg_avg'",
     "--config.best_metric=val/seg_av"),
])
def test_bad_values_name_the_field_and_a_valid_value(field, value, flag,
                                                     example):
  c = _get("stage1")
  c[field] = value
  with pytest.raises(validate_lib.ConfigError) as e:
    validate_lib.check(c)
  assert flag in str(e.value) and example in str(e.value), str(e.value)


def test_stage3_best_metric_and_choices():
  c = _get("stage3")
  c.best_metric = "val/seg_av"  # a stage-1 metric
  validate_lib.check(c)  # stage 3 has it too
  c.best_metric = "val/avg"
  c.model.name = "transformer"
  c.data.features = "clip"
  with pytest.raises(validate_lib.ConfigError) as e:
    validate_lib.check(c)
  msg = str(e.value)
  assert "--config.best_metric='val/avg'" in msg and "val/seg_type" in msg
  assert "--config.model.name='transformer'" in msg and "'ear'" in msg
  assert "--config.data.features='clip'" in msg and "'clip_clap'" in msg


def test_demo_checks_its_stage_configs():
  c = _get("demo")
  c.stage3.batch_size = 0
  c.stage1.best_metric = "val/nope"
  with pytest.raises(validate_lib.ConfigError) as e:
    validate_lib.check(c)
  assert "--config.stage3.batch_size=0" in str(e.value)
  assert "--config.stage1.best_metric='val/nope'" in str(e.value)


def test_distributed_without_coordinator(monkeypatch):
  monkeypatch.setattr(validate_lib, "cluster_detected", lambda: False)
  c = _get("stage1")
  c.distributed = True
  with pytest.raises(validate_lib.ConfigError) as e:
    validate_lib.check(c)
  assert "--config.distributed=True" in str(e.value)
  assert "--config.distributed=False" in str(e.value)
  monkeypatch.setattr(validate_lib, "cluster_detected", lambda: True)
  validate_lib.check(c)


def test_batch_sizes_divide_the_devices():
  c = _get("stage3")
  c.batch_size = 6
  validate_lib.check_devices(c, 1)
  with pytest.raises(validate_lib.ConfigError, match=r"batch_size=6 is not"
                     r" divisible by the 4 devices.*--config.batch_size=4"):
    validate_lib.check_devices(c, 4)


def test_launch_rejects_before_loading_or_writing(tmp_path):
  workdir = tmp_path / "run"
  r = subprocess.run(
      [sys.executable, "launch.py", "--config=configs/stage1.py:tiny",
       f"--config.workdir={workdir}", "--config.data.unav_root=/nowhere",
       "--config.total_epochs=0"], cwd=REPO, capture_output=True, text=True,
      timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode != 0
  assert "--config.total_epochs=0: must be an integer >= 1" in r.stderr
  assert "/nowhere" not in r.stderr  # failed before reading any data
  assert not workdir.exists()


# ------------------------------------------------------------ config guard
def _stage1(workdir, **fields):
  c = _get("stage1")
  c.workdir = str(workdir)
  c.data.unav_root = "/data/UnAV"
  for k, v in fields.items():
    config_lib.set_field(c, k, v)
  return c


def _claim(config):
  with workdir_lib.claim(config):
    pass


def _snapshot(workdir):
  return {p: p.read_bytes() for p in sorted(pathlib.Path(workdir).rglob("*"))
          if p.is_file()}


def test_changed_model_flag_is_refused_and_config_kept(tmp_path):
  _claim(_stage1(tmp_path))
  (tmp_path / "checkpoints").mkdir()
  before = _snapshot(tmp_path)
  with pytest.raises(workdir_lib.WorkdirError) as e:
    _claim(_stage1(tmp_path, **{"model.hidden_dim": 32, "seed": 1}))
  msg = str(e.value)
  assert "model.hidden_dim: recorded 16, requested 32" in msg
  assert "seed: recorded 1000, requested 1" in msg
  assert "new --config.workdir" in msg and "strict" not in msg
  assert _snapshot(tmp_path) == before


def test_workdir_of_another_stage_is_refused_before_writing(tmp_path):
  s3 = stage3_config.get_config("tiny")
  s3.workdir = str(tmp_path)
  s3.pseudo_labels_dir = s3.data.llp_root = "/x"
  _claim(s3)
  before = _snapshot(tmp_path)
  with pytest.raises(workdir_lib.WorkdirError,
                     match="workdir of a 'train_parser' run"):
    _claim(_stage1(tmp_path))
  assert _snapshot(tmp_path) == before


def test_cosmetic_changes_pass_harmless_ones_need_override(tmp_path):
  _claim(_stage1(tmp_path))
  _claim(_stage1(tmp_path, progress=False, log_every_steps=1,
                 **{"data.num_load_workers": 2}))
  moved = _stage1(tmp_path, **{"data.unav_root": "/moved/UnAV",
                               "checkpoint_every_epochs": 2})
  with pytest.raises(workdir_lib.WorkdirError) as e:
    _claim(moved)
  assert "data.unav_root: recorded '/data/UnAV', requested '/moved/UnAV'" in (
      str(e.value))
  assert "--config.override_config=True" in str(e.value)
  moved.override_config = True
  _claim(moved)
  recorded = json.loads((tmp_path / "config.json").read_text())
  assert recorded["data"]["unav_root"] == "/moved/UnAV"


def test_fields_of_another_version_need_override(tmp_path):
  _claim(_stage1(tmp_path))
  recorded = json.loads((tmp_path / "config.json").read_text())
  del recorded["matmul_precision"]  # a field this run's version lacked
  (tmp_path / "config.json").write_text(json.dumps(recorded))
  with pytest.raises(workdir_lib.WorkdirError,
                     match="matmul_precision: recorded '<not recorded>'"):
    _claim(_stage1(tmp_path))
  _claim(_stage1(tmp_path, override_config=True))


def test_evaluate_workdir_takes_every_split(tmp_path):
  c = _get("eval")
  c.workdir, c.run_workdir, c.split = str(tmp_path), "/runs/s3", "val"
  _claim(c)
  c.split = "test"
  _claim(c)
  c.run_workdir = "/runs/other"
  with pytest.raises(workdir_lib.WorkdirError, match="run_workdir"):
    _claim(c)


def test_run_files_without_config_are_refused(tmp_path):
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(workdir_lib.WorkdirError, match="no config.json"):
    _claim(_stage1(tmp_path))


# ---------------------------------------------------------------- the lock
def test_second_run_is_refused_naming_the_first(tmp_path):
  with workdir_lib.lock(str(tmp_path)):
    with pytest.raises(workdir_lib.WorkdirError) as e:
      _claim(_stage1(tmp_path))
    assert f"pid {os.getpid()}" in str(e.value)
  assert not (tmp_path / workdir_lib.LOCK).exists()


def test_lock_is_released_when_the_run_fails(tmp_path):
  with pytest.raises(ZeroDivisionError):
    with workdir_lib.claim(_stage1(tmp_path)):
      _ = 1 / 0
  assert not (tmp_path / workdir_lib.LOCK).exists()
  _claim(_stage1(tmp_path))


_HOLDER = """
import sys, time
from ear_jax import workdir
with workdir.lock(sys.argv[1]):
  print("locked", flush=True)
  time.sleep(60)
"""


def test_lock_held_by_another_process_then_taken_over(tmp_path, caplog):
  proc = subprocess.Popen(
      [sys.executable, "-c", _HOLDER, str(tmp_path)], cwd=REPO,
      stdout=subprocess.PIPE, text=True,
      env=dict(os.environ, PYTHONPATH=str(REPO)))
  try:
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lib.WorkdirError) as e:
      _claim(_stage1(tmp_path))
    assert f"in use by pid {proc.pid} on host" in str(e.value)
    assert not (tmp_path / "config.json").exists()
  finally:
    proc.send_signal(signal.SIGKILL)  # dies without cleaning up
    proc.wait()
  assert (tmp_path / workdir_lib.LOCK).exists()  # stale
  with caplog.at_level("WARNING"):
    _claim(_stage1(tmp_path))
  assert f"took over the stale lock of pid {proc.pid}" in caplog.text
  assert (tmp_path / "config.json").exists()


# ---------------------------------------------------- checkpoint integrity
def _toy_run(workdir, epochs=3, **kw):
  return toy._fit(toy._config(str(workdir), epochs=epochs),
                  evaluate=kw.pop("evaluate", toy._score), **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """An uninterrupted toy run: (workdir, result, metrics rows)."""
  w = tmp_path_factory.mktemp("finished")
  result = _toy_run(w)
  return w, result, writer_lib.read_metrics(str(w))


def _assert_same_run(workdir, result, reference):
  ref_dir, ref, ref_rows = reference
  del ref_dir
  assert result.final_step == ref.final_step
  assert (result.best_step, result.best_value) == (ref.best_step,
                                                   ref.best_value)
  for a, b in zip(toy._leaves(ref.weights), toy._leaves(result.weights)):
    np.testing.assert_array_equal(a, b)
  assert writer_lib.read_metrics(str(workdir)) == ref_rows


def _truncate_state(step_dir):
  files = [p for p in (step_dir / "state").rglob("*")
           if p.is_file() and p.parent.name == "d"]
  assert files
  for p in files:
    with open(p, "r+b") as f:
      f.truncate(10)


def test_corrupt_latest_step_falls_back_to_older(tmp_path, finished, caplog):
  w = tmp_path / "w"
  shutil.copytree(finished[0], w)
  _truncate_state(w / "checkpoints" / "15")
  with caplog.at_level("WARNING"):
    result = _toy_run(w)
  lines = [r.getMessage() for r in caplog.records
           if "checkpoints/15 is unreadable" in r.getMessage()]
  assert len(lines) == 1 and "\n" not in lines[0], caplog.text
  assert "tensorstore_spec" not in lines[0] and "size 10" in lines[0]
  assert "resuming from" in caplog.text and "checkpoints/10" in caplog.text
  assert (w / "checkpoints" / "15.corrupt").is_dir()
  _assert_same_run(w, result, finished)


def test_fit_without_launch_also_keeps_the_recorded_config(tmp_path,
                                                          finished):
  w = tmp_path / "w"
  shutil.copytree(finished[0], w)
  before = (w / "config.json").read_bytes()
  config = toy._config(str(w), epochs=3)
  config.optim.lr = 0.5
  with pytest.raises(workdir_lib.WorkdirError,
                     match="optim.lr: recorded 0.01, requested 0.5"):
    toy._fit(config, evaluate=toy._score)
  assert (w / "config.json").read_bytes() == before


def test_no_intact_step_is_one_clear_error(tmp_path, finished):
  w = tmp_path / "w"
  shutil.copytree(finished[0], w)
  for step in ("10", "15"):
    _truncate_state(w / "checkpoints" / step)
  with pytest.raises(ckpt_lib.CheckpointError) as e:
    _toy_run(w)
  msg = str(e.value)
  assert "no intact checkpoint" in msg and "checkpoints/15:" in msg
  assert "checkpoints/10:" in msg and "tensorstore_spec" not in msg
  assert "Delete" in msg


def test_missing_best_is_an_error_naming_the_fix(tmp_path, finished):
  w = tmp_path / "w"
  shutil.copytree(finished[0], w)
  shutil.rmtree(w / "best")
  with pytest.raises(ckpt_lib.CheckpointError) as e:
    runs_lib.resolve_checkpoint(str(w), "auto")
  assert f"{w}/best holds no checkpoint" in str(e.value)
  assert "--config.checkpoint=latest" in str(e.value)
  assert runs_lib.resolve_checkpoint(str(w), "latest") == "latest"
  with pytest.raises(ckpt_lib.CheckpointError, match="best model .step 5. was"
                     " saved there"):
    _toy_run(w)  # resuming needs the best weights too


def test_corrupt_best_is_one_line(tmp_path, finished):
  w = tmp_path / "w"
  shutil.copytree(finished[0], w)
  _truncate_state(w / "best" / "5")
  with pytest.raises(ckpt_lib.CheckpointError) as e:
    _toy_run(w)
  msg = str(e.value)
  assert msg.startswith(f"{w}/best/5 is unreadable (")
  assert "\n" not in msg and "tensorstore_spec" not in msg


_RESTORE = """
import sys
sys.path.insert(0, "tests")
import conftest
import trainer_test as toy
toy._fit(toy._config(sys.argv[1], epochs=3), evaluate=toy._score)
"""


def test_corrupt_checkpoint_prints_no_tensorstore_trace(tmp_path, finished):
  w = tmp_path / "w"
  shutil.copytree(finished[0], w)
  _truncate_state(w / "checkpoints" / "15")
  _truncate_state(w / "best" / "5")
  r = subprocess.run([sys.executable, "-c", _RESTORE, str(w)], cwd=REPO,
                     capture_output=True, text=True, timeout=120,
                     env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert r.returncode != 0
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("ear_jax.checkpoint.CheckpointError: ") and (
      f"{w}/best/5 is unreadable" in last), r.stderr[-3000:]
  assert "tensorstore_spec" not in r.stderr and "})>" not in r.stderr
  assert "Event loop is closed" not in r.stderr


# ------------------------------------------- metrics.jsonl at any death
class _Killed(Exception):
  pass


def _die_at(monkeypatch, where, step):
  """Raises _Killed when the run reaches `where` at `step`.

  Saves are made synchronous, so every checkpoint before the kill point has
  landed (a real kill there would find them committed too).
  """
  for name in ("save", "save_best"):
    def synced(self, *a, _orig=getattr(ckpt_lib.Checkpointer, name), **kw):
      _orig(self, *a, **kw)
      self.wait()
    monkeypatch.setattr(ckpt_lib.Checkpointer, name, synced)
  if where == "eval":  # train rows of the epoch written, no eval row yet
    calls = {"n": 0}

    def evaluate(weights):
      calls["n"] += 1
      if calls["n"] == step // 5:
        raise _Killed()
      return toy._score(weights)
    return evaluate
  method = {"best": "save_best", "checkpoint": "save"}[where]
  original = getattr(ckpt_lib.Checkpointer, method)

  def dying(self, s, *a, **kw):
    if s == step or (where == "best" and self.latest.latest_step() == step - 5):
      raise _Killed()
    return original(self, s, *a, **kw)
  monkeypatch.setattr(ckpt_lib.Checkpointer, method, dying)
  return toy._score


@pytest.mark.parametrize("where,step", [
    ("eval", 5),         # before the first checkpoint
    ("checkpoint", 5),   # eval row written, first checkpoint not
    ("eval", 15),        # after two checkpoints, mid-epoch
    ("best", 10),        # between best/ and checkpoints/ of one epoch
    ("checkpoint", 15),  # the last checkpoint never lands
])
def test_kill_at_each_phase_leaves_no_duplicate_rows(tmp_path, finished,
                                                     monkeypatch, where,
                                                     step):
  with monkeypatch.context() as m:
    evaluate = _die_at(m, where, step)
    with pytest.raises(_Killed):
      _toy_run(tmp_path, evaluate=evaluate)
  result = _toy_run(tmp_path)
  _assert_same_run(tmp_path, result, finished)


def test_torn_last_row_is_dropped(tmp_path, finished):
  w = tmp_path / "w"
  shutil.copytree(finished[0], w)
  shutil.rmtree(w / "checkpoints" / "15")
  with open(w / "metrics.jsonl", "a") as f:
    f.write('{"step": 16, "train/lo')  # killed while appending
  assert writer_lib.read_metrics(str(w))[-1]["step"] == 15
  result = _toy_run(w)
  _assert_same_run(w, result, finished)


def test_damaged_metrics_line_names_the_file(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON row"):
    writer_lib.read_metrics(str(tmp_path))


# --------------------------------------------------- file errors name files
def _write_llp(d, train="a" * 11, val="b" * 11, test="c" * 11):
  weak = "filename\tevent_labels\n"
  evl = "filename\tonset\toffset\tevent_labels\n"
  for split, vid in (("train", train), ("val", val), ("test", test)):
    (d / avvp.LLP_SPLIT_FILES[split]).write_text(
        f"{weak}{vid}_0_10\tSpeech\n")
  for kind in ("audio", "visual"):
    (d / avvp.LLP_EVAL_FILES[kind]).write_text(
        f"{evl}{val}_0_10\t0\t3\tSpeech\n{test}_0_10\t1\t4\tSpeech\n")


def test_non_utf8_csv_names_file_and_line(tmp_path):
  _write_llp(tmp_path)
  path = tmp_path / avvp.LLP_SPLIT_FILES["val"]
  path.write_bytes(b"filename\tevent_labels\nbbbbbbbbbbb_0_10\tSp\xe9ech\n")
  with pytest.raises(ValueError) as e:
    avvp.read_llp_split(tmp_path, "val")
  assert f"{path}:2: not UTF-8" in str(e.value)
  assert "save the file as UTF-8" in str(e.value)


def test_id_in_two_splits_is_an_error_when_read(tmp_path):
  _write_llp(tmp_path, test="b" * 11)
  avvp.read_llp_split(tmp_path, "train")  # train itself is fine
  with pytest.raises(ValueError) as e:
    avvp.read_llp_split(tmp_path, "val")
  msg = str(e.value)
  assert "AVVP_val_pd.csv:2: id 'bbbbbbbbbbb' is also in split 'test'" in msg
  assert "AVVP_test_pd.csv:2" in msg


def test_unav_duplicate_video_key_is_an_error(tmp_path):
  rec = '{"subset": "train", "duration": 5.0, "annotations": []}'
  path = tmp_path / "unav.json"
  path.write_text('{"database": {"v1": %s, "v2": %s, "v1": %s}}'
                  % (rec, rec, rec))
  with pytest.raises(ValueError) as e:
    avvp.read_unav_split(path, "train")
  assert str(path) in str(e.value) and "'v1' appears twice" in str(e.value)


# ------------------------------------- stage 2 publishes in a safe order
@pytest.fixture(scope="module")
def stage2_inputs(tmp_path_factory):
  """(generator workdir, LLP root) as stage2_test makes them, and memoized
  generator restore / logits: stage 2's publish is under test, not them."""
  import stage2_test  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("s2in")
  synthetic.write_synthetic(
      root / "data", seed=2, num_llp=(6, 4, 4), num_unav=(8, 4, 1),
      unav_max_duration=12, han_features=False)
  s1 = stage2_test.save_untrained_generator(root / "s1")
  cache = {}

  def memo(name, fn):
    def wrapped(*a, **kw):
      if name not in cache:
        cache[name] = fn(*a, **kw)
      return cache[name]
    return wrapped

  return (s1.workdir, root / "data" / "LLP", stage2_test.stage2_config_for,
          {"restore": memo("restore", generator_lib.restore),
           "llp_logits": memo("llp_logits", generator_lib.llp_logits)})


class _Kill(Exception):
  pass


class _OsSpy:
  """os, whose replace() reports the publish steps under `workdir`."""

  def __init__(self, workdir, event):
    self._root, self._event = os.path.abspath(workdir), event

  def __getattr__(self, name):
    return getattr(os, name)

  def replace(self, src, dst):
    os.replace(src, dst)
    rel = os.path.relpath(os.path.abspath(dst), self._root)
    if rel in ("LLP_Dataset", "LLP_Dataset.old",
               "LLP_Dataset/manifest.json") or rel.startswith("eval/"):
      self._event(f"os.replace -> {rel}")


def _stage2(monkeypatch, inputs, workdir, kill_after=None,
            generator_changed=False):
  """Runs stage 2; returns the publish steps (on-disk changes outside its
  temporary folder). With `kill_after`=k it dies after step k like a killed
  process: no cleanup runs (rmtree is off). `generator_changed`: as if
  stage 1 had gone on meanwhile (other step and logits, same config)."""
  s1, llp, config_for, memo = inputs
  events = []
  if generator_changed:
    restore, logits = memo["restore"], memo["llp_logits"]
    memo = {"restore": lambda *a: (*restore(*a)[:2], 99, restore(*a)[3]),
            "llp_logits": lambda *a: {k: {s: x + 0.5 for s, x in v.items()}
                                      for k, v in logits(*a).items()}}

  def event(name):
    events.append(name)
    if kill_after is not None and len(events) == kill_after:
      raise _Kill(name)

  original = pl_files.write_stage2

  def write_stage2(*a, **kw):
    out = original(*a, **kw)
    event("write_stage2 filled the temporary folder")
    return out

  with monkeypatch.context() as m:
    for name, fn in memo.items():
      m.setattr(generator_lib, name, fn)
    m.setattr(pl_files, "write_stage2", write_stage2)
    spy = _OsSpy(workdir, event)
    m.setattr(jsonio, "os", spy)
    m.setattr(pl_files, "os", spy)
    if kill_after is not None:
      m.setattr(jsonio, "shutil", types.SimpleNamespace(
          rmtree=lambda *a, **kw: None))
    stage2_lib.run(config_for(workdir, s1, llp))
  return events


def _published(workdir):
  """Every file of a finished stage 2 (manifest without its timestamp)."""
  out = {}
  for p in sorted(pathlib.Path(workdir).rglob("*")):
    rel = str(p.relative_to(workdir))
    if p.is_file() and rel != "config.json":
      out[rel] = p.read_bytes()
  manifest = json.loads(out.pop("LLP_Dataset/manifest.json"))
  manifest.pop("created")
  return out, manifest


def _leftovers(workdir):
  return sorted(n for n in os.listdir(workdir)
                if n.startswith(".") or n.endswith(".old")) + sorted(
                    str(p) for p in pathlib.Path(workdir).rglob(
                        pl_files.PENDING_MANIFEST))


def _consistent_or_unfinished(workdir):
  """What a reader sees after a kill: complete labels whose eval files
  describe them, or labels that say they are unfinished."""
  manifest = pl_files.read_manifest(workdir)
  if manifest is not None:
    for split in ("val", "test"):
      row = json.loads((workdir / "eval" / f"{split}.json").read_text())
      assert row["checkpoint_step"] == manifest["source"]["checkpoint_step"]
    return "complete"
  if not (workdir / "LLP_Dataset").exists():
    return "absent"
  with pytest.raises(ValueError, match="unfinished"):
    pl_files.read_stage2(str(workdir), ["x"])
  return "unfinished"


def test_stage2_kill_at_each_publish_step(tmp_path, stage2_inputs,
                                          monkeypatch):
  ref = tmp_path / "ref"  # a finished run of other settings, then this one
  _stage2(monkeypatch, stage2_inputs, ref, generator_changed=True)
  steps = _stage2(monkeypatch, stage2_inputs, ref)
  assert steps == [
      "write_stage2 filled the temporary folder",
      "os.replace -> LLP_Dataset.old",  # the old labels moved aside
      "os.replace -> LLP_Dataset", "os.replace -> eval/val.json",
      "os.replace -> eval/baselines_val.json",
      "os.replace -> eval/test.json", "os.replace -> eval/baselines_test.json",
      "os.replace -> LLP_Dataset/manifest.json"], steps
  expected = _published(ref)
  seen = set()
  for k in range(1, len(steps) + 1):
    w = tmp_path / f"kill{k}"
    # Like ref, but the second run is killed after step k.
    _stage2(monkeypatch, stage2_inputs, w, generator_changed=True)
    with pytest.raises(_Kill):
      _stage2(monkeypatch, stage2_inputs, w, kill_after=k)
    seen.add(_consistent_or_unfinished(w))
    (w / ".stage2-0123abcd").mkdir()  # left by an older version
    _stage2(monkeypatch, stage2_inputs, w)
    assert _published(w) == expected, k
    assert not _leftovers(w), (k, _leftovers(w))
  assert seen == {"complete", "absent", "unfinished"}


def test_stage2_swap_killed_midway_recovers(tmp_path, stage2_inputs,
                                           monkeypatch):
  """Killed between moving the old labels aside and moving the new in."""
  w = tmp_path / "w"
  _stage2(monkeypatch, stage2_inputs, w, generator_changed=True)
  os.replace(w / "LLP_Dataset", w / "LLP_Dataset.old")
  (w / ".LLP_Dataset.k1ll3d").mkdir()
  assert _consistent_or_unfinished(w) == "absent"
  _stage2(monkeypatch, stage2_inputs, w)
  assert not _leftovers(w)
  assert pl_files.read_manifest(w)["source"]["checkpoint_step"] == 5


def test_corrupt_pseudo_label_file_is_named(tmp_path, stage2_inputs,
                                            monkeypatch):
  w = tmp_path / "w"
  _stage2(monkeypatch, stage2_inputs, w)
  ids = pl_files.read_manifest(w)["ids"]["train"]
  path = w / "LLP_Dataset" / "a_segmentwise_pseudo_labels" / f"{ids[1]}.npy"
  with open(path, "r+b") as f:
    f.truncate(90)
  with pytest.raises(ValueError) as e:
    pl_files.read_stage2(str(w), ids)
  assert str(e.value).startswith(f"{path}: cannot read as .npy")
  assert "Re-run stage 2" in str(e.value)


def test_damaged_weights_and_label_files_are_named(tmp_path):
  from feature_export.nets import weights as weights_lib  # pylint: disable=g-import-not-at-top
  path = tmp_path / "resnet.npz"
  np.savez(path, w=np.ones((4, 4), np.float32))
  path.write_bytes(path.read_bytes()[:40])  # an interrupted download
  with pytest.raises(ValueError, match=rf"^{path}: cannot read the weights"):
    weights_lib.read_state_dict(str(path))
  npy = tmp_path / "x.npy"
  npy.write_bytes(b"\x93NUMPY\x01\x00")
  with pytest.raises(ValueError, match=rf"^{npy}: cannot read as .npy"
                     r" \(.*Fetch them again."):
    jsonio.load_npy(npy, fix="Fetch them again.")
