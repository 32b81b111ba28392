"""Feature export: decoding, CLIP/CLAP and HAN exporters, torch -> flax weights.

Every model is tiny and randomly initialised here; nothing is downloaded.
"""

import json
import os
import shutil

import numpy as np
import pytest

# pylint: disable=g-import-not-at-top,wrong-import-position
# pylint: disable=invalid-name,redefined-outer-name

av = pytest.importorskip("av")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax
from flax import nnx
from torch import nn

import export_fixtures
from ear_jax.configs import export_clip_clap
from ear_jax.configs import export_han
from ear_jax import config_lib
from ear_jax.data import avvp
from ear_jax.data import features
from feature_export import common
from feature_export import decode
from feature_export import driver
from feature_export.nets import r2plus1d
from feature_export.nets import resnet
from feature_export.nets import vggish
from feature_export.nets import weights


SAMPLE_ID = export_fixtures.SAMPLE_ID


# ----------------------------------------------------------------------------
# Synthetic clips (export_fixtures.write_clip).


def _frame_index(rgb_HxWx3):
  bands = rgb_HxWx3.mean(axis=(0, 2)).reshape(8, -1)[:, 2:-2].mean(axis=1)
  return int(sum(1 << b for b in range(8) if bands[b] > 128))


@pytest.fixture(scope="module")
def videos_dir(tmp_path_factory, sample_video):
  d = tmp_path_factory.mktemp("videos")
  shutil.copy(sample_video, d)
  export_fixtures.write_clip(d / "clip24.mp4", 3.0, 24)
  export_fixtures.write_clip(d / "clip30.mp4", 3.0, 30)
  export_fixtures.write_clip(d / "noaudio.mp4", 3.0, 30000 / 1001,
                             audio=False)
  return d


# ----------------------------------------------------------------------------
# Decoding.


def test_frames_nearest_to_requested_times(videos_dir):
  for name, fps in (("clip24", 24), ("clip30", 30), ("noaudio", 30000 / 1001)):
    info = decode.probe(os.fspath(videos_dir / f"{name}.mp4"))
    assert info.fps == pytest.approx(fps, rel=1e-3)
    times = decode.segment_times(3, 8)
    got = decode.read_frames(info, list(times) + [7.5],
                             lambda fr: fr.to_ndarray(format="rgb24"))
    idx = [_frame_index(g) for g in got]
    last = int(round(3.0 * fps)) - 1
    assert idx[-1] == last  # past the end: the last frame is repeated
    # Nearest frame (exact ties, e.g. 24 fps at t = 3/16 s, may go either way).
    assert np.abs(np.array(idx[:-1]) - times * fps).max() <= 0.5 + 1e-6, name
    assert idx[-1] == last  # past the end: the last frame is repeated


def test_audio_mono_resampled_and_padded(videos_dir):
  info = decode.probe(os.fspath(videos_dir / "clip24.mp4"))
  wave, real = decode.read_audio(info, 16000, 4)
  assert wave.shape == (64000,) and wave.dtype == np.float32
  assert real == pytest.approx(3.0, abs=0.05)
  # Channel mean of a 0.5-amplitude sine: RMS 0.5 / sqrt(2).
  assert np.sqrt(np.mean(wave[8000:40000] ** 2)) == pytest.approx(
      0.5 / np.sqrt(2), rel=0.02)
  assert not wave[int(16000 * 3.1):].any()  # zero padding past the end
  with pytest.raises(decode.NoAudioError):
    decode.read_audio(decode.probe(os.fspath(videos_dir / "noaudio.mp4")),
                      16000, 3)


