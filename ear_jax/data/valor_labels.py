"""VALOR's segment-level pseudo-labels: binary (10, 25) per video, no logits.

VALOR (and its released files) keeps audio labels from CLAP and visual
labels from CLIP in two folders of <11-character id>.npy:
  <root>/CLAP/segment_pseudo_labels/<id>.npy   audio   (T, C) in {0, 1}
  <root>/CLIP/segment_pseudo_labels/<id>.npy   visual  (T, C) in {0, 1}
"""
# pylint: disable=invalid-name

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ear_jax import jsonio
from ear_jax.data import parallel as parallel_lib

AUDIO_DIR = os.path.join("CLAP", "segment_pseudo_labels")
VISUAL_DIR = os.path.join("CLIP", "segment_pseudo_labels")
FORMATS = ("uwav", "valor")  # stage-3 config.pseudo_labels_format


def label_dirs(root) -> dict[str, str]:
  """{"a": audio folder, "v": visual folder} under a VALOR data root."""
  root = os.fspath(root)
  dirs = {"a": os.path.join(root, AUDIO_DIR), "v": os.path.join(root,
                                                                VISUAL_DIR)}
  missing = [d for d in dirs.values() if not os.path.isdir(d)]
  if missing:
    raise FileNotFoundError(
        f"no VALOR pseudo-labels at {root}: {missing} missing. Point"
        " pseudo_labels_dir at the folder holding CLAP/segment_pseudo_labels"
        " and CLIP/segment_pseudo_labels (VALOR's data/ after unzipping"
        " CLAP.zip and CLIP.zip).")
  return dirs


def read_valor_labels(root, ids: Sequence[str], num_classes: int = 25,
                      num_segments: int = 10, num_workers: int = 16) -> dict:
  """{"a_label", "v_label": uint8 [N, T, C]} of `ids`, in that order."""
  T, C = int(num_segments), int(num_classes)
  out = {}
  for m, folder in label_dirs(root).items():
    jsonio.require_npy_files(
        folder, ids, "Are these VALOR's labels for this LLP split?")

    def load(vid, folder=folder):
      path = os.path.join(folder, vid + ".npy")
      x = jsonio.load_npy(path, fix="Fetch VALOR's labels again.")
      if x.shape != (T, C):
        raise ValueError(f"{path}: shape {x.shape}; expected {(T, C)} (T"
                         " segments, C classes).")
      if ((x != 0) & (x != 1)).any():
        raise ValueError(f"{path}: VALOR pseudo-labels must be 0/1.")
      return x.astype(np.uint8)

    rows = parallel_lib.parallel_map(load, ids, num_workers)
    out[f"{m}_label"] = (np.stack(rows) if rows
                         else np.zeros((0, T, C), np.uint8))
  return out
