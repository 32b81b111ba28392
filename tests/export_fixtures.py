"""Helpers shared by the feature-export tests: synthetic clips, tiny HF models.

Not a test module: the tests that use it import torch / transformers / av
with pytest.importorskip first, so this module imports them lazily.
"""

import fractions
import json
import os
import pathlib
import string

import numpy as np

# pylint: disable=g-import-not-at-top


def write_clip(path, seconds, fps, audio=True, size=(64, 48), rate=44100,
               audio_seconds=None):
  """An MPEG-4 clip whose 8 column bands spell the frame index in binary."""
  import av
  with av.open(os.fspath(path), "w") as c:
    vs = c.add_stream("mpeg4", rate=fractions.Fraction(fps).limit_denominator(
        1001))
    vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
    vs.options = {"qscale": "2"}
    if audio:
      astream = c.add_stream("aac", rate=rate, layout="stereo")
    n = int(round(seconds * fps))
    for i in range(n):
      img = np.zeros((size[1], size[0], 3), np.uint8)
      for bit in range(8):
        if (i >> bit) & 1:
          img[:, bit * size[0] // 8:(bit + 1) * size[0] // 8] = 255
      for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
        c.mux(p)
    for p in vs.encode():
      c.mux(p)
    if audio:
      total = int((audio_seconds or seconds) * rate)
      wave = (0.5 * np.sin(2 * np.pi * 440 * np.arange(total) / rate))
      both = np.stack([wave, wave]).astype(np.float32)
      for s in range(0, total, 1024):
        fr = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(both[:, s:s + 1024]), format="fltp",
            layout="stereo")
        fr.sample_rate, fr.pts = rate, s
        for p in astream.encode(fr):
          c.mux(p)
      for p in astream.encode():
        c.mux(p)


SAMPLE_ID = "BjCEufrlXm4"  # LLP train clip BjCEufrlXm4_20_30 (Speech, Dog)


def write_sample_clip(path, seed=0):
  """A stand-in for LLP's 10-s demo clip, with the same container layout.

  Like the published sample: MP4, H.264 320x240 at 359/12 fps (300 frames,
  10.03 s), AAC stereo 44.1 kHz (10.0 s), so the container is slightly longer
  than 10 s. Content: a moving, textured scene with a cut at 6 s, and a
  voice-like harmonic tone in bursts over noise with a bark-like chirp
  train. Deterministic for a given seed. Returns path.
  """
  import av
  rng = np.random.default_rng(seed)
  fps, n_frames = fractions.Fraction(359, 12), 300
  (w, h), rate = (320, 240), 44100
  texture = rng.integers(0, 256, (h // 8, w // 8, 3), np.uint8)
  texture = np.kron(texture, np.ones((8, 8, 1), np.uint8))
  y, x = np.mgrid[0:h, 0:w]
  with av.open(os.fspath(path), "w") as c:
    vs = c.add_stream("h264" if "libx264" not in av.codecs_available
                      else "libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    vs.options = {"crf": "28", "preset": "ultrafast"}
    astream = c.add_stream("aac", rate=rate, layout="stereo")
    for i in range(n_frames):
      t = i / float(fps)
      img = np.roll(texture, int(40 * t), axis=1).astype(np.float32)
      cx, cy = w / 2 + 100 * np.sin(t), h / 2 + 60 * np.cos(1.3 * t)
      blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 800.0)[..., None]
      colour = (250, 80, 20) if t < 6 else (30, 200, 90)
      img = img * (1 - blob) + blob * np.array(colour, np.float32)
      frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
      for p in vs.encode(frame):
        c.mux(p)
    for p in vs.encode():
      c.mux(p)
    n = 10 * rate
    t = np.arange(n) / rate
    voice = sum(np.sin(2 * np.pi * k * (140 + 20 * np.sin(3 * t)) * t) / k
                for k in range(1, 6))
    voice *= (np.sin(2 * np.pi * 0.7 * t) > 0) * 0.15
    bark = np.sin(2 * np.pi * (600 - 300 * (t % 0.4)) * t)
    bark *= ((t % 0.4) < 0.12) * ((t > 3) & (t < 8)) * 0.2
    noise = 0.02 * rng.standard_normal(n)
    wave = np.stack([voice + bark + noise, voice + 0.5 * bark + noise])
    wave = np.clip(wave, -1, 1).astype(np.float32)
    for s in range(0, n, 1024):
      fr = av.AudioFrame.from_ndarray(
          np.ascontiguousarray(wave[:, s:s + 1024]), format="fltp",
          layout="stereo")
      fr.sample_rate, fr.pts = rate, s
      for p in astream.encode(fr):
        c.mux(p)
    for p in astream.encode():
      c.mux(p)
  return path


def repeat_clip(src, dst, seconds):
  """dst: the clip src played again and again for `seconds` (PyAV decode,
  MPEG-4 + AAC re-encode at src's frame size, frame rate and audio rate)."""
  import av
  with av.open(os.fspath(src)) as c:
    vs = c.streams.video[0]
    fps, size = vs.average_rate, (vs.codec_context.width,
                                  vs.codec_context.height)
    frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
  with av.open(os.fspath(src)) as c:
    rate = c.streams.audio[0].codec_context.sample_rate
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=rate)
    wave = np.concatenate(
        [f.to_ndarray() for fr in c.decode(c.streams.audio[0])
         for f in resampler.resample(fr)], axis=1)
  clip_s = len(frames) / float(fps)
  n_frames = int(round(seconds * float(fps)))
  n_samples = int(round(seconds * rate))
  period = int(round(clip_s * rate))
  with av.open(os.fspath(dst), "w") as c:
    out_v = c.add_stream("mpeg4", rate=fps)
    out_v.width, out_v.height, out_v.pix_fmt = size[0], size[1], "yuv420p"
    out_v.options = {"qscale": "2"}
    out_a = c.add_stream("aac", rate=rate, layout="stereo")
    for i in range(n_frames):
      frame = av.VideoFrame.from_ndarray(frames[i % len(frames)],
                                         format="rgb24")
      for p in out_v.encode(frame):
        c.mux(p)
    for p in out_v.encode():
      c.mux(p)
    idx = np.arange(n_samples) % period
    both = np.ascontiguousarray(wave[:, idx].astype(np.float32))
    for s in range(0, n_samples, 1024):
      fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(both[:, s:s + 1024]),
                                      format="fltp", layout="stereo")
      fr.sample_rate, fr.pts = rate, s
      for p in out_a.encode(fr):
        c.mux(p)
    for p in out_a.encode():
      c.mux(p)
  return dst


