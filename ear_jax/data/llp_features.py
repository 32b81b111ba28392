"""Parser (stage 3) inputs on LLP: which features make `audio` and `visual`.

The one place that maps `config.data.features` to arrays and input sizes.
"""
# pylint: disable=invalid-name

from __future__ import annotations

from typing import Sequence

import numpy as np

from ear_jax.data import features as features_lib

# name -> (audio feature, 2D visual feature, 3D visual feature or None)
FEATURE_SETS = {
    # UWAV / HAN: VGGish audio, concat(pooled ResNet-152, R(2+1)D-18).
    "vggish_res152_r2plus1d": ("vggish", "res152", "r2plus1d_18"),
    # EAR Table II: CLAP audio, CLIP visual (+ R(2+1)D with use_3d_with_clip).
    "clip_clap": ("clap", "clip", None),
}


def _parts(features: str, use_3d_with_clip: bool):
  if features not in FEATURE_SETS:
    raise ValueError(f"config.data.features={features!r}; expected one of"
                     f" {sorted(FEATURE_SETS)}.")
  audio, visual_2d, visual_3d = FEATURE_SETS[features]
  if features == "clip_clap" and use_3d_with_clip:
    visual_3d = "r2plus1d_18"
  return audio, [visual_2d] + ([visual_3d] if visual_3d else [])


def feature_names(features: str, use_3d_with_clip: bool = False) -> list[str]:
  """The segment features (data/features.py names) a feature set needs."""
  audio, visual = _parts(features, use_3d_with_clip)
  return [audio] + visual


def parser_input_dims(features: str, use_3d_with_clip: bool = False
                      ) -> tuple[int, int]:
  """(in_dim_a, in_dim_v) of a feature set, without loading anything."""
  audio, visual = _parts(features, use_3d_with_clip)
  dim = lambda name: features_lib.SEGMENT_FEATURES[name].dim
  return dim(audio), sum(dim(v) for v in visual)


def load_parser_inputs(llp_root: str, ids: Sequence[str], features: str,
                       use_3d_with_clip: bool = False,
                       num_workers: int = 8) -> dict[str, np.ndarray]:
  """{"audio": f32 [N,10,Da], "visual": f32 [N,10,Dv]} of LLP videos `ids`.

  Visual = the 2D features (ResNet-152 pooled to 10x2048, or CLIP) with the
  R(2+1)D-18 features concatenated on the channel axis when the set uses 3D.
  """
  audio, visual = _parts(features, use_3d_with_clip)
  load = lambda name: features_lib.load_segment_features(
      llp_root, name, list(ids), num_workers=num_workers)
  audio_NxTxDa = load(audio)
  if len(visual) == 1:
    return {"audio": audio_NxTxDa, "visual": load(visual[0])}
  # Filled part by part: LLP train ResNet + R(2+1)D is ~1 GB as float32.
  _, dim_v = parser_input_dims(features, use_3d_with_clip)
  visual_NxTxDv = np.empty(audio_NxTxDa.shape[:2] + (dim_v,), np.float32)
  start = 0
  for name in visual:
    part_NxTxD = load(name)
    visual_NxTxDv[..., start:start + part_NxTxD.shape[-1]] = part_NxTxD
    start += part_NxTxD.shape[-1]
  return {"audio": audio_NxTxDa, "visual": visual_NxTxDv}


def annotations_dir(llp_root: str, llp_annotations_dir: str | None = None
                    ) -> str:
  """Where the AVVP_*.csv live: the explicit dir, else `llp_root`."""
  return llp_annotations_dir or llp_root


def inputs_from_arrays(arrays, features: str, use_3d_with_clip: bool = False,
                       name: str = "video") -> tuple[np.ndarray, np.ndarray]:
  """(audio [T, Da], visual [T, Dv]) of one video of any length from its
  stored feature arrays {feature name: (L, D)} (the exporter's rows)."""
  audio, visual = _parts(features, use_3d_with_clip)
  rows = {}
  for f in [audio] + visual:
    if f not in arrays:
      raise ValueError(f"{name}: no {f!r} features; the {features!r} inputs"
                       f" need {[audio] + visual}.")
    rows[f] = features_lib.segment_rows(arrays[f], f, f"{name} ({f})")
  lengths = {f: len(x) for f, x in rows.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(
        f"{name}: the features cover different numbers of 1-s segments"
        f" {lengths}; export them from the same video with the same"
        " num_segments.")
  return rows[audio], np.concatenate([rows[v] for v in visual], axis=1)


def load_video_inputs(root: str, vid: str, features: str,
                      use_3d_with_clip: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
  """inputs_from_arrays of video `vid`'s files under dataset root `root`."""
  audio, visual = _parts(features, use_3d_with_clip)
  arrays = {f: features_lib.load_video_features(root, f, vid)
            for f in [audio] + visual}
  # Already one row per segment: frames_per_segment no longer applies.
  audio_TxD = arrays.pop(audio)
  lengths = {audio: len(audio_TxD), **{f: len(x) for f, x in arrays.items()}}
  if len(set(lengths.values())) != 1:
    raise ValueError(
        f"{vid}: the features under {root} cover different numbers of 1-s"
        f" segments {lengths}; re-export the video.")
  return audio_TxD, np.concatenate([arrays[v] for v in visual], axis=1)

