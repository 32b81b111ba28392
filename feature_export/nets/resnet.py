"""Bottleneck ResNet (ResNet-152 = [3, 8, 36, 3]) in Flax NNX, laid out like
torchvision's (stride in the 3x3 conv), so `load_torch_state_dict` maps it.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from feature_export.nets import weights as weights_lib

# pylint: disable=invalid-name


def _conv(cin, cout, k, stride, rngs):
  p = k // 2
  return nnx.Conv(
      cin, cout, (k, k), strides=(stride, stride), padding=((p, p), (p, p)),
      use_bias=False, rngs=rngs,
  )


class Bottleneck(nnx.Module):
  """1x1 -> 3x3 (stride) -> 1x1 (x4), residual with a projected shortcut."""

  def __init__(self, cin: int, width: int, stride: int, *, rngs: nnx.Rngs):
    cout = width * 4
    self.conv1 = _conv(cin, width, 1, 1, rngs)
    self.bn1 = weights_lib.batch_norm(width, rngs)
    self.conv2 = _conv(width, width, 3, stride, rngs)
    self.bn2 = weights_lib.batch_norm(width, rngs)
    self.conv3 = _conv(width, cout, 1, 1, rngs)
    self.bn3 = weights_lib.batch_norm(cout, rngs)
    if stride != 1 or cin != cout:
      self.down_conv = _conv(cin, cout, 1, stride, rngs)
      self.down_bn = weights_lib.batch_norm(cout, rngs)
    else:
      self.down_conv = self.down_bn = None

  def __call__(self, x):
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    if self.down_conv is not None:
      x = self.down_bn(self.down_conv(x))
    return jax.nn.relu(x + y)

  def load(self, ld: weights_lib.Loader, prefix: str) -> None:
    for i in (1, 2, 3):
      ld.conv(getattr(self, f"conv{i}"), f"{prefix}.conv{i}")
      ld.bn(getattr(self, f"bn{i}"), f"{prefix}.bn{i}")
    if self.down_conv is not None:
      ld.conv(self.down_conv, f"{prefix}.downsample.0")
      ld.bn(self.down_bn, f"{prefix}.downsample.1")


class ResNet(nnx.Module):
  """Images [B, H, W, 3] (normalised) -> globally pooled features [B, 32w]."""

  def __init__(
      self,
      layers: Sequence[int] = (3, 8, 36, 3),
      width: int = 64,
      *,
      rngs: nnx.Rngs,
  ):
    self.conv1 = nnx.Conv(
        3, width, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
        use_bias=False, rngs=rngs,
    )
    self.bn1 = weights_lib.batch_norm(width, rngs)
    stages = []
    cin = width
    for i, n in enumerate(layers):
      w = width * 2**i
      blocks = []
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(Bottleneck(cin, w, stride, rngs=rngs))
        cin = w * 4
      stages.append(weights_lib.ModuleList(blocks))
    self.stages = weights_lib.ModuleList(stages)
    self.out_dim = cin

  def __call__(self, x_BxHxWx3: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.bn1(self.conv1(x_BxHxWx3)))
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage in self.stages:
      for block in stage:
        x = block(x)
    return jnp.mean(x, axis=(1, 2))


def load_torch_state_dict(model: ResNet, state_dict) -> None:
  """Copies a torchvision ResNet state_dict (fc.* ignored) into `model`."""
  ld = weights_lib.Loader(state_dict, ignore=("fc.",))
  ld.conv(model.conv1, "conv1")
  ld.bn(model.bn1, "bn1")
  for i, stage in enumerate(model.stages):
    for j, block in enumerate(stage):
      block.load(ld, f"layer{i + 1}.{j}")
  ld.finish()
  weights_lib.check_materialized(model, "ResNet")