def test_short_audio_stream_is_a_failure_not_silence(tmp_path):
  export_fixtures.write_clip(tmp_path / "short.mp4", 3.0, 25,
                             audio_seconds=1.0)
  info = decode.probe(os.fspath(tmp_path / "short.mp4"))
  c = export_clip_clap.get_config("tiny,dataset=unav")
  T, pad = common.segment_plan(c, info)
  assert (T, pad) == (3, 0.0)
  wave, real = decode.read_audio(info, 16000, T)
  assert real == pytest.approx(1.0, abs=0.05) and not wave[17000:].any()
  with pytest.raises(decode.DecodeError, match="audio stream ends at 1.0"):
    common.check_coverage(c, T, real, "audio")
  stats = {}
  decode.read_frames(info, decode.segment_times(T, 1), lambda f: 0, stats)
  assert stats["video_seconds"] == np.inf  # every time lies inside the video
  decode.read_frames(info, [5.0], lambda f: 0, stats)
  assert stats["video_seconds"] == pytest.approx(3.0)


def test_num_segments_and_padding_limit(sample_video):
  info = decode.probe(os.fspath(sample_video))
  assert info.duration == pytest.approx(10.03, abs=0.01)
  assert (info.width, info.height, info.audio_rate) == (320, 240, 44100)
  assert info.fps == pytest.approx(359 / 12)
  assert decode.num_segments(info.duration, None, 0.05) == 10
  assert decode.num_segments(9.2, None, 0.05) == 10
  assert decode.num_segments(3.0, 10, 0.05) == 10
  c = export_clip_clap.get_config("tiny")
  c.max_pad_seconds = 1.0
  short = decode.VideoInfo("x", 3.0, 0.0, True, True, 24.0, 8, 8, 44100)
  with pytest.raises(decode.DecodeError, match="max_pad_seconds"):
    common.segment_plan(c, short)
  c.num_segments = 0
  assert common.segment_plan(c, short) == (3, 0.0)


def test_class_names(tmp_path):
  names, _ = common.class_names("llp")
  assert len(names) == 25 and names[5] == "frying (food)"
  assert names[22] == "baby cry infant cry"
  names, _ = common.class_names("unav")
  assert names == list(avvp.UNAV_CLASSES)
  f = tmp_path / "classes.txt"
  f.write_text("Dog barking\n\ncat\n")
  assert common.class_names(os.fspath(f))[0] == ["Dog barking", "cat"]


def test_vggish_log_mel_front_end():
  m = vggish.mel_matrix()
  assert m.shape == (257, 64) and not m[0].any() and m.max() <= 1.0
  centre_hz = np.argmax(m, axis=0) * 8000 / 256
  assert np.all(np.diff(centre_hz) >= 0) and 125 < centre_hz[0] < 200
  t = np.arange(16000 * 3) / 16000
  ex = vggish.log_mel_examples(np.sin(2 * np.pi * 1000 * t), 3)
  assert ex.shape == (3, 96, 64)
  peak_hz = m[:, ex[1].mean(0).argmax()].argmax() * 8000 / 256
  assert abs(peak_hz - 1000) < 80
  silent = vggish.log_mel_examples(np.zeros(16000 * 2), 2)
  np.testing.assert_allclose(silent, np.log(0.01), rtol=1e-6)


# ----------------------------------------------------------------------------
# Tiny Hugging Face CLIP / CLAP, built offline.


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
  return export_fixtures.write_tiny_hf_models(tmp_path_factory.mktemp("hf"))


def _clip_clap_config(videos_dir, out, hf_models, **kw):
  c = export_clip_clap.get_config("tiny,dataset=unav")
  c.workdir = os.fspath(out / "workdir")
  c.videos_dir = os.fspath(videos_dir)
  c.output_root = os.fspath(out / "UnAV")
  c.clip_model, c.clap_model = map(os.fspath, hf_models)
  c.progress = False
  for k, v in kw.items():
    c[k] = v
  assert not config_lib.unset_required(c)
  return c


