"""Stage 2 end to end on synthetic LLP, from a stage-1 workdir.

The stage-1 workdir holds an untrained tiny generator saved exactly as
trainer.fit saves one (config.json, checkpoints/, best/): a real stage-1 run
costs ~40 s of CPU compile, and stage 2 does not care what the weights are.
"""

import json
import os
import shutil

from flax import nnx
import jax
import numpy as np
import pytest

from ear_jax.configs import stage1 as stage1_config
from ear_jax.configs import stage2 as stage2_config
from ear_jax import checkpoint as ckpt_lib
from ear_jax import generator_lib
from ear_jax import metrics as metrics_lib
from ear_jax import models as models_lib
from ear_jax import pseudo_labels as pl_lib
from ear_jax import runs as runs_lib
from ear_jax import train_state as ts_lib
from ear_jax import trainer as trainer_lib
from ear_jax.data import avvp
from ear_jax.data import pseudo_label_files as pl_files
from ear_jax.data import synthetic
from ear_jax.stages import generate_pseudo_labels as stage2

SPLITS = ("train", "val", "test")
C, T = len(avvp.LLP_CLASSES), 10
SIZES = {"train": 12, "val": 8, "test": 8}


def save_untrained_generator(workdir, step=7, best_step=5):
  """A stage-1 workdir as trainer.fit leaves it, with random weights.

  The weights are numpy draws (no init compile); checkpoints/<step> holds a
  TrainState whose params differ from best/<best_step> by 0.01, so a test
  can tell which one was restored.
  """
  c = stage1_config.get_config("tiny")
  c.workdir = str(workdir)
  c.data.unav_root = "/unused"
  trainer_lib.write_config(c.workdir, c)
  make_model = lambda: models_lib.get_model("generator", c.model,
                                            rngs=nnx.Rngs(c.seed))
  tx, _ = trainer_lib.make_optimizer(c.optim, 1, c.total_epochs)
  _, abstract = ts_lib.abstract_train_state(make_model, tx)
  rng = np.random.default_rng(0)
  draw = lambda x: rng.normal(0.0, 0.1, x.shape).astype(x.dtype)
  zeros = lambda tree: jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                                    tree)
  params = jax.tree.map(draw, abstract.params)
  meta = dict(stage=c.stage, epoch=c.total_epochs, step=step,
              best_step=best_step, best_value=50.0)
  ckpt = ckpt_lib.Checkpointer(c.workdir)
  if best_step is not None:  # None: validation never improved
    ckpt.save_best(best_step, dict(params=params,
                                   model_state=zeros(abstract.model_state)),
                   meta)
  ckpt.save(step, ts_lib.TrainState(
      step=np.asarray(step, np.int32),
      params=jax.tree.map(lambda x: x + np.float32(0.01), params),
      model_state=zeros(abstract.model_state),
      opt_state=zeros(abstract.opt_state)), meta)
  ckpt.wait()
  ckpt.close()
  return c


def stage2_config_for(workdir, generator_workdir, llp_root, **overrides):
  c = stage2_config.get_config("tiny")
  c.workdir = str(workdir)
  c.generator_workdir = str(generator_workdir)
  c.data.llp_root = str(llp_root)
  c.update(overrides)
  return c


