"""Stage 3 end to end on synthetic LLP: both parsers, both feature sets, and
the checks on the pseudo-labels it is pointed at."""

import json
import os
import shutil

import numpy as np
import pytest

from ear_jax.configs import stage3 as stage3_config
from ear_jax import checkpoint as ckpt_lib
from ear_jax import metrics as metrics_lib
from ear_jax import pseudo_labels as pl_lib
from ear_jax import writer as writer_lib
from ear_jax.data import avvp
from ear_jax.data import llp_features
from ear_jax.data import pseudo_label_files as pl_files
from ear_jax.data import synthetic
from ear_jax.stages import train_parser

C, T = len(avvp.LLP_CLASSES), 10


def write_fake_stage2(out_dir, llp_root, seed=0):
  """Stage-2 files for every LLP video: noisy logits, some -inf thresholds.

  Enough for the mechanics of stage 3 without a stage-1 run.
  """
  rng = np.random.default_rng(seed)
  recs = {s: avvp.read_llp_split(llp_root, s) for s in ("train", "val",
                                                        "test")}
  logits = lambda n: rng.normal(0.0, 2.0, (n, T, C)).astype(np.float32)
  th_a = np.where(np.arange(C) % 5 == 0, -np.inf, 0.5).astype(np.float32)
  th_v = np.where(np.arange(C) % 7 == 0, -np.inf, -0.5).astype(np.float32)
  z_a = {s: logits(len(r.ids)) for s, r in recs.items()}
  z_v = {s: logits(len(r.ids)) for s, r in recs.items()}
  pl_files.write_stage2(
      out_dir, split_ids={s: r.ids for s, r in recs.items()},
      a_logits=z_a, v_logits=z_v,
      a_labels={s: pl_lib.binarize(z_a[s], th_a, r.weak)
                for s, r in recs.items()},
      v_labels={s: pl_lib.binarize(z_v[s], th_v, r.weak)
                for s, r in recs.items()},
      thresholds_a=th_a, thresholds_v=th_v,
      manifest=dict(classes=list(avvp.LLP_CLASSES)))
  return out_dir


@pytest.fixture(scope="module")
def llp(tmp_path_factory):
  """(llp_root, pseudo_labels_dir): small synthetic LLP + fake stage 2."""
  root = tmp_path_factory.mktemp("s3data")
  synthetic.write_synthetic(root / "data", seed=3, num_llp=(16, 8, 8),
                            num_unav=(1, 1, 1))
  llp_root = str(root / "data" / "LLP")
  return llp_root, str(write_fake_stage2(root / "s2", llp_root))


def tiny_config(workdir, llp_root, pseudo_dir, name, features):
  c = stage3_config.get_config("tiny")
  c.workdir = str(workdir)
  c.data.llp_root = llp_root
  c.pseudo_labels_dir = pseudo_dir
  c.model.name = name
  c.data.features = features
  c.progress = False
  c.checkpoint_every_epochs = c.total_epochs  # orbax saves cost ~3 s each
  return c


def _read(path):
  with open(path) as f:
    return json.load(f)


# Compiling the train step dominates (CPU, tiny EAR: ~45 s without dropout
# and mixup), so the full loss with dropout runs on HAN only.
@pytest.mark.parametrize("name,features,full_loss", [
    ("ear", "vggish_res152_r2plus1d", False),
    ("han", "clip_clap", True),
])
def test_train_parser_end_to_end(tmp_path, llp, name, features, full_loss):
  c = tiny_config(tmp_path / "run", *llp, name, features)
  if not full_loss:
    c.model.dropout = 0.0
    c.loss.use_mixup = False
  train_parser.run(c)
  for split in ("val", "test"):
    out = _read(os.path.join(c.workdir, "eval", f"{split}.json"))
    for key in metrics_lib.AGGREGATE_KEYS + ("avg",):
      assert 0.0 <= out[key] <= 100.0, (split, key, out[key])
    assert out["split"] == split and out["n_videos"] == 8
  rows = writer_lib.read_metrics(c.workdir)
  evals = [r for r in rows if "val/seg_type" in r]
  assert len(evals) == c.total_epochs
  logged = set().union(*rows)
  assert {"train/loss", "train/grad_norm", "train/video"} <= logged
  if full_loss:  # all five terms of Eq. (16)
    assert {"train/seg_a", "train/seg_v", "train/mix_a",
            "train/mix_v"} <= logged, sorted(logged)
  # The reported val numbers are those of the selected checkpoint.
  best = max(r["val/seg_type"] for r in evals)
  val = _read(os.path.join(c.workdir, "eval", "val.json"))
  if best > 0:
    assert val["checkpoint"] == "best"
    assert val["seg_type"] == pytest.approx(best)