def test_clip_clap_export_layout_failures_and_resume(videos_dir, hf_models,
                                                     tmp_path):
  c = _clip_clap_config(videos_dir, tmp_path, hf_models)
  root = tmp_path / "UnAV"
  m = driver.run(c)
  assert m["counts"] == dict(total=4, done=3, skipped=0, failed=1)
  assert m["failures"] == [dict(id="noaudio", features=dict(
      clap="NoAudioError: no audio stream"))]
  assert m["random_init_for_testing"] is False
  assert m["models"]["clip"]["dim"] == 768
  assert m["videos"][SAMPLE_ID]["num_segments"] == 10
  assert m["videos"]["clip24"]["num_segments"] == 3
  assert m["videos"]["clip24"]["padded_seconds"] == 0.0
  ids = [SAMPLE_ID, "clip24", "clip30", "noaudio"]
  lengths = {SAMPLE_ID: 10, "clip24": 3, "clip30": 3, "noaudio": 3}
  for name, dim in (("clip", 768), ("clap", 512)):
    have = ids if name == "clip" else ids[:3]
    for vid in have:
      x = np.load(features.feature_path(root, name, vid))
      assert x.shape == (lengths[vid], dim) and x.dtype == np.float32
      np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    loaded = features.load_segment_features(
        root, name, have, num_segments=[lengths[v] for v in have],
        max_segments=10, num_workers=1)
    assert loaded.shape == (len(have), 10, dim)
    text = features.load_event_features(root, name, len(avvp.UNAV_CLASSES))
    assert text.shape == (100, dim)
  assert not features.feature_path(root, "clap", "noaudio").exists()
  # LLP-style loading (exactly 10 rows) of the 10-s sample.
  assert features.load_segment_features(root, "clip", [SAMPLE_ID]).shape == (
      1, 10, 768)
  prompts = m["event_feats"]["clip"]["prompts"]
  assert prompts[37] == "A photo of playing base guitar"
  assert m["event_feats"]["clap"]["prompts"][0] == (
      "This is the sound of man speaking")

  # Resume: finished ids are skipped and not rewritten; the no-audio clip is
  # retried (its CLAP file is missing) and fails again, CLIP left as it was.
  files = sorted(root.rglob("*.npy"))
  mtimes = {p: p.stat().st_mtime_ns for p in files}
  m2 = driver.run(c)
  assert m2["counts"] == dict(total=4, done=0, skipped=3, failed=1)
  assert {p: p.stat().st_mtime_ns for p in files} == mtimes
  assert sorted(root.rglob("*.npy")) == files
  assert json.loads((root / "export_manifest_clip_clap.json").read_text()
                    )["counts"] == m2["counts"]


def test_clip_clap_llp_fixed_ten_segments(videos_dir, hf_models, tmp_path):
  """LLP: 10 rows per clip; a 3-s clip needs 7 s of padding and fails."""
  c = _clip_clap_config(videos_dir, tmp_path, hf_models, num_segments=10,
                        classes="llp", features=("clip",))
  m = driver.run(c)
  assert m["counts"]["done"] == 1 and m["counts"]["failed"] == 3
  assert "max_pad_seconds" in m["failures"][0]["features"]["clip"]
  root = tmp_path / "UnAV"
  assert features.load_event_features(root, "clip", 25).shape == (25, 768)
  c.max_pad_seconds = 8.0
  m = driver.run(c)
  assert m["counts"] == dict(total=4, done=3, skipped=1, failed=0)
  assert m["videos"]["clip24"]["padded_seconds"] == pytest.approx(7.0)
  x = features.load_segment_features(root, "clip", ["clip24", SAMPLE_ID])
  # Segments 3..9 of the 3-s clip all show its last frame.
  np.testing.assert_allclose(x[0, 3:], np.broadcast_to(x[0, 3], (7, 768)),
                             atol=1e-6)


def test_clap_export_is_deterministic(videos_dir, hf_models, tmp_path):
  """No random "longer" chunk (HF's fusion training trick): two exports of
  the same videos are equal."""
  out = []
  for run in ("a", "b"):
    c = _clip_clap_config(videos_dir, tmp_path / run, hf_models,
                          features=("clap",))
    driver.run(c)
    out.append({vid: np.load(features.feature_path(tmp_path / run / "UnAV",
                                                   "clap", vid))
                for vid in (SAMPLE_ID, "clip24", "clip30")})
  for vid, x in out[0].items():
    np.testing.assert_array_equal(x, out[1][vid], err_msg=vid)


