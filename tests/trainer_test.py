"""Trainer: schedule, masked padding, resume equality, 4-device == 1-device."""

import importlib.util
import json
import os

from flax import nnx
import jax
import jax.numpy as jnp
from ml_collections import config_dict
import numpy as np
import pytest

from ear_jax.configs import common
from ear_jax import evaluator as evaluator_lib
from ear_jax import sharding as sharding_lib
from ear_jax import trainer as trainer_lib
from ear_jax import writer as writer_lib
from ear_jax.data import pipeline


class Toy(nnx.Module):

  def __init__(self, rngs):
    self.l1 = nnx.Linear(3, 8, rngs=rngs)
    self.bn = nnx.BatchNorm(8, rngs=rngs)
    self.drop = nnx.Dropout(0.2)
    self.l2 = nnx.Linear(8, 1, rngs=rngs)

  def __call__(self, x, *, deterministic, rngs=None):
    h = self.bn(nnx.relu(self.l1(x)), use_running_average=deterministic)
    h = self.drop(h, deterministic=deterministic, rngs=rngs)
    return self.l2(h)[..., 0]


def _data(n=37, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 3)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)
  return dict(x=x, y=y)


def _loss_fn(model, batch, key):
  pred = model(batch["x"], deterministic=False, rngs=nnx.Rngs(dropout=key))
  m = batch["video_mask"]
  loss = jnp.sum(m * (pred - batch["y"]) ** 2) / jnp.maximum(m.sum(), 1.0)
  return loss, {"loss/mse": loss}


def _config(workdir, epochs=4):
  c = common.base("toy")
  c.workdir = workdir
  c.seed = 3
  c.batch_size = 8
  c.total_epochs = epochs
  c.optim = common.optim(lr=1e-2, min_lr=1e-3, warmup_epochs=1)
  c.checkpoint_every_epochs = 1
  c.log_every_steps = 2
  c.progress = False
  return c


def _fit(config, evaluate=None, mesh=None):
  data = _data()
  return trainer_lib.fit(
      config, make_model=lambda: Toy(nnx.Rngs(0)), loss_fn=_loss_fn,
      make_batch=evaluator_lib.gather, train_data=data,
      num_train=len(data["x"]), evaluate=evaluate,
      best_metric="val/score" if evaluate else None, mesh=mesh)


def _leaves(weights):
  return [np.asarray(x) for x in jax.tree.leaves(weights)]


def test_epoch_schedule_matches_spec():
  kw = dict(lr=1e-4, min_lr=1e-5, warmup_epochs=10, total_epochs=80)
  lr = lambda e: float(trainer_lib.epoch_learning_rate(e, **kw))
  np.testing.assert_allclose(lr(1), 1e-5, rtol=1e-6)
  np.testing.assert_allclose(lr(9), 9e-5, rtol=1e-6)
  np.testing.assert_allclose(lr(10), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(lr(80), 1e-5, rtol=1e-5)
  mid = 1e-5 + 0.5 * 9e-5 * (1 + np.cos(np.pi * 35 / 70))
  np.testing.assert_allclose(lr(45), mid, rtol=1e-5)
  optim = config_dict.ConfigDict(dict(lr=1e-4, min_lr=5e-6, warmup_epochs=10))
  sched = trainer_lib.make_schedule(optim, steps_per_epoch=157,
                                    total_epochs=80)
  # Constant within an epoch; changes at the epoch boundary.
  assert float(sched(0)) == float(sched(156)) == pytest.approx(1e-5)
  assert float(sched(157)) == pytest.approx(2e-5)
  assert float(sched(157 * 80 - 1)) == pytest.approx(5e-6, rel=1e-4)


def test_index_batches_pad_last_batch():
  idx, mask = pipeline.index_batches(np.arange(10), 4)
  assert idx.shape == (3, 4) and mask.sum() == 10
  assert mask[-1].tolist() == [1, 1, 0, 0]
  order1 = pipeline.epoch_order(1, 5, 50)
  assert (order1 == pipeline.epoch_order(1, 5, 50)).all()
  assert not (order1 == pipeline.epoch_order(1, 6, 50)).all()


def test_fit_learns_and_logs(tmp_path):
  c = _config(str(tmp_path), epochs=6)
  c.tensorboard = importlib.util.find_spec("tensorboardX") is not None
  result = _fit(c)
  rows = writer_lib.read_metrics(str(tmp_path))
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert losses[-1] < losses[0]
  assert result.final_step == 6 * 5
  cfg = json.load(open(tmp_path / "config.json"))
  assert cfg["batch_size"] == 8
  if c.tensorboard:  # the same rows as TensorBoard scalars
    (events,) = (tmp_path / writer_lib.TENSORBOARD_DIR).iterdir()
    assert events.name.startswith("events.out.tfevents")
    assert b"train/loss" in events.read_bytes()


class _Killed(Exception):
  pass


def _score(weights):
  """A deterministic function of the weights (so a replay scores the same)."""
  return {"val/score": float(jnp.tanh(jnp.sum(weights["params"]["l2"][
      "kernel"][...])) + 1.0)}


def test_resume_matches_uninterrupted(tmp_path):
  full = _fit(_config(str(tmp_path / "a")), evaluate=_score)
  calls = {"n": 0}

  def evaluate_then_die(weights):
    calls["n"] += 1
    if calls["n"] == 3:  # dies in epoch 3, after epoch 2's checkpoint
      raise _Killed()
    return _score(weights)

  with pytest.raises(_Killed):
    _fit(_config(str(tmp_path / "b")), evaluate=evaluate_then_die)
  resumed = _fit(_config(str(tmp_path / "b")), evaluate=_score)
  assert resumed.final_step == full.final_step
  assert resumed.best_step == full.best_step
  assert resumed.best_value == full.best_value
  for a, b in zip(_leaves(full.weights), _leaves(resumed.weights)):
    np.testing.assert_array_equal(a, b)
  steps = [r["step"] for r in writer_lib.read_metrics(str(tmp_path / "b"))
           if "train/loss" in r]
  assert steps == sorted(set(steps)), "a resumed run must not log steps twice"


def test_nonfinite_loss_names_step(tmp_path):
  data = _data()
  data["y"][:] = np.nan
  with pytest.raises(FloatingPointError, match="between steps 0 and 1"):
    trainer_lib.fit(
        _config(str(tmp_path)), make_model=lambda: Toy(nnx.Rngs(0)),
        loss_fn=_loss_fn, make_batch=evaluator_lib.gather, train_data=data,
        num_train=len(data["x"]))


def test_batch_size_must_divide_devices(tmp_path):
  c = _config(str(tmp_path))
  c.batch_size = 6
  with pytest.raises(ValueError, match="not divisible by the 4 devices"):
    _fit(c)


def test_four_devices_match_one(tmp_path):
  assert jax.device_count() == 4
  one = _fit(_config(str(tmp_path / "one"), epochs=2),
             mesh=sharding_lib.make_mesh(jax.devices()[:1]))
  four = _fit(_config(str(tmp_path / "four"), epochs=2))
  for a, b in zip(_leaves(one.weights), _leaves(four.weights)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert os.path.isdir(tmp_path / "four" / "checkpoints")
