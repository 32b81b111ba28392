"""CLIP (visual) and CLAP (audio) features with Hugging Face models (torch).

Segment/padding conventions (docs/METHOD.md, "Data and features"): see
`Exporter`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from absl import logging
import numpy as np

from ear_jax import jsonio
from ear_jax.data import features as features_lib
from feature_export import common
from feature_export import decode as decode_lib

# pylint: disable=invalid-name

FEATURES = ("clip", "clap")
# The checkpoints (docs/METHOD.md, "Data and features"), for the error when
# a path is unset.
HUB_NAMES = dict(clip="openai/clip-vit-large-patch14",
                 clap="laion/clap-htsat-fused")


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "the CLIP/CLAP exporter needs torch: pip install 'ear-jax[export]'"
        " (CPU: pip install torch==2.13.0; GPU: the CUDA build first)"
    ) from e
  return torch


def _transformers():
  try:
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "the CLIP/CLAP exporter needs Hugging Face transformers: pip install"
        " 'ear-jax[export]' (or pip install 'transformers>=4.50,<6')"
    ) from e
  return transformers


def _pooled(out):
  """Projected embedding from get_*_features (tensor in 4.x, output in 5.x)."""
  return out if hasattr(out, "ndim") else out.pooler_output


def _revision(path: str, model) -> str | None:
  """The hub commit of a snapshot dir (.../snapshots/<sha>/), if known."""
  rev = getattr(model.config, "_commit_hash", None)
  parts = pathlib.Path(os.path.abspath(path)).parts
  if not rev and len(parts) > 1 and parts[-2] == "snapshots":
    rev = parts[-1]
  return rev


def _load(kind: str, path: str | None, flag: str):
  """(model, preprocessor, tokenizer) from a local Hugging Face directory."""
  if not path:
    raise ValueError(
        f"--config.{flag} is unset: point it at a local copy of the"
        f" Hugging Face {kind.upper()} checkpoint, e.g. `hf download"
        f" {HUB_NAMES[kind]} --local-dir DIR` (the `hf` command of"
        f" huggingface_hub >= 0.34), then --config.{flag}=DIR."
    )
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f"--config.{flag}={path!r} is not a directory; it must be a local"
        " save_pretrained/snapshot folder (nothing is downloaded)"
    )
  transformers = _transformers()
  kw = dict(local_files_only=True)
  try:
    if kind == "clip":
      model = transformers.CLIPModel.from_pretrained(path, **kw)
      pre = transformers.AutoImageProcessor.from_pretrained(path, **kw)
    else:
      model = transformers.ClapModel.from_pretrained(path, **kw)
      pre = transformers.AutoFeatureExtractor.from_pretrained(path, **kw)
    tok = transformers.AutoTokenizer.from_pretrained(path, **kw)
  except (OSError, ValueError) as e:
    raise FileNotFoundError(
        f"--config.{flag}={path!r}: cannot load the {kind.upper()} model,"
        f" preprocessor and tokenizer from it ({e})"
    ) from e
  return model.eval(), pre, tok


class Exporter:
  """CLIP/CLAP segment features + class-name text embeddings.

  Per 1-s segment t: CLIP `get_image_features` of the frame nearest to
  t + 0.5 s, CLAP `get_audio_features` of the mono audio [t, t+1) at the
  feature extractor's rate (48 kHz for LAION-CLAP); both L2-normalised.
  T = config.num_segments (LLP: 10) or ceil(duration - duration_tolerance).
  Short clips: frames past the end repeat the last frame, audio past the
  end is zeros; the amount is `padded_seconds` in the manifest and
  config.max_pad_seconds caps it (more -> per-video failure). A clip
  without audio fails for CLAP only (manifest `failures`), never zeros.
  Text: template.format(name), L2-normalised, names per config.classes.
  """

  name = "clip_clap"
  pad_batches = False  # torch runs any batch size without recompiling

  def __init__(self, config):
    self.config = config
    torch = _torch()
    self.torch = torch
    self.features = feats = common.parse_features(config.features, FEATURES)
    self.classes, self.classes_source = common.class_names(config.classes)
    if config.device == "auto":
      device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
      device = config.device
    self.device = torch.device(device)
    self.dtype = getattr(torch, config.torch_dtype)
    self.models, self.pre, self.tok, self.paths = {}, {}, {}, {}
    for f in feats:
      flag = f"{f}_model"
      model, pre, tok = _load(f, config.get(flag), flag)
      dim = int(model.config.projection_dim)
      want = features_lib.SEGMENT_FEATURES[f].dim
      if dim != want:
        raise ValueError(
            f"--config.{flag}={config.get(flag)!r} embeds to {dim}-d, but the"
            f" {f!r} layout ({features_lib.SEGMENT_FEATURES[f].subdir}) holds"
            f" {want}-d features; use the checkpoint in HUB_NAMES"
        )
      self.models[f] = model.to(self.device, self.dtype)
      self.pre[f], self.tok[f], self.paths[f] = pre, tok, config.get(flag)
    if "clap" in feats:
      self.clap_rate = int(self.pre["clap"].sampling_rate)
    self.templates = dict(clip=config.clip_template,
                          clap=config.clap_template)

  # -- manifest ---------------------------------------------------------------

  def model_info(self) -> dict[str, Any]:
    transformers = _transformers()
    out = {}
    for f, model in self.models.items():
      out[f] = dict(
          path=os.path.abspath(self.paths[f]),
          name_or_path=model.config.name_or_path,
          revision=_revision(self.paths[f], model),
          model_class=type(model).__name__,
          preprocessor=type(self.pre[f]).__name__,
          dim=int(model.config.projection_dim),
          dtype=self.config.torch_dtype,
          transformers_version=transformers.__version__,
          torch_version=self.torch.__version__,
      )
    return out

  def settings(self) -> dict[str, Any]:
    c = self.config
    return dict(
        num_segments=c.num_segments, duration_tolerance=c.duration_tolerance,
        max_pad_seconds=c.max_pad_seconds, clip_frame="segment centre",
        clap_sample_rate=getattr(self, "clap_rate", None),
        padding="last frame repeated; audio zero-padded",
    )

  # -- text -------------------------------------------------------------------

  def prompts(self, f: str) -> list[str]:
    return [self.templates[f].format(c) for c in self.classes]

  def write_extra(self, root: pathlib.Path, previous: dict) -> dict[str, Any]:
    """Class-name text embeddings, re-encoded unless prompts+model match."""
    info = {}
    old = previous.get("event_feats", {})
    for f in self.features:
      path = root / features_lib.EVENT_FEATURES[f]
      prompts = self.prompts(f)
      entry = dict(path=features_lib.EVENT_FEATURES[f], prompts=prompts,
                   classes=self.classes_source, num_classes=len(prompts),
                   model=os.path.abspath(self.paths[f]))
      if (path.is_file() and {k: old.get(f, {}).get(k) for k in entry}
          == entry):
        logging.info("%s: up to date, kept", path)
      else:
        emb = self.encode_text(f, prompts)
        common.check_finite("<text>", f, emb)
        jsonio.save_npy_atomic(path, emb)
        logging.info("wrote %s %s", path, emb.shape)
      info[f] = entry
    return dict(event_feats=info)

  def encode_text(self, f: str, prompts: list[str]) -> np.ndarray:
    torch = self.torch
    tok = self.tok[f](prompts, padding=True, return_tensors="pt")
    tok = {k: v.to(self.device) for k, v in tok.items()}
    with torch.inference_mode():
      emb = _pooled(self.models[f].get_text_features(**tok))
    return common.l2_normalize(emb.float().cpu().numpy())

  # -- video ------------------------------------------------------------------

  def prepare(self, vid: str, path: str, todo, chunk_segments: int = 0):
    """Decodes and preprocesses one video, chunk by chunk (a worker
    thread); yields common.Prepared."""
    info = decode_lib.probe(path)
    T, pad = common.segment_plan(self.config, info)
    parts = {}
    if "clip" in todo:
      parts[("clip",)] = lambda: _ClipPart(self, info, T)
    if "clap" in todo:
      parts[("clap",)] = lambda: _ClapPart(self, info, T)
    return common.run_parts(vid, path, common.video_record(info, T, pad), T,
                            chunk_segments, parts)

  def batch_size(self, f: str) -> int:
    return int(self.config.get(f"{f}_batch_size"))

  def encoder(self, f: str):
    torch, model = self.torch, self.models[f]

    def to_t(x):
      t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
      return t.to(self.dtype) if t.is_floating_point() else t

    def encode(x):
      with torch.inference_mode():
        if f == "clip":
          out = model.get_image_features(pixel_values=to_t(x))
        else:
          out = model.get_audio_features(**{k: to_t(v) for k, v in x.items()})
      return _pooled(out).float().cpu().numpy()

    return encode

  def finalize(self, f: str, vid: str, out_TxD: np.ndarray) -> np.ndarray:
    del f, vid
    return common.l2_normalize(out_TxD)


class _ClipPart:
  """CLIP pixels of the frame nearest to each segment centre."""

  def __init__(self, exporter: Exporter, info, T: int):
    self.exporter, self.T = exporter, T
    self.times = decode_lib.segment_times(T, 1)
    self.reader = decode_lib.FrameReader(info)

  def rows(self, lo: int, hi: int) -> dict[str, Any]:
    frames = self.reader.take(self.times[lo:hi],
                              lambda fr: fr.to_ndarray(format="rgb24"))
    pixels = self.exporter.pre["clip"](images=frames, return_tensors="np")
    return {"clip": np.asarray(pixels["pixel_values"], np.float32)}

  def finish(self, info: dict[str, Any]) -> None:
    del info
    common.check_coverage(self.exporter.config, self.T,
                          self.reader.video_seconds, "video")

  def close(self) -> None:
    self.reader.close()


class _ClapPart:
  """CLAP input features of each 1-s chunk of mono audio."""

  def __init__(self, exporter: Exporter, info, T: int):
    self.exporter, self.T = exporter, T
    self.rate = rate = exporter.clap_rate
    self.reader = decode_lib.AudioReader(info, rate, T * rate)

  def rows(self, lo: int, hi: int) -> dict[str, Any]:
    rate, pre = self.rate, self.exporter.pre["clap"]
    wave = self.reader.read(lo * rate, hi * rate)
    chunks = list(wave.reshape(hi - lo, rate))
    x = pre(chunks, sampling_rate=rate, return_tensors="np")
    rows = {"input_features": np.asarray(x["input_features"], np.float32)}
    if "is_longer" in x:
      # With fusion, HF (like LAION-CLAP's training code) flags one random
      # clip as "longer" when none is: a training trick that makes
      # export non-deterministic. A 1-s chunk is longer than the model's
      # window only if that window is under 1 s; decide it from that.
      window = getattr(pre, "nb_max_samples", None)
      longer = window is not None and rate > window
      rows["is_longer"] = np.full(np.shape(x["is_longer"]), longer)
    return {"clap": rows}

  def finish(self, info: dict[str, Any]) -> None:
    real = self.reader.real_samples / self.rate
    info["audio_seconds"] = round(real, 4)
    common.check_coverage(self.exporter.config, self.T, real, "audio")

  def close(self) -> None:
    self.reader.close()