def test_clip_clap_missing_models_are_clear_errors(videos_dir, tmp_path,
                                                   hf_models):
  c = _clip_clap_config(videos_dir, tmp_path, hf_models)
  c.clap_model = None
  assert config_lib.unset_required(c) == ["clap_model"]
  with pytest.raises(ValueError, match="--config.clap_model") as e:
    driver.run(c)
  assert ("`hf download laion/clap-htsat-fused --local-dir DIR`"
          in str(e.value))
  c.clap_model = os.fspath(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="not a directory"):
    driver.run(c)


# ----------------------------------------------------------------------------
# HAN layout with tiny random JAX nets.


def test_han_export_tiny(videos_dir, tmp_path):
  c = export_han.get_config("tiny")
  c.workdir = os.fspath(tmp_path / "wd")
  c.videos_dir = os.fspath(videos_dir)
  c.output_root = os.fspath(tmp_path / "LLP")
  c.progress = False
  c.max_pad_seconds = 7.5
  m = driver.run(c)
  assert m["random_init_for_testing"] is True
  assert all(v["weights"] == "random_init_for_testing"
             for v in m["models"].values())
  assert m["counts"] == dict(total=4, done=3, skipped=0, failed=1)
  assert m["failures"] == [dict(id="noaudio", features=dict(
      vggish="NoAudioError: no audio stream"))]
  assert m["videos"]["clip30"]["padded_seconds"] == pytest.approx(7.0)
  root = tmp_path / "LLP"
  ids = [SAMPLE_ID, "clip24", "clip30"]
  for name, shape in (("vggish", (10, 128)), ("res152", (80, 2048)),
                      ("r2plus1d_18", (10, 512))):
    for vid in ids + ["noaudio"] * (name != "vggish"):
      x = np.load(features.feature_path(root, name, vid))
      assert x.shape == shape and x.dtype == np.float32
      assert np.isfinite(x).all()
    assert features.load_segment_features(root, name, ids).shape == (
        3, 10, shape[1])
  # Padded seconds repeat the last frame: identical 2D features.
  x = np.load(features.feature_path(root, "res152", "clip24"))
  np.testing.assert_allclose(x[40:], np.broadcast_to(x[-1], (40, 2048)),
                             rtol=1e-5)
  mtime = features.feature_path(root, "res152", SAMPLE_ID).stat().st_mtime_ns
  m2 = driver.run(c)
  assert m2["counts"] == dict(total=4, done=0, skipped=3, failed=1)
  assert features.feature_path(root, "res152",
                               SAMPLE_ID).stat().st_mtime_ns == mtime


def test_han_missing_weights_error(tmp_path):
  c = export_han.get_config("tiny")
  c.random_init_for_testing = False
  c.workdir, c.videos_dir, c.output_root = (os.fspath(tmp_path),) * 3
  with pytest.raises(ValueError) as e:
    driver.run(c)
  for flag in ("--config.vggish_weights", "--config.resnet_weights",
               "--config.r2plus1d_weights", "random_init_for_testing"):
    assert flag in str(e.value)
  c.features = ("res152",)
  c.resnet_weights = os.fspath(tmp_path / "missing.pth")
  with pytest.raises(FileNotFoundError, match="missing.pth"):
    driver.run(c)


def test_configs():
  for mod in (export_clip_clap, export_han):
    for arg in (None, "tiny"):
      c = mod.get_config(arg)
      assert c.stage == "export_features"
      assert {"workdir", "videos_dir", "output_root"} <= set(c.required)
  assert export_clip_clap.get_config("only=clap").required[-1] == "clap_model"
  assert export_clip_clap.get_config("dataset=unav").num_segments == 0
  assert export_han.get_config().nets.resnet_layers == (3, 8, 36, 3)


