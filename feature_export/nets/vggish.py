"""VGGish (AudioSet's VGG-like audio embedder) in Flax NNX: its log-mel front
end, the net (keys of the common PyTorch port) and the PCA post-processing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from feature_export.nets import weights as weights_lib

# pylint: disable=invalid-name

# Index of each conv in the torch port's `features` Sequential.
_CONV_IDS = (0, 3, 6, 8, 11, 13)
_POOL_AFTER = (0, 1, 3, 5)  # conv positions followed by a 2x2 max pool
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0

# Log-mel front end of the reference VGGish input pipeline.
SAMPLE_RATE = 16000
WINDOW, HOP, FFT = 400, 160, 512  # 25 ms periodic Hann, 10 ms hop
NUM_BANDS, NUM_FRAMES = 64, 96    # 0.96-s examples
MEL_LO, MEL_HI, LOG_OFFSET = 125.0, 7500.0, 0.01


def _hz_to_mel(hz):
  return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


def mel_matrix() -> np.ndarray:
  """[FFT//2+1, 64] triangular HTK-mel weights, 125-7500 Hz, no DC."""
  bins_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT // 2 + 1))
  edges = np.linspace(_hz_to_mel(MEL_LO), _hz_to_mel(MEL_HI), NUM_BANDS + 2)
  lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
  up = (bins_mel[:, None] - lo[None, :]) / (mid - lo)[None, :]
  down = (hi[None, :] - bins_mel[:, None]) / (hi - mid)[None, :]
  w = np.maximum(0.0, np.minimum(up, down))
  w[0, :] = 0.0
  return w


_MEL = mel_matrix()
_HANN = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)


def log_mel(wave_16k: np.ndarray) -> np.ndarray:
  """[frames, 64] log(mel magnitude + 0.01) of a mono 16-kHz waveform."""
  x = np.asarray(wave_16k, np.float64)
  n = 1 + (x.size - WINDOW) // HOP
  if n < 1:
    raise ValueError(f"audio of {x.size} samples is shorter than one window")
  frames = np.lib.stride_tricks.sliding_window_view(x, WINDOW)[::HOP][:n]
  spec = np.abs(np.fft.rfft(frames * _HANN, FFT))
  return np.log(spec @ _MEL + LOG_OFFSET).astype(np.float32)


def example_starts(num_examples: int, hop_seconds: float,
                   num_samples: int) -> np.ndarray:
  """Log-mel frame index where example t starts (t * hop_seconds), checked
  against the frames that `num_samples` samples of audio give."""
  starts = np.round(np.arange(num_examples) * hop_seconds * SAMPLE_RATE / HOP)
  starts = starts.astype(np.int64)
  frames = 1 + (num_samples - WINDOW) // HOP
  if starts[-1] + NUM_FRAMES > frames:
    raise ValueError(
        f"{num_examples} examples need {starts[-1] + NUM_FRAMES} log-mel"
        f" frames; the audio gives {frames} (pad it to the full length)"
    )
  return starts


def log_mel_examples(
    wave_16k: np.ndarray, num_examples: int, hop_seconds: float = 1.0
) -> np.ndarray:
  """[num_examples, 96, 64]: example t starts at t * hop_seconds."""
  starts = example_starts(num_examples, hop_seconds, np.size(wave_16k))
  mel = log_mel(wave_16k)
  return np.stack([mel[s:s + NUM_FRAMES] for s in starts])


class VGGish(nnx.Module):
  """log-mel [B, 96, 64] -> embeddings [B, 128] (raw, before PCA).

  Conv blocks 64, 128, 256x2, 512x2 (3x3, ReLU, 2x2 max pools), then FC
  4096 -> 4096 -> 128, each with ReLU as in the PyTorch port, whose keys
  `features.{0,3,6,8,11,13}` and `embeddings.{0,2,4}` map one-to-one.
  """

  def __init__(
      self,
      widths=(64, 128, 256, 256, 512, 512),
      fc_dim: int = 4096,
      embed_dim: int = 128,
      num_frames: int = 96,
      num_bands: int = 64,
      *,
      rngs: nnx.Rngs,
  ):
    if len(widths) != len(_CONV_IDS):
      raise ValueError(f"VGGish has {len(_CONV_IDS)} convs; got {widths}")
    convs, cin = [], 1
    for w in widths:
      convs.append(nnx.Conv(cin, w, (3, 3), padding=((1, 1), (1, 1)),
                            rngs=rngs))
      cin = w
    self.convs = weights_lib.ModuleList(convs)
    flat = (num_frames // 16) * (num_bands // 16) * cin
    self.fc1 = nnx.Linear(flat, fc_dim, rngs=rngs)
    self.fc2 = nnx.Linear(fc_dim, fc_dim, rngs=rngs)
    self.fc3 = nnx.Linear(fc_dim, embed_dim, rngs=rngs)
    self.embed_dim = embed_dim

  def __call__(self, logmel_BxFxM: jax.Array) -> jax.Array:
    x = logmel_BxFxM[..., None]
    for i, conv in enumerate(self.convs):
      x = jax.nn.relu(conv(x))
      if i in _POOL_AFTER:
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
    # NHWC flattening = the torch port's transpose to (N, H, W, C) + view.
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(self.fc1(x))
    x = jax.nn.relu(self.fc2(x))
    return jax.nn.relu(self.fc3(x))


def postprocess(
    emb_BxD: jax.Array, pca_matrix_DxD, pca_means_D, quantize: bool
) -> jax.Array:
  """AudioSet PCA(+whitening); with `quantize`, clip to [-2, 2] and 8 bits."""
  x = (emb_BxD - pca_means_D[None, :]) @ pca_matrix_DxD.T
  if not quantize:
    return x
  x = jnp.clip(x, QUANTIZE_MIN, QUANTIZE_MAX)
  return jnp.round((x - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))


def pca_params(state_dict) -> tuple[np.ndarray, np.ndarray] | None:
  """(matrix [D, D], means [D]) from a state dict, or None if absent."""
  for mat, mean in (
      ("pproc.pca_matrix", "pproc.pca_means"),
      ("pproc._pca_matrix", "pproc._pca_means"),
      ("pca_eigen_vectors", "pca_means"),
  ):
    if mat in state_dict and mean in state_dict:
      m = np.asarray(state_dict[mat], np.float32)
      mu = np.asarray(state_dict[mean], np.float32).reshape(-1)
      if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != mu.shape[0]:
        raise ValueError(
            f"VGGish PCA params {mat!r} {m.shape} / {mean!r} {mu.shape}: "
            "expected a square [D, D] matrix and D means"
        )
      return m, mu
  return None


def load_torch_state_dict(model: VGGish, state_dict) -> None:
  """Copies the PyTorch VGGish port's weights (PCA tensors ignored)."""
  ld = weights_lib.Loader(
      state_dict, ignore=("pproc.", "pca_eigen_vectors", "pca_means")
  )
  for conv, idx in zip(model.convs, _CONV_IDS):
    ld.conv(conv, f"features.{idx}")
  for fc, idx in zip((model.fc1, model.fc2, model.fc3), (0, 2, 4)):
    ld.linear(fc, f"embeddings.{idx}")
  ld.finish()
  weights_lib.check_materialized(model, "VGGish")
