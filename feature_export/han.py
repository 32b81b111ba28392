"""HAN-layout features with Flax nets: VGGish (T,128), ResNet-152 (8T,2048),
R(2+1)D-18 (T,512). Choices (frames, crops, raw VGGish, padding): `Exporter`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ear_jax.data import features as features_lib
from feature_export import common
from feature_export import decode as decode_lib
from feature_export.nets import r2plus1d as r2plus1d_lib
from feature_export.nets import resnet as resnet_lib
from feature_export.nets import vggish as vggish_lib
from feature_export.nets import weights as weights_lib

# pylint: disable=invalid-name

FEATURES = ("vggish", "res152", "r2plus1d_18")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
POSTPROCESS = ("none", "pca", "pca_quantized")

# Where the published weights come from, for the error when one is missing.
WEIGHTS_HELP = {
    "vggish": (
        "vggish_weights",
        "the PyTorch VGGish port's vggish-10086976.pth (GitHub"
        " harritaylor/torchvggish releases; PCA: vggish_pca_params-970ea276.pth"
        " via --config.vggish_pca_params)",
    ),
    "res152": (
        "resnet_weights",
        "torchvision ResNet152_Weights.IMAGENET1K_V1, resnet152-394f9c45.pth"
        " (torchvision.models.resnet152(weights=...).state_dict())",
    ),
    "r2plus1d_18": (
        "r2plus1d_weights",
        "torchvision R2Plus1D_18_Weights.KINETICS400_V1,"
        " r2plus1d_18-91a641e6.pth",
    ),
}


def _resize_short_crop(img, short: int, crop: int) -> np.ndarray:
  """PIL image -> short side `short` (bilinear), centre crop -> uint8 HxWx3."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  w, h = img.size
  if w <= h:
    size = (short, int(short * h / w))
  else:
    size = (int(short * w / h), short)
  img = img.resize(size, Image.BILINEAR)
  return _centre_crop(np.asarray(img), crop)