def _read(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("s2data")
  synthetic.write_synthetic(
      root, seed=2, num_llp=tuple(SIZES[s] for s in SPLITS),
      num_unav=(8, 4, 1), unav_max_duration=12, han_features=False)
  return root


def test_stage2_end_to_end(tmp_path, data_root, caplog):
  llp_root = data_root / "LLP"
  s1 = save_untrained_generator(tmp_path / "s1")
  c = stage2_config_for(tmp_path / "s2", s1.workdir, llp_root)
  stage2.run(c)
  recs = {s: avvp.read_llp_split(llp_root, s) for s in SPLITS}

  # Artifacts in the UWAV layout, for every video of every split.
  pl_root = os.path.join(c.workdir, "LLP_Dataset")
  for m in ("a", "v"):
    th = np.load(os.path.join(pl_root, f"{m}_classwise_threhsolds.npy"))
    assert th.shape == (C,) and th.dtype == np.float32
    for sub in ("segmentwise_logits", "segmentwise_pseudo_labels"):
      names = sorted(os.listdir(os.path.join(pl_root, f"{m}_{sub}")))
      assert names == sorted(f"{i}.npy" for s in SPLITS for i in recs[s].ids)
      x = np.load(os.path.join(pl_root, f"{m}_{sub}", names[0]))
      assert x.shape == (T, C) and x.dtype == np.float32

  manifest = _read(os.path.join(pl_root, "manifest.json"))
  assert manifest["classes"] == list(avvp.LLP_CLASSES)
  assert manifest["num_segments"] == T
  assert manifest["ids"] == {s: recs[s].ids for s in SPLITS}
  src = manifest["source"]
  assert src["generator_workdir"] == os.path.abspath(s1.workdir)
  step = 5  # the best checkpoint's step
  assert src["checkpoint"] == "best" and src["checkpoint_step"] == step
  assert src["model"] == s1.model.to_dict()

  # Eval JSONs, and the saved thresholds / labels reproduce them.
  pl = {s: pl_files.read_stage2(c.workdir, recs[s].ids,
                                expect_classes=avvp.LLP_CLASSES)
        for s in SPLITS}
  val = recs["val"]
  np.testing.assert_array_equal(
      pl["val"]["thresholds_a"],
      pl_lib.search_thresholds(pl["val"]["a_logit"], val.gt_a, val.weak))
  np.testing.assert_array_equal(
      pl["val"]["thresholds_v"],
      pl_lib.search_thresholds(pl["val"]["v_logit"], val.gt_v, val.weak))
  for s in ("val", "test"):
    out = _read(os.path.join(c.workdir, "eval", f"{s}.json"))
    assert set(metrics_lib.AGGREGATE_KEYS) | {"avg"} <= set(out)
    labels = [pl_lib.binarize(pl[s][f"{m}_logit"], pl[s][f"thresholds_{m}"],
                              recs[s].weak) for m in ("a", "v")]
    np.testing.assert_array_equal(labels[0], pl[s]["a_label"])
    np.testing.assert_array_equal(labels[1], pl[s]["v_label"])
    assert not (labels[0] & ~recs[s].weak[:, None, :].astype(bool)).any()
    again = generator_lib.gt_scores(*labels, recs[s])
    for key in metrics_lib.AGGREGATE_KEYS:
      assert out[key] == pytest.approx(again[key], abs=1e-9), (s, key)
      assert 0.0 <= out[key] <= 100.0

    # Baselines: weak label on every segment; zero-shot static logits.
    base = _read(os.path.join(c.workdir, "eval", f"baselines_{s}.json"))
    assert set(base) == {"weak_everywhere", "zero_shot"}
    weak_NxTxC = np.repeat(recs[s].weak[:, None, :], T, axis=1)
    expect = generator_lib.gt_scores(weak_NxTxC, weak_NxTxC, recs[s])
    for key in metrics_lib.AGGREGATE_KEYS:
      assert base["weak_everywhere"][key] == pytest.approx(expect[key])
      assert 0.0 <= base["zero_shot"][key] <= 100.0

  # Re-running the same command is a no-op; a changed source recomputes.
  created = manifest["created"]
  mtime = os.path.getmtime(os.path.join(c.workdir, "eval", "val.json"))
  with caplog.at_level("INFO"):
    stage2.run(c)
  assert "up to date" in caplog.text
  assert _read(os.path.join(pl_root, "manifest.json"))["created"] == created
  assert os.path.getmtime(os.path.join(c.workdir, "eval", "val.json")) == mtime

  stale = _read(os.path.join(pl_root, "manifest.json"))
  stale["source"]["checkpoint_step"] = step + 100
  with open(os.path.join(pl_root, "manifest.json"), "w") as f:
    json.dump(stale, f)
  caplog.clear()
  with caplog.at_level("INFO"):
    stage2.run(c)
  assert "up to date" not in caplog.text
  fresh = _read(os.path.join(pl_root, "manifest.json"))
  assert fresh["source"]["checkpoint_step"] == step
  assert fresh["thresholds_a"] == manifest["thresholds_a"]
  assert not [n for n in os.listdir(c.workdir) if n.startswith(".")]


def test_stage2_rejects_a_non_generator_workdir(tmp_path, data_root):
  (tmp_path / "s3").mkdir()
  (tmp_path / "s3" / "config.json").write_text(
      json.dumps({"stage": "train_parser"}))
  c = stage2_config_for(tmp_path / "s2", tmp_path / "s3", data_root / "LLP")
  with pytest.raises(ValueError, match="pretrain_generator"):
    stage2.run(c)
  c = stage2_config_for(tmp_path / "s2", tmp_path / "none", data_root / "LLP")
  with pytest.raises(FileNotFoundError, match="config.json"):
    stage2.run(c)


def test_restore_run_best_and_latest(tmp_path):
  s1 = save_untrained_generator(tmp_path / "s1", step=7, best_step=5)
  cfg = runs_lib.read_run_config(s1.workdir, "pretrain_generator")
  assert cfg.model.to_dict() == s1.model.to_dict()
  make_model = lambda: models_lib.get_model("generator", cfg.model,
                                            rngs=nnx.Rngs(0))
  _, best, best_step, which = runs_lib.restore_run(s1.workdir, make_model,
                                                   "auto")
  assert which == "best"
  _, last, last_step, _ = runs_lib.restore_run(s1.workdir, make_model,
                                               "latest")
  assert (best_step, last_step) == (5, 7)
  for b, l in zip(jax.tree.leaves(best["params"]),
                  jax.tree.leaves(last["params"])):
    np.testing.assert_allclose(np.asarray(l) - np.asarray(b), 0.01,
                               atol=1e-6)
  with pytest.raises(ValueError, match="best"):
    runs_lib.restore_run(s1.workdir, make_model, "newest")
  shutil.rmtree(os.path.join(s1.workdir, "best"))  # deleted by hand
  with pytest.raises(ckpt_lib.CheckpointError, match="checkpoint=latest"):
    runs_lib.restore_run(s1.workdir, make_model, "auto")
  s1 = save_untrained_generator(tmp_path / "s1b", step=7, best_step=None)
  with pytest.raises(FileNotFoundError, match="checkpoint=auto"):
    runs_lib.restore_run(s1.workdir, make_model, "best")
  *_, step, which = runs_lib.restore_run(s1.workdir, make_model, "auto")
  assert (step, which) == (7, "latest")
