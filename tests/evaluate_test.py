"""The evaluate stage reproduces the eval JSONs of stage-2 and stage-3 runs."""

import json
import os

import numpy as np
import pytest

from ear_jax.configs import eval as eval_config
from ear_jax.configs import stage3 as stage3_config
from ear_jax import metrics as metrics_lib
from ear_jax.data import avvp
from ear_jax.data import synthetic
from ear_jax.stages import evaluate
from ear_jax.stages import generate_pseudo_labels as stage2
from ear_jax.stages import train_parser
import stage2_test  # pylint: disable=g-bad-import-order


def _read(path):
  with open(path) as f:
    return json.load(f)


def eval_cfg(workdir, run_workdir, split, **overrides):
  c = eval_config.get_config("tiny")
  c.workdir = str(workdir)
  c.run_workdir = str(run_workdir)
  c.split = split
  c.update(overrides)
  return c


def _assert_same_scores(got, want):
  for key in metrics_lib.AGGREGATE_KEYS + ("avg",):
    assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_evaluate_reproduces_stage2_and_stage3_runs(tmp_path):
  synthetic.write_synthetic(tmp_path / "data", seed=4, num_llp=(12, 8, 8),
                            num_unav=(1, 1, 1), han_features=False)
  llp_root = str(tmp_path / "data" / "LLP")
  s1 = stage2_test.save_untrained_generator(tmp_path / "s1")
  s2 = stage2_test.stage2_config_for(tmp_path / "s2", s1.workdir, llp_root)
  stage2.run(s2)

  # A cheap stage-3 run: HAN without dropout and mixup compiles fastest.
  s3 = stage3_config.get_config("tiny")
  s3.update(workdir=str(tmp_path / "s3"), pseudo_labels_dir=s2.workdir,
            progress=False, total_epochs=1, checkpoint_every_epochs=1)
  s3.data.update(llp_root=llp_root, features="clip_clap")
  s3.model.update(name="han", dropout=0.0)
  s3.loss.use_mixup = False
  train_parser.run(s3)

  # One split of the parser run: each split is another predict compile.
  for run, splits in ((s2, ("val", "test")), (s3, ("test",))):
    for split in splits:
      c = eval_cfg(tmp_path / "eval" / os.path.basename(run.workdir),
                   run.workdir, split)
      evaluate.run(c)
      got = _read(os.path.join(c.workdir, "eval", f"{split}.json"))
      want = _read(os.path.join(run.workdir, "eval", f"{split}.json"))
      _assert_same_scores(got, want)
      # Beside the aggregates: per-video values whose means are the
      # aggregates, and per-class F1 of every class present.
      with open(os.path.join(c.workdir, "eval", f"{split}_per_video.csv")) as f:
        head, *lines = [ln.split("\t") for ln in f.read().splitlines()]
      assert head[0] == "filename" and len(lines) == 8
      for j, key in enumerate(head[1:], start=1):
        assert np.mean([float(r[j]) for r in lines]) == pytest.approx(
            got[key], abs=1e-3), key
      per_class = _read(os.path.join(c.workdir, "eval",
                                     f"{split}_per_class.json"))
      assert list(per_class["seg"]["a"]) == list(avvp.LLP_CLASSES)
      assert got["run_stage"] == run.stage and got["n_videos"] == 8
  assert got["checkpoint"] == "best" and got["strict"] is True
  assert got["step"] == want["step"]

  # The data root given here wins over the run's (moved data).
  moved = str(tmp_path / "moved")
  os.rename(llp_root, moved)
  c = eval_cfg(tmp_path / "eval_moved", s2.workdir, "test")
  c.data.llp_root = moved
  evaluate.run(c)
  _assert_same_scores(_read(os.path.join(c.workdir, "eval", "test.json")),
                      _read(os.path.join(s2.workdir, "eval", "test.json")))

  with pytest.raises(ValueError, match="'val', 'test'"):
    evaluate.run(eval_cfg(tmp_path / "e", s3.workdir, "train"))
  with pytest.raises(ValueError, match="pretrain_generator"):
    evaluate.run(eval_cfg(tmp_path / "e", s1.workdir, "val"))


def test_evaluate_needs_a_run_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    evaluate.run(eval_cfg(tmp_path / "e", tmp_path / "nothing", "val"))


def test_evaluate_csv_predictions_need_an_llp_root(tmp_path):
  c = eval_config.get_config()
  c.workdir, c.predictions_dir = str(tmp_path / "e"), str(tmp_path)
  with pytest.raises(ValueError, match="set --config.data.llp_root"):
    evaluate.run(c)
  c.predictions_dir = None
  with pytest.raises(ValueError, match="exactly one of"):
    evaluate.run(c)
