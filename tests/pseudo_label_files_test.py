"""Tests for the stage-2 pseudo-label files (UWAV LLP_Dataset layout)."""

import json
import logging
import os

import numpy as np
import pytest

from ear_jax import pseudo_labels as pl_lib
from ear_jax.data import pseudo_label_files as pl_files

CLASSES = [f"class_{i}" for i in range(25)]


def _stage2_inputs(seed=0, C=25, T=10):
  rng = np.random.default_rng(seed)
  split_ids = {"train": [f"trainvid{i:03d}" for i in range(6)],
               "val": [f"valvideo{i:03d}" for i in range(3)]}
  logits = {m: {s: rng.normal(size=(len(ids), T, C)).astype(np.float32)
                for s, ids in split_ids.items()} for m in "av"}
  weak = {s: (rng.random((len(ids), C)) < 0.4).astype(np.uint8)
          for s, ids in split_ids.items()}
  theta = {"a": rng.normal(size=C).astype(np.float32),
           "v": rng.normal(size=C).astype(np.float32)}
  theta["a"][[0, 3]] = -np.inf
  labels = {m: {s: pl_lib.binarize(logits[m][s], theta[m], weak[s])
                for s in split_ids} for m in "av"}
  return dict(split_ids=split_ids, a_logits=logits["a"],
              v_logits=logits["v"], a_labels=labels["a"],
              v_labels=labels["v"], thresholds_a=theta["a"],
              thresholds_v=theta["v"],
              manifest=dict(classes=CLASSES, source_checkpoint="/ckpt/7"))


def test_write_read_round_trip(tmp_path):
  args = _stage2_inputs()
  root = pl_files.write_stage2(tmp_path / "run", **args)
  assert root == str(tmp_path / "run" / "LLP_Dataset")
  names = sorted(os.listdir(root))
  assert names == ["a_classwise_threhsolds.npy", "a_segmentwise_logits",
                   "a_segmentwise_pseudo_labels", "manifest.json",
                   "v_classwise_threhsolds.npy", "v_segmentwise_logits",
                   "v_segmentwise_pseudo_labels"]
  assert len(os.listdir(os.path.join(root, "v_segmentwise_logits"))) == 9
  label = np.load(os.path.join(root, "a_segmentwise_pseudo_labels",
                               "valvideo001.npy"))
  assert label.dtype == np.float32 and label.shape == (10, 25)
  with open(os.path.join(root, "manifest.json")) as f:
    manifest = json.load(f)
  assert manifest["format"] == "uwav_llp_dataset" and manifest["version"] == 1
  assert manifest["thresholds_a"][0] == "-inf"
  assert manifest["source_checkpoint"] == "/ckpt/7"
  assert manifest["ids"]["val"] == args["split_ids"]["val"]
  assert (manifest["num_segments"], manifest["num_classes"]) == (10, 25)

  ids = ["valvideo002", "trainvid000", "trainvid005"]
  rows = [("val", 2), ("train", 0), ("train", 5)]
  for where in (tmp_path / "run", root):  # the workdir or LLP_Dataset
    got = pl_files.read_stage2(where, ids, expect_classes=CLASSES)
    for m in "av":
      want = np.stack([args[f"{m}_logits"][s][i] for s, i in rows])
      np.testing.assert_array_equal(got[f"{m}_logit"], want)
      assert got[f"{m}_label"].dtype == np.uint8
      np.testing.assert_array_equal(
          got[f"{m}_label"],
          np.stack([args[f"{m}_labels"][s][i] for s, i in rows]))
      np.testing.assert_array_equal(got[f"thresholds_{m}"],
                                    args[f"thresholds_{m}"])
    assert got["manifest"]["classes"] == CLASSES
  # Nothing temporary is left behind.
  for dirpath, _, files in os.walk(root):
    assert not [f for f in files if f.endswith(".tmp")], dirpath


