"""R(2+1)D video ResNet (R(2+1)D-18 = [2, 2, 2, 2]) in Flax NNX, laid out like
torchvision's `r2plus1d_18`, so `load_torch_state_dict` maps its weights.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from feature_export.nets import weights as weights_lib

# pylint: disable=invalid-name


def midplanes(cin: int, cout: int) -> int:
  """Channels between the spatial and temporal convs (same parameter count)."""
  return (cin * cout * 3 * 3 * 3) // (cin * 3 * 3 + 3 * cout)


def _conv3d(cin, cout, kernel, stride, padding, rngs):
  return nnx.Conv(
      cin, cout, kernel, strides=stride,
      padding=tuple((p, p) for p in padding), use_bias=False, rngs=rngs,
  )


class Conv2Plus1D(nnx.Module):
  """A factorised 3x3x3 conv: (1,3,3) conv to M channels, BN, ReLU, (3,1,1).

  M = (27 Cin Cout) // (9 Cin + 3 Cout) keeps the 3D conv's parameter count;
  the stride applies in space (first conv) and in time (second conv).
  """

  def __init__(self, cin, cout, mid, stride, *, rngs):
    self.spatial = _conv3d(cin, mid, (1, 3, 3), (1, stride, stride),
                           (0, 1, 1), rngs)
    self.bn = weights_lib.batch_norm(mid, rngs)
    self.temporal = _conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0),
                            rngs)

  def __call__(self, x):
    return self.temporal(jax.nn.relu(self.bn(self.spatial(x))))

  def load(self, ld, prefix):  # torch: Sequential(conv, bn, relu, conv)
    ld.conv(self.spatial, prefix + ".0")
    ld.bn(self.bn, prefix + ".1")
    ld.conv(self.temporal, prefix + ".3")


class BasicBlock(nnx.Module):
  """Two (2+1)D convs with BN; 1x1x1 strided projection when shapes change."""

  def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
    mid = midplanes(cin, cout)  # torchvision uses the block's cin for both
    self.conv1 = Conv2Plus1D(cin, cout, mid, stride, rngs=rngs)
    self.bn1 = weights_lib.batch_norm(cout, rngs)
    self.conv2 = Conv2Plus1D(cout, cout, mid, 1, rngs=rngs)
    self.bn2 = weights_lib.batch_norm(cout, rngs)
    if stride != 1 or cin != cout:
      self.down_conv = _conv3d(cin, cout, (1, 1, 1), (stride,) * 3, (0, 0, 0),
                               rngs)
      self.down_bn = weights_lib.batch_norm(cout, rngs)
    else:
      self.down_conv = self.down_bn = None

  def __call__(self, x):
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.down_conv is not None:
      x = self.down_bn(self.down_conv(x))
    return jax.nn.relu(x + y)

  def load(self, ld, prefix):
    self.conv1.load(ld, prefix + ".conv1.0")
    ld.bn(self.bn1, prefix + ".conv1.1")
    self.conv2.load(ld, prefix + ".conv2.0")
    ld.bn(self.bn2, prefix + ".conv2.1")
    if self.down_conv is not None:
      ld.conv(self.down_conv, prefix + ".downsample.0")
      ld.bn(self.down_bn, prefix + ".downsample.1")


class R2Plus1D(nnx.Module):
  """Clips [B, T, H, W, 3] (normalised) -> pooled features [B, 8w]."""

  def __init__(
      self,
      layers: Sequence[int] = (2, 2, 2, 2),
      width: int = 64,
      stem_mid: int = 45,
      *,
      rngs: nnx.Rngs,
  ):
    self.stem_spatial = _conv3d(3, stem_mid, (1, 7, 7), (1, 2, 2), (0, 3, 3),
                                rngs)
    self.stem_bn1 = weights_lib.batch_norm(stem_mid, rngs)
    self.stem_temporal = _conv3d(stem_mid, width, (3, 1, 1), (1, 1, 1),
                                 (1, 0, 0), rngs)
    self.stem_bn2 = weights_lib.batch_norm(width, rngs)
    stages = []
    cin = width
    for i, n in enumerate(layers):
      cout = width * 2**i
      blocks = []
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(BasicBlock(cin, cout, stride, rngs=rngs))
        cin = cout
      stages.append(weights_lib.ModuleList(blocks))
    self.stages = weights_lib.ModuleList(stages)
    self.out_dim = cin

  def __call__(self, x_BxTxHxWx3: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.stem_bn1(self.stem_spatial(x_BxTxHxWx3)))
    x = jax.nn.relu(self.stem_bn2(self.stem_temporal(x)))
    for stage in self.stages:
      for block in stage:
        x = block(x)
    return jnp.mean(x, axis=(1, 2, 3))


def load_torch_state_dict(model: R2Plus1D, state_dict) -> None:
  """Copies a torchvision r2plus1d_18 state_dict (fc.* ignored) into `model`."""
  ld = weights_lib.Loader(state_dict, ignore=("fc.",))
  ld.conv(model.stem_spatial, "stem.0")
  ld.bn(model.stem_bn1, "stem.1")
  ld.conv(model.stem_temporal, "stem.3")
  ld.bn(model.stem_bn2, "stem.4")
  for i, stage in enumerate(model.stages):
    for j, block in enumerate(stage):
      block.load(ld, f"layer{i + 1}.{j}")
  ld.finish()
  weights_lib.check_materialized(model, "R2Plus1D")