def _resize_crop(img, hw: tuple[int, int], crop: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  img = img.resize((hw[1], hw[0]), Image.BILINEAR)
  return _centre_crop(np.asarray(img), crop)


def _centre_crop(x_HxWx3: np.ndarray, crop: int) -> np.ndarray:
  h, w = x_HxWx3.shape[:2]
  top, left = int(round((h - crop) / 2)), int(round((w - crop) / 2))
  return np.ascontiguousarray(x_HxWx3[top:top + crop, left:left + crop])


def _normalise(x_uint8, mean, std):
  x = x_uint8.astype(jnp.float32) / 255.0
  shape = (1,) * (x.ndim - 1) + (3,)
  return (x - jnp.reshape(jnp.asarray(mean, jnp.float32), shape)) / jnp.reshape(
      jnp.asarray(std, jnp.float32), shape)


def net_builders(config) -> dict[str, Any]:
  """feature -> ctor(rngs) of its net at the widths in config.nets."""
  m = config.nets
  return {
      "vggish": lambda rngs: vggish_lib.VGGish(
          tuple(m.vggish_widths), m.vggish_fc_dim, rngs=rngs),
      "res152": lambda rngs: resnet_lib.ResNet(
          tuple(m.resnet_layers), m.resnet_width, rngs=rngs),
      "r2plus1d_18": lambda rngs: r2plus1d_lib.R2Plus1D(
          tuple(m.r2plus1d_layers), m.r2plus1d_width, m.r2plus1d_stem_mid,
          rngs=rngs),
  }


_LOADERS = {
    "vggish": vggish_lib.load_torch_state_dict,
    "res152": resnet_lib.load_torch_state_dict,
    "r2plus1d_18": r2plus1d_lib.load_torch_state_dict,
}


class Exporter:
  """HAN-layout features, every net jitted on the default JAX backend.

  Frames: 8 per 1-s segment at the centres of its eighths (nearest decoded
  frame), like HAN's 80 frames per 10-s clip. ResNet: short side 256, centre
  crop 224, ImageNet mean/std. R(2+1)D: the same frames (r2plus1d_frames=8)
  resized to 128x171, centre crop 112, Kinetics mean/std. VGGish: 16 kHz
  mono, 96x64 log-mel examples starting at each second (vggish_hop_seconds);
  raw 128-d embeddings by default (vggish_postprocess="none"), because
  HAN's extraction script saved the `vggish/embedding` tensor, not the PCA'd
  8-bit AudioSet release form ("pca", "pca_quantized" give those). Short
  clips: frames past the end repeat the last frame and audio is zero-padded
  (manifest `padded_seconds`; at most config.max_pad_seconds). No audio:
  VGGish fails for that video (manifest `failures`); no zero features.
  """

  name = "han"
  pad_batches = True  # one compiled shape per net

  def __init__(self, config):
    self.config = c = config
    jax.config.update("jax_default_matmul_precision",
                      c.get("matmul_precision", "default"))
    self.features = feats = common.parse_features(c.features, FEATURES)
    if c.vggish_postprocess not in POSTPROCESS:
      raise ValueError(f"config.vggish_postprocess={c.vggish_postprocess!r};"
                       f" expected one of {POSTPROCESS}")
    missing = [f for f in feats if not c.get(WEIGHTS_HELP[f][0])]
    if missing and not c.random_init_for_testing:
      lines = "\n".join(f"  --config.{WEIGHTS_HELP[f][0]}=PATH  ({f}:"
                        f" {WEIGHTS_HELP[f][1]})" for f in missing)
      raise ValueError(
          "pretrained weights are required for the HAN features; set\n"
          f"{lines}\n(.pth needs torch; .safetensors/.npz with the same"
          " tensor names do not). --config.random_init_for_testing=True"
          " exports random-weight features for tests only."
      )
    builders = net_builders(c)
    models = {f: weights_lib.abstract(builders[f]) for f in feats}
    for f in feats:
      want = features_lib.SEGMENT_FEATURES[f].dim
      got = models[f].embed_dim if f == "vggish" else models[f].out_dim
      if got != want:
        raise ValueError(f"config.nets gives {f!r} {got}-d outputs; the layout"
                         f" holds {want}-d features")
    self.weights, self.pca = {}, None
    for i, f in enumerate(feats):
      path = c.get(WEIGHTS_HELP[f][0])
      if path:
        sd = weights_lib.read_state_dict(path)
        try:
          _LOADERS[f](models[f], sd)
        except (KeyError, ValueError) as e:
          raise ValueError(f"--config.{WEIGHTS_HELP[f][0]}={path}: {e}") from e
        self.weights[f] = os.path.abspath(path)
        if f == "vggish":
          self.pca = vggish_lib.pca_params(sd)
      else:
        weights_lib.random_init(models[f], c.seed + i)
        self.weights[f] = "random_init_for_testing"
        logging.warning("%s: RANDOM weights (random_init_for_testing)", f)
    self._setup_pca(models)
    self._fns = {f: self._jit(f, models[f]) for f in feats}
    self.param_counts = {
        f: int(sum(x.size for x in jax.tree.leaves(nnx.state(models[f]))))
        for f in feats
    }

  def _setup_pca(self, models) -> None:
    c = self.config
    if "vggish" not in self.features or c.vggish_postprocess == "none":
      self.pca = None
      return
    if c.vggish_pca_params:
      self.pca = vggish_lib.pca_params(
          weights_lib.read_state_dict(c.vggish_pca_params))
    if self.pca is None and c.random_init_for_testing:
      d = models["vggish"].embed_dim
      rng = np.random.default_rng(c.seed)
      self.pca = (rng.standard_normal((d, d)).astype(np.float32) / np.sqrt(d),
                  rng.standard_normal(d).astype(np.float32))
    if self.pca is None:
      raise ValueError(
          f"config.vggish_postprocess={c.vggish_postprocess!r} needs the"
          " AudioSet PCA parameters: set --config.vggish_pca_params=PATH"
          " (vggish_pca_params-970ea276.pth or .npz with pca_eigen_vectors,"
          " pca_means), or use vggish_postprocess='none'"
      )

  def _jit(self, f: str, model: nnx.Module):
    graphdef, state = nnx.split(model)
    pca = self.pca
    quantize = self.config.vggish_postprocess == "pca_quantized"

    def apply(state, x):
      net = nnx.merge(graphdef, state)
      if f == "res152":
        return net(_normalise(x, IMAGENET_MEAN, IMAGENET_STD))
      if f == "r2plus1d_18":
        return net(_normalise(x, KINETICS_MEAN, KINETICS_STD))
      emb = net(x)
      if pca is not None:
        emb = vggish_lib.postprocess(emb, jnp.asarray(pca[0]),
                                     jnp.asarray(pca[1]), quantize)
      return emb

    fn = jax.jit(apply)
    return lambda x: np.asarray(jax.device_get(fn(state, x)), np.float32)

  # -- manifest ---------------------------------------------------------------

  def model_info(self) -> dict[str, Any]:
    c = self.config
    arch = dict(vggish="VGGish", res152="ResNet" + str(tuple(
        c.nets.resnet_layers)), r2plus1d_18="R(2+1)D" + str(tuple(
            c.nets.r2plus1d_layers)))
    return {
        f: dict(architecture=arch[f], weights=self.weights[f],
                params=self.param_counts[f],
                dim=features_lib.SEGMENT_FEATURES[f].dim,
                backend=jax.default_backend())
        for f in self.features
    }

  def settings(self) -> dict[str, Any]:
    c = self.config
    return dict(
        num_segments=c.num_segments, duration_tolerance=c.duration_tolerance,
        max_pad_seconds=c.max_pad_seconds,
        frames_per_segment=c.frames_per_segment,
        r2plus1d_frames=c.r2plus1d_frames,
        resnet=dict(resize=c.resnet_resize, crop=c.resnet_crop),
        r2plus1d=dict(resize=tuple(c.r2plus1d_resize), crop=c.r2plus1d_crop),
        vggish_postprocess=c.vggish_postprocess,
        vggish_hop_seconds=c.vggish_hop_seconds,
        padding="last frame repeated; audio zero-padded",
        matmul_precision=c.get("matmul_precision", "default"),
    )

  def write_extra(self, root: pathlib.Path, previous: dict) -> dict[str, Any]:
    del root, previous
    return {}

  # -- video ------------------------------------------------------------------

  def prepare(self, vid: str, path: str, todo, chunk_segments: int = 0):
    """Decodes one video into uint8 crops / log-mel, chunk by chunk (a
    worker thread); yields common.Prepared."""
    info = decode_lib.probe(path)
    T, pad = common.segment_plan(self.config, info)
    parts = {}
    visual = tuple(f for f in ("res152", "r2plus1d_18") if f in todo)
    if visual:
      parts[visual] = lambda: _FramesPart(self, info, T, visual)
    if "vggish" in todo:
      parts[("vggish",)] = lambda: _VGGishPart(self, info, T)
    return common.run_parts(vid, path, common.video_record(info, T, pad), T,
                            chunk_segments, parts)

  def batch_size(self, f: str) -> int:
    return int(self.config.batch_sizes[f])

  def encoder(self, f: str):
    return self._fns[f]

  def finalize(self, f: str, vid: str, out: np.ndarray) -> np.ndarray:
    del f, vid
    return np.asarray(out, np.float32)


class _FramesPart:
  """ResNet crops (k2 frames per segment) and R(2+1)D clips (k3 frames);
  one decoding pass when k2 == k3 (shared frames)."""

  def __init__(self, exporter: Exporter, info, T: int, features):
    c = self.config = exporter.config
    self.T, self.features = T, features
    self.k = dict(res152=c.frames_per_segment, r2plus1d_18=c.r2plus1d_frames)
    self.times = {f: decode_lib.segment_times(T, self.k[f]) for f in features}
    crop = dict(
        res152=lambda fr: _resize_short_crop(fr.to_image(), c.resnet_resize,
                                             c.resnet_crop),
        r2plus1d_18=lambda fr: _resize_crop(
            fr.to_image(), tuple(c.r2plus1d_resize), c.r2plus1d_crop))
    self.shared = len(features) == 2 and len(set(self.k.values())) == 1
    self.crop = crop
    groups = [features] if self.shared else [(f,) for f in features]
    self.readers = {}
    try:
      for g in groups:
        self.readers[g] = decode_lib.FrameReader(info)
    except BaseException:
      self.close()
      raise

  def rows(self, lo: int, hi: int) -> dict[str, Any]:
    c, out = self.config, {}
    for group, reader in self.readers.items():
      k = self.k[group[0]]
      got = reader.take(self.times[group[0]][lo * k:hi * k],
                        lambda fr: tuple(self.crop[f](fr) for f in group))
      for i, f in enumerate(group):
        x = np.stack([g[i] for g in got])
        if f == "r2plus1d_18":
          x = x.reshape(hi - lo, k, c.r2plus1d_crop, c.r2plus1d_crop, 3)
        out[f] = x
    return out

  def finish(self, info: dict[str, Any]) -> None:
    del info
    seconds = min(r.video_seconds for r in self.readers.values())
    common.check_coverage(self.config, self.T, seconds, "video")

  def close(self) -> None:
    for reader in self.readers.values():
      reader.close()


class _VGGishPart:
  """16-kHz log-mel examples, example t starting at t * vggish_hop_seconds."""

  def __init__(self, exporter: Exporter, info, T: int):
    self.config, self.T = exporter.config, T
    rate = vggish_lib.SAMPLE_RATE
    self.starts = vggish_lib.example_starts(T, self.config.vggish_hop_seconds,
                                            T * rate)
    self.reader = decode_lib.AudioReader(info, rate, T * rate)

  def rows(self, lo: int, hi: int) -> dict[str, Any]:
    s = self.starts[lo:hi]
    a = int(s[0]) * vggish_lib.HOP
    if hi == self.T:  # the whole tail, as one read of the clip would
      b = self.T * vggish_lib.SAMPLE_RATE
    else:
      b = (int(s[-1]) + vggish_lib.NUM_FRAMES - 1) * vggish_lib.HOP + (
          vggish_lib.WINDOW)
    mel = vggish_lib.log_mel(self.reader.read(a, b))
    rel = s - s[0]
    return {"vggish": np.stack(
        [mel[j:j + vggish_lib.NUM_FRAMES] for j in rel])}

  def finish(self, info: dict[str, Any]) -> None:
    real = self.reader.real_samples / vggish_lib.SAMPLE_RATE
    info["audio_seconds"] = round(real, 4)
    common.check_coverage(self.config, self.T, real, "audio")

  def close(self) -> None:
    self.reader.close()