# ----------------------------------------------------------------------------
# torch -> flax converters, checked against torch modules with the public
# (torchvision / torch VGGish port) parameter names.


def _randomise_bn(module, seed):
  g = torch.Generator().manual_seed(seed)
  for m in module.modules():
    if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
      n = m.num_features
      m.weight.data = 0.5 + torch.rand(n, generator=g)
      m.bias.data = 0.1 * torch.randn(n, generator=g)
      m.running_mean.data = 0.1 * torch.randn(n, generator=g)
      m.running_var.data = 0.5 + torch.rand(n, generator=g)
  return module.eval()


class TorchBottleneck(nn.Module):

  def __init__(self, cin, width, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(width * 4)
    self.downsample = None
    if stride != 1 or cin != width * 4:
      self.downsample = nn.Sequential(
          nn.Conv2d(cin, width * 4, 1, stride, bias=False),
          nn.BatchNorm2d(width * 4))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return torch.relu(y + (x if self.downsample is None else
                           self.downsample(x)))


class TorchResNet(nn.Module):

  def __init__(self, layers, width):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = width
    for i, n in enumerate(layers):
      blocks = []
      for j in range(n):
        blocks.append(TorchBottleneck(cin, width * 2**i,
                                      2 if i and not j else 1))
        cin = width * 2**i * 4
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
    self.fc = nn.Linear(cin, 10)

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    for i in range(4):
      x = getattr(self, f"layer{i + 1}")(x)
    return x.mean((2, 3))


def _conv2plus1d(cin, cout, mid, stride):
  return nn.Sequential(
      nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1),
                bias=False),
      nn.BatchNorm3d(mid), nn.ReLU(),
      nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False))


class TorchBasic3d(nn.Module):

  def __init__(self, cin, cout, stride):
    super().__init__()
    mid = (cin * cout * 27) // (cin * 9 + 3 * cout)
    self.conv1 = nn.Sequential(_conv2plus1d(cin, cout, mid, stride),
                               nn.BatchNorm3d(cout), nn.ReLU())
    self.conv2 = nn.Sequential(_conv2plus1d(cout, cout, mid, 1),
                               nn.BatchNorm3d(cout))
    self.downsample = None
    if stride != 1 or cin != cout:
      self.downsample = nn.Sequential(
          nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))

  def forward(self, x):
    y = self.conv2(self.conv1(x))
    return torch.relu(y + (x if self.downsample is None else
                           self.downsample(x)))


class TorchR2Plus1D(nn.Module):

  def __init__(self, layers, width, stem_mid):
    super().__init__()
    self.stem = nn.Sequential(
        nn.Conv3d(3, stem_mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
        nn.BatchNorm3d(stem_mid), nn.ReLU(),
        nn.Conv3d(stem_mid, width, (3, 1, 1), 1, (1, 0, 0), bias=False),
        nn.BatchNorm3d(width), nn.ReLU())
    cin = width
    for i, n in enumerate(layers):
      blocks = []
      for j in range(n):
        blocks.append(TorchBasic3d(cin, width * 2**i, 2 if i and not j else 1))
        cin = width * 2**i
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
    self.fc = nn.Linear(cin, 10)

  def forward(self, x):
    x = self.stem(x)
    for i in range(4):
      x = getattr(self, f"layer{i + 1}")(x)
    return x.mean((2, 3, 4))


class TorchVGGish(nn.Module):
  """The torch VGGish port's layout (features / embeddings Sequentials)."""

  def __init__(self, widths, fc):
    super().__init__()
    layers, cin = [], 1
    for i, w in enumerate(widths):
      layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU()]
      if i in (0, 1, 3, 5):
        layers.append(nn.MaxPool2d(2, 2))
      cin = w
    self.features = nn.Sequential(*layers)
    self.embeddings = nn.Sequential(
        nn.Linear(cin * 24, fc), nn.ReLU(), nn.Linear(fc, fc), nn.ReLU(),
        nn.Linear(fc, 128), nn.ReLU())

  def forward(self, x):
    x = self.features(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1)
    return self.embeddings(x)


