"""Stage 1 end to end on synthetic UnAV: outputs, resume, migration in step."""

import json
import os

import numpy as np
import pytest

from ear_jax.configs import stage1 as stage1_config
from ear_jax import checkpoint as ckpt_lib
from ear_jax import generator_lib
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
  # All four EAR loss terms (Eq. (8)) are logged, with the migration on.
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
  seg = np.asarray(generator_lib.segment_f1(pred, gt))
  official = metrics_lib.avvp_scores(
      np.moveaxis(pred, 1, 2).astype(np.uint8),
      np.moveaxis(pred, 1, 2).astype(np.uint8),
      np.moveaxis(gt, 1, 2).astype(np.uint8),
      np.moveaxis(gt, 1, 2).astype(np.uint8), per_video=True)
  np.testing.assert_allclose(seg, official["per_video"]["seg_av"], rtol=1e-6)


def test_without_migration_only_av_terms_are_trained():
  c = stage1_config.get_config("tiny")
  c.migration.enabled = False
  loss_cfg = generator_lib.generator_loss_config(c)
  assert not loss_cfg.use_a and not loss_cfg.use_v
  assert loss_cfg.use_av1 and loss_cfg.use_av2
  c.migration.enabled = True
  assert generator_lib.generator_loss_config(c).use_a


def test_generator_step_on_four_devices_equals_one(data_root):
  """The real stage-1 step (generator, migration, Eq. (8), AdamW) is the same
  computation on a 4-device data-parallel mesh as on one device."""
  # pylint: disable=g-import-not-at-top
  import jax
  from flax import nnx
  from ear_jax import losses as losses_lib
  from ear_jax import models as models_lib
  from ear_jax import sharding as sharding_lib
  from ear_jax import train_state as ts_lib
  from ear_jax import trainer as trainer_lib
  c = _config("/unused", data_root)
  train, _ = generator_lib.load_unav(c, "train")
  text_a, text_v = generator_lib.load_text(c.data.unav_root, 100)
  make_model = lambda: models_lib.get_model("generator", c.model,
                                            rngs=nnx.Rngs(0))

  def loss_fn(model, batch, key):
    out = model(batch, text_a, text_v, deterministic=False,
                rngs=nnx.Rngs(dropout=key))
    return losses_lib.generator_loss(
        out, batch, generator_lib.migrated_targets(batch, c.migration),
        c.loss)

  tx, _ = trainer_lib.make_optimizer(c.optim, 3, c.total_epochs)
  idx = np.arange(8, dtype=np.int32)
  mask = np.array([1, 1, 1, 1, 1, 1, 0, 0], np.float32)  # 2 dummy videos
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding_lib.make_mesh(devices)
    graphdef, state = ts_lib.create_train_state(make_model, tx)
    state = jax.device_put(state, sharding_lib.replicated(mesh))
    step = jax.jit(trainer_lib.make_train_step(
        graphdef, tx, loss_fn, generator_lib.make_batch, mesh))
    state, metrics = step(state, sharding_lib.put_replicated(train, mesh),
                          trainer_lib.step_consts(jax.random.key(0)),
                          idx, mask)
    results.append((jax.device_get(state.params), float(metrics["loss"])))
  assert results[0][1] == pytest.approx(results[1][1], rel=1e-5)
  # Adam's first update is ~lr * sign(g): reduction-order rounding in the
  # sharded gradient sums moves near-zero components by a fraction of lr.
  lr = float(trainer_lib.make_schedule(c.optim, 3, c.total_epochs)(0))
  for a, b in zip(jax.tree.leaves(results[0][0]),
                  jax.tree.leaves(results[1][0])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                               atol=0.02 * lr)
