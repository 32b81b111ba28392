"""Stage 1 end to end on synthetic UnAV: outputs, resume, migration in step."""

import json
import os

import numpy as np
import pytest

from configs import stage1 as stage1_config
from ear_jax import checkpoint as ckpt_lib
from ear_jax import metrics as metrics_lib
from ear_jax import writer as writer_lib
from ear_jax.data import synthetic
from ear_jax.stages import pretrain_generator


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("synth")
  synthetic.write_synthetic(root, seed=1, num_llp=(16, 8, 8),
                            num_unav=(24, 8, 4), unav_max_duration=14,
                            han_features=False)
  return root


def _config(workdir, data_root, epochs=3):
  c = stage1_config.get_config("tiny")
  c.workdir = str(workdir)
  c.data.unav_root = str(data_root / "UnAV")
  c.total_epochs = epochs
  c.checkpoint_every_epochs = 1
  c.progress = False
  return c


def _eval(workdir):
  with open(os.path.join(workdir, "eval", "unav_validation.json")) as f:
    return json.load(f)


def test_stage1_writes_checkpoints_metrics_and_eval(tmp_path, data_root):
  c = _config(tmp_path / "run", data_root)
  pretrain_generator.run(c)
  out = _eval(c.workdir)
  assert 0.0 <= out["seg_av"] <= 100.0
  assert os.path.isdir(os.path.join(c.workdir, "best"))
  rows = writer_lib.read_metrics(c.workdir)
  assert any("val/seg_av" in r for r in rows)
  train_keys = set().union(*[r.keys() for r in rows if "train/loss" in r])
  # All four EAR loss terms (Eq. 8) are logged, with the migration on.
  assert {"train/av1", "train/av2", "train/a", "train/v"} <= train_keys


def test_stage1_resume_ends_like_uninterrupted(tmp_path, data_root,
                                               monkeypatch):
  full = _config(tmp_path / "full", data_root)
  pretrain_generator.run(full)

  class Killed(Exception):
    pass

  original = ckpt_lib.Checkpointer.save
  calls = {"n": 0}

  def save_then_die(self, step, state, meta):
    original(self, step, state, meta)
    calls["n"] += 1
    if calls["n"] == 1:
      self.wait()
      raise Killed()

  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save_then_die)
  part = _config(tmp_path / "part", data_root)
  with pytest.raises(Killed):
    pretrain_generator.run(part)
  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", original)
  pretrain_generator.run(part)  # the same command again: resumes
  a, b = _eval(full.workdir), _eval(part.workdir)
  for key in ("seg_av", "evt_av", "best_step"):
    assert a[key] == b[key], key
  rows_a = [r for r in writer_lib.read_metrics(full.workdir)
            if "train/loss" in r]
  rows_b = [r for r in writer_lib.read_metrics(part.workdir)
            if "train/loss" in r]
  assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
  np.testing.assert_allclose([r["train/loss"] for r in rows_a],
                             [r["train/loss"] for r in rows_b], rtol=1e-6)


def test_on_device_segment_f1_matches_official_metric():
  rng = np.random.default_rng(0)
  pred = rng.random((40, 12, 7)) < 0.2
  gt = rng.random((40, 12, 7)) < 0.2
  gt[:5] = pred[:5] = False  # all-true-negative videos score 1.0
  seg = np.asarray(pretrain_generator.segment_f1(pred, gt))
  official = metrics_lib.avvp_scores(
      np.moveaxis(pred, 1, 2).astype(np.uint8),
      np.moveaxis(pred, 1, 2).astype(np.uint8),
      np.moveaxis(gt, 1, 2).astype(np.uint8),
      np.moveaxis(gt, 1, 2).astype(np.uint8), per_video=True)
  np.testing.assert_allclose(seg, official["per_video"]["seg_av"], rtol=1e-6)


def test_without_migration_only_av_terms_are_trained():
  c = stage1_config.get_config("tiny")
  c.migration.enabled = False
  loss_cfg = pretrain_generator.generator_loss_config(c)
  assert not loss_cfg.use_a and not loss_cfg.use_v
  assert loss_cfg.use_av1 and loss_cfg.use_av2
  c.migration.enabled = True
  assert pretrain_generator.generator_loss_config(c).use_a