def test_read_without_manifest_warns(tmp_path, caplog):
  root = pl_files.write_stage2(tmp_path, **_stage2_inputs())
  os.remove(os.path.join(root, "manifest.json"))
  with caplog.at_level(logging.WARNING):
    got = pl_files.read_stage2(root, ["trainvid001"], expect_classes=CLASSES)
  assert got["manifest"] is None and got["a_logit"].shape == (1, 10, 25)
  assert "no manifest.json" in caplog.text


def test_read_errors(tmp_path):
  root = pl_files.write_stage2(tmp_path, **_stage2_inputs())
  with pytest.raises(FileNotFoundError,
                     match=r"a_segmentwise_logits: 1 of 2 requested ids.*"
                     r"'nosuchvideo'.*Re-run stage 2 with the same LLP data"):
    pl_files.read_stage2(tmp_path, ["trainvid000", "nosuchvideo"])
  with pytest.raises(ValueError, match=r"manifest.json: classes .* differ"):
    pl_files.read_stage2(tmp_path, ["trainvid000"],
                       expect_classes=CLASSES[::-1])
  with pytest.raises(ValueError, match=r"num_segments 10; expected 8"):
    pl_files.read_stage2(tmp_path, ["trainvid000"], expect_num_segments=8)

  bad_shape = os.path.join(root, "v_segmentwise_logits", "trainvid001.npy")
  np.save(bad_shape, np.zeros((10, 24), np.float32))
  with pytest.raises(ValueError, match=(r"v_segmentwise_logits/trainvid001"
                                        r"\.npy: shape \(10, 24\); expected "
                                        r"\(10, 25\)")):
    pl_files.read_stage2(tmp_path, ["trainvid001"])

  nan_file = os.path.join(root, "a_segmentwise_logits", "trainvid002.npy")
  x = np.zeros((10, 25), np.float32)
  x[3, 4] = np.nan
  np.save(nan_file, x)
  with pytest.raises(ValueError,
                     match=r"a_segmentwise_logits/trainvid002\.npy: non-fin"):
    pl_files.read_stage2(tmp_path, ["trainvid002"])

  np.save(os.path.join(root, "a_classwise_threhsolds.npy"),
          np.zeros(25, np.float32))
  with pytest.raises(ValueError, match=r"differs from the thresholds in"):
    pl_files.read_stage2(tmp_path, ["trainvid000"])

  with pytest.raises(FileNotFoundError, match=r"no stage-2 pseudo-labels at"):
    pl_files.read_stage2(tmp_path / "elsewhere", ["trainvid000"])


def test_read_uwav_layout_class_count(tmp_path):
  root = pl_files.write_stage2(tmp_path, **_stage2_inputs())
  os.remove(os.path.join(root, "manifest.json"))
  with pytest.raises(ValueError, match=r"thresholds have 25 classes; expected"
                     r" 24"):
    pl_files.read_stage2(root, ["trainvid000"], expect_classes=CLASSES[:24])


def test_write_errors(tmp_path):
  args = _stage2_inputs()
  with pytest.raises(ValueError, match=r"manifest must hold 'classes'"):
    pl_files.write_stage2(tmp_path, **{**args, "manifest": {}})
  bad = dict(args["a_logits"], val=np.zeros((3, 10, 24), np.float32))
  with pytest.raises(ValueError,
                     match=r"a_logits\['val'\] has shape \(3, 10, 24\)"):
    pl_files.write_stage2(tmp_path, **{**args, "a_logits": bad})
  theta = np.full(25, np.nan, np.float32)
  with pytest.raises(ValueError, match=r"thresholds_v contains NaN"):
    pl_files.write_stage2(tmp_path, **{**args, "thresholds_v": theta})
  bad = dict(args["v_labels"], train=args["v_labels"]["train"] * 2)
  with pytest.raises(ValueError, match=r"v_labels\['train'\] holds values"):
    pl_files.write_stage2(tmp_path, **{**args, "v_labels": bad})
  ids = dict(args["split_ids"], val=["trainvid000", "b", "c"])
  with pytest.raises(ValueError, match=r"id 'trainvid000' appears in split"):
    pl_files.write_stage2(tmp_path, **{**args, "split_ids": ids})
  assert not os.path.exists(tmp_path / "LLP_Dataset" / "manifest.json")