def write_broken_videos(d):
  """{name: path} of videos the exporters must reject, each for a reason:
  empty (0 bytes), corrupt (random bytes), noaudio (no audio stream),
  codec (a Matroska video stream whose codec id no decoder knows)."""
  d = pathlib.Path(d)
  d.mkdir(parents=True, exist_ok=True)
  (d / "empty.mp4").write_bytes(b"")
  (d / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
  write_clip(d / "noaudio.mp4", 3.0, 10, audio=False, size=(32, 24))
  write_clip(d / "codec.mkv", 3.0, 10, size=(32, 24))
  data = (d / "codec.mkv").read_bytes()
  assert data.count(b"V_MPEG4/ISO/ASP") == 1
  (d / "codec.mkv").write_bytes(data.replace(b"V_MPEG4/ISO/ASP",
                                             b"V_UNKNOWN/XYZ12"))
  return {p.stem: p for p in sorted(d.iterdir())}


def _write_bpe(d, vocab):
  d.mkdir(parents=True, exist_ok=True)
  (d / "vocab.json").write_text(json.dumps(vocab))
  (d / "merges.txt").write_text("#version: 0.2\n")


def write_tiny_hf_models(root):
  """Tiny random CLIP and CLAP saved as local Hugging Face dirs, offline.

  The projection widths are the real checkpoints' (CLIP 768, CLAP 512): the
  feature layouts (ear_jax.data.features.SEGMENT_FEATURES) and the stage-1
  generator fix them. Returns (clip_dir, clap_dir).
  """
  import torch
  import transformers
  root = pathlib.Path(root)
  torch.manual_seed(0)
  chars = string.ascii_lowercase + string.digits + string.punctuation
  # CLIP: letters as BPE units (no merges), eos id 1, projection 768.
  clip_dir = root / "clip"
  vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
  for ch in chars:
    vocab.setdefault(ch, len(vocab))
    vocab.setdefault(ch + "</w>", len(vocab))
  _write_bpe(clip_dir, vocab)
  tok = transformers.CLIPTokenizer.from_pretrained(clip_dir)
  cfg = transformers.CLIPConfig(
      text_config=dict(vocab_size=len(vocab), hidden_size=16,
                       intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, max_position_embeddings=128,
                       bos_token_id=0, eos_token_id=1, pad_token_id=1),
      vision_config=dict(hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2,
                         image_size=32, patch_size=8),
      projection_dim=768)
  transformers.CLIPModel(cfg).save_pretrained(clip_dir)
  ip_cls = getattr(transformers, "CLIPImageProcessorPil",
                   transformers.CLIPImageProcessor)
  ip_cls(size={"shortest_edge": 32},
         crop_size={"height": 32, "width": 32}).save_pretrained(clip_dir)
  tok.save_pretrained(clip_dir)
  # CLAP: RoBERTa byte-level units, fused HTSAT, 1-s extractor window.
  clap_dir = root / "clap"
  vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
  for ch in chars:
    vocab.setdefault(ch, len(vocab))
    vocab.setdefault("\u0120" + ch, len(vocab))
  _write_bpe(clap_dir, vocab)
  tok = transformers.RobertaTokenizer.from_pretrained(clap_dir)
  cfg = transformers.ClapConfig(
      text_config=dict(vocab_size=len(vocab), hidden_size=16,
                       intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, max_position_embeddings=130,
                       projection_dim=512),
      audio_config=dict(hidden_size=32, patch_embeds_hidden_size=16,
                        depths=[1, 1], num_attention_heads=[2, 2],
                        window_size=4, spec_size=128, num_mel_bins=64,
                        enable_fusion=True, projection_dim=512,
                        projection_hidden_size=32),
      projection_dim=512)
  transformers.ClapModel(cfg).save_pretrained(clap_dir)
  transformers.ClapFeatureExtractor(
      feature_size=64, sampling_rate=48000, max_length_s=1,
      truncation="fusion", padding="repeatpad").save_pretrained(clap_dir)
  tok.save_pretrained(clap_dir)
  return clip_dir, clap_dir