def _flax_out(ctor, load, sd, x):
  model = weights.abstract(ctor)
  load(model, sd)
  graphdef, state = nnx.split(model)
  return np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x))


def _state_dict(module):
  return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def test_resnet_converter_matches_torch(tmp_path):
  torch.manual_seed(0)
  tm = _randomise_bn(TorchResNet((1, 2, 1, 1), 4), 1)
  x = torch.randn(2, 3, 32, 32)
  want = tm(x).detach().numpy()
  # .pth through torch, exactly as a downloaded torchvision file.
  torch.save(tm.state_dict(), tmp_path / "r.pth")
  sd = weights.read_state_dict(os.fspath(tmp_path / "r.pth"))
  assert "layer2.1.conv3.weight" in sd and "fc.weight" in sd
  got = _flax_out(lambda rngs: resnet.ResNet((1, 2, 1, 1), 4, rngs=rngs),
                  resnet.load_torch_state_dict, sd,
                  np.transpose(x.numpy(), (0, 2, 3, 1)))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # Wrong depth: a clear error, not a silent partial load.
  with pytest.raises(ValueError, match="not used"):
    resnet.load_torch_state_dict(
        weights.abstract(lambda rngs: resnet.ResNet((1, 1, 1, 1), 4,
                                                    rngs=rngs)), sd)


def test_r2plus1d_converter_matches_torch(tmp_path):
  torch.manual_seed(0)
  tm = _randomise_bn(TorchR2Plus1D((1, 1, 1, 1), 4, 3), 2)
  assert r2plus1d.midplanes(64, 64) == 144
  assert r2plus1d.midplanes(64, 128) == 230
  x = torch.randn(2, 3, 4, 16, 16)  # N, C, T, H, W
  want = tm(x).detach().numpy()
  from safetensors import torch as st_torch

  st_torch.save_file(tm.state_dict(), tmp_path / "r21d.safetensors")
  sd = weights.read_state_dict(os.fspath(tmp_path / "r21d.safetensors"))
  got = _flax_out(
      lambda rngs: r2plus1d.R2Plus1D((1, 1, 1, 1), 4, 3, rngs=rngs),
      r2plus1d.load_torch_state_dict, sd,
      np.transpose(x.numpy(), (0, 2, 3, 4, 1)))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_vggish_converter_and_pca(tmp_path):
  torch.manual_seed(0)
  widths = (4, 4, 8, 8, 8, 8)
  tm = TorchVGGish(widths, 16).eval()
  x = torch.randn(3, 1, 96, 64)
  want = tm(x).detach().numpy()
  sd = _state_dict(tm)
  rng = np.random.default_rng(0)
  pca = dict(pca_eigen_vectors=rng.standard_normal((128, 128)),
             pca_means=rng.standard_normal((128, 1)))
  np.savez(tmp_path / "w.npz", **sd, **pca)
  sd = weights.read_state_dict(os.fspath(tmp_path / "w.npz"))
  got = _flax_out(lambda rngs: vggish.VGGish(widths, 16, rngs=rngs),
                  vggish.load_torch_state_dict, sd, x.numpy()[:, 0])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  mat, mean = vggish.pca_params(sd)
  ref = mat @ (want.T - mean[:, None])  # the AudioSet postprocessor's form
  np.testing.assert_allclose(
      vggish.postprocess(want, mat, mean, False), ref.T, rtol=1e-4, atol=1e-3)
  q = np.asarray(vggish.postprocess(want, mat, mean, True))
  ref_q = np.round((np.clip(ref.T, -2, 2) + 2) * 255 / 4)
  assert np.abs(q - ref_q).max() <= 1 and q.min() >= 0 and q.max() <= 255