def test_stage3_kill_and_rerun_ends_like_uninterrupted(tmp_path, llp,
                                                       monkeypatch, caplog):
  """The same command after a kill resumes to the same final metrics."""
  def config(name):
    c = tiny_config(tmp_path / name, *llp, "han", "clip_clap")
    c.checkpoint_every_epochs = 1
    return c

  full = config("full")
  train_parser.run(full)

  class Killed(Exception):
    pass

  original = ckpt_lib.Checkpointer.save

  def save_then_die(self, step, state, meta):
    original(self, step, state, meta)
    self.wait()
    raise Killed()  # right after the first checkpoint (end of epoch 1)

  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save_then_die)
  part = config("part")
  with pytest.raises(Killed):
    train_parser.run(part)
  assert not os.path.exists(os.path.join(part.workdir, "eval", "test.json"))
  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", original)
  with caplog.at_level("INFO"):
    train_parser.run(part)  # the same command again
  assert "resumed from step" in caplog.text  # not a fresh start
  for split in ("val", "test"):
    a = _read(os.path.join(full.workdir, "eval", f"{split}.json"))
    b = _read(os.path.join(part.workdir, "eval", f"{split}.json"))
    for key in metrics_lib.AGGREGATE_KEYS + ("step", "checkpoint"):
      assert a[key] == b[key], (split, key)
  rows = lambda c: [r for r in writer_lib.read_metrics(c.workdir)
                    if "train/loss" in r]
  assert [r["step"] for r in rows(part)] == [r["step"] for r in rows(full)]
  np.testing.assert_allclose([r["train/loss"] for r in rows(part)],
                             [r["train/loss"] for r in rows(full)], rtol=1e-6)


def _copy(src, dst):
  shutil.copytree(src, dst)
  return str(dst)


def _edit_manifest(pseudo_dir, **changes):
  path = os.path.join(pseudo_dir, pl_files.LLP_DIR, pl_files.MANIFEST)
  m = _read(path)
  m.update(changes)
  with open(path, "w") as f:
    json.dump(m, f)


def test_mismatched_classes_fail_naming_dir(tmp_path, llp):
  bad = _copy(llp[1], tmp_path / "bad")
  _edit_manifest(bad, classes=list(avvp.LLP_CLASSES)[::-1])
  c = tiny_config(tmp_path / "run", llp[0], bad, "han", "clip_clap")
  with pytest.raises(ValueError, match="classes") as e:
    train_parser.run(c)
  assert bad in str(e.value)


def test_wrong_num_segments_fails(tmp_path, llp):
  bad = _copy(llp[1], tmp_path / "bad")
  _edit_manifest(bad, num_segments=8)
  c = tiny_config(tmp_path / "run", llp[0], bad, "han", "clip_clap")
  with pytest.raises(ValueError, match="num_segments") as e:
    train_parser.run(c)
  assert bad in str(e.value)


def test_missing_train_ids_fail_naming_them(tmp_path, llp):
  bad = _copy(llp[1], tmp_path / "bad")
  vid = avvp.read_llp_split(llp[0], "train").ids[3]
  os.remove(os.path.join(bad, pl_files.LLP_DIR,
                         pl_files.LOGIT_DIR.format(m="v"), vid + ".npy"))
  c = tiny_config(tmp_path / "run", llp[0], bad, "han", "clip_clap")
  with pytest.raises(FileNotFoundError, match=vid) as e:
    train_parser.run(c)
  assert bad in str(e.value)


def test_no_pseudo_labels_dir_fails(tmp_path, llp):
  c = tiny_config(tmp_path / "run", llp[0], str(tmp_path / "nothing"), "han",
                  "clip_clap")
  with pytest.raises(FileNotFoundError, match="stage 2"):
    train_parser.run(c)


@pytest.mark.parametrize("features,use_3d,dims", [
    ("vggish_res152_r2plus1d", False, (128, 2560)),
    ("clip_clap", False, (512, 768)),
    ("clip_clap", True, (512, 1280)),
])
def test_load_parser_inputs(llp, features, use_3d, dims):
  ids = avvp.read_llp_split(llp[0], "val").ids[:3]
  x = llp_features.load_parser_inputs(llp[0], ids, features, use_3d)
  assert llp_features.parser_input_dims(features, use_3d) == dims
  assert x["audio"].shape == (3, T, dims[0])
  assert x["visual"].shape == (3, T, dims[1])
  assert x["audio"].dtype == x["visual"].dtype == np.float32
  if features == "clip_clap" and use_3d:
    clip = llp_features.load_parser_inputs(llp[0], ids, features)["visual"]
    np.testing.assert_array_equal(x["visual"][..., :768], clip)


def test_unknown_feature_set_lists_valid_ones():
  with pytest.raises(ValueError, match="clip_clap"):
    llp_features.parser_input_dims("vggish")
