"""Shared blocks: PyTorch-initialised Dense/attention, post-LN transformer
layers, MLPs and a masked BatchNorm with PyTorch running statistics."""

# pylint: disable=invalid-name

from __future__ import annotations

import math
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp

from ear_jax import cpu_prng

# Dropout draws millions of numbers per step: large draws lowered unrolled on
# CPU (same bits, ~17x faster; ear_jax/cpu_prng.py).
cpu_prng.install()

# Masked attention scores get this value instead of -inf, as in UWAV: a query
# row with no valid key then gets uniform weights instead of NaN.
MASK_VALUE = -1e10
LN_EPS = 1e-5


def get_dtype(dtype: Any) -> jnp.dtype:
  """'float32' | 'bfloat16' | a dtype -> jnp.dtype (the matmul dtype)."""
  if dtype is None:
    return jnp.dtype(jnp.float32)
  try:
    out = jnp.dtype(dtype)
  except TypeError as e:
    raise ValueError(
        f"dtype={dtype!r} is not a dtype; use 'float32' or 'bfloat16'."
    ) from e
  if out not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    raise ValueError(f"dtype={dtype!r}; expected 'float32' or 'bfloat16'.")
  return out


def uniform_init(bound: float) -> nnx.Initializer:
  """U(-bound, bound), the PyTorch Linear/Conv default with 1/sqrt(fan_in)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_linear_init(fan_in: int) -> nnx.Initializer:
  """PyTorch nn.Linear default for weight and bias: U(+-1/sqrt(fan_in))."""
  return uniform_init(1.0 / math.sqrt(fan_in))


class Dense(nnx.Linear):
  """nnx.Linear with PyTorch's default init (kernel and bias U(+-1/sqrt(in))).

  `dtype` is the compute dtype (inputs and kernel are cast to it); the
  parameters stay float32.
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      *,
      use_bias: bool = True,
      dtype: Any = None,
      kernel_init: nnx.Initializer | None = None,
      bias_init: nnx.Initializer | None = None,
      rngs: nnx.Rngs,
  ):
    default = torch_linear_init(in_features)
    super().__init__(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=None if dtype is None else get_dtype(dtype),
        kernel_init=kernel_init or default,
        bias_init=bias_init or default,
        rngs=rngs,
    )


def layer_norm(dim: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
  """PyTorch LayerNorm: eps 1e-5, two-pass variance, computed in float32."""
  return nnx.LayerNorm(
      dim,
      epsilon=LN_EPS,
      dtype=jnp.float32,
      use_fast_variance=False,
      rngs=rngs,
  )


class Dropout(nnx.Dropout):
  """nnx.Dropout whose keep-mask XLA:CPU computes once per call (same bits).

  On CPU, JAX's threefry hash (unrolled by ear_jax/cpu_prng.py) is plain
  element-wise integer work, so XLA fuses it into every consumer of the
  mask: the forward select and, in the backward pass, both the input-
  gradient product and its transposed copy recompute the hash. Drawing the
  mask inside a `lax.cond` whose predicate is always true (XLA cannot prove
  it, so it keeps the branch) makes the boolean mask a materialised buffer,
  computed once: ~8% of the full-size stage-3 CPU step. Only draws of at
  least cpu_prng.MIN_UNROLLED numbers take this path (smaller ones keep
  JAX's rolled hash loop, which is never fused). Same key use and
  the same `bernoulli` draw as nnx.Dropout, so masks, losses and trained
  weights are bit-identical (tests/layers_test.py).

  The CPU path is chosen when the program is lowered, for the platform it
  is lowered for (`lax.platform_dependent`), not by the host's default
  backend: a program compiled ahead of time on a CPU host for a GPU or TPU
  is nnx.Dropout's plain mask, without a `conditional` (tests/aot_test.py).
  """

  def __call__(self, inputs, *, deterministic: bool | None = None,
               rngs=None):
    if deterministic is None:
      deterministic = self.deterministic
    shape = list(inputs.shape)
    for dim in self.broadcast_dims:
      shape[dim] = 1
    # Small draws keep JAX's rolled threefry loop on CPU, which XLA never
    # fuses into consumers: for them the cond would only add a branch.
    if (self.rate == 0.0 or self.rate == 1.0 or deterministic is None
        or deterministic or math.prod(shape) < cpu_prng.MIN_UNROLLED):
      return super().__call__(inputs, deterministic=deterministic, rngs=rngs)
    rngs = self.rngs if rngs is None else rngs
    if isinstance(rngs, nnx.Rngs):
      key = rngs[self.rng_collection]()
    elif isinstance(rngs, nnx.RngStream):
      key = rngs()
    elif isinstance(rngs, jax.Array):
      key = rngs
    else:
      raise TypeError(
          "Dropout: deterministic=False needs rngs (nnx.Rngs, an RngStream"
          f" or a key); got {type(rngs).__name__}.")
    keep_prob = 1.0 - self.rate

    def plain(key, inputs):  # nnx.Dropout itself: the mask fused
      return super(Dropout, self).__call__(inputs, deterministic=False,
                                           rngs=key)

    def materialised(key, inputs):  # CPU: the mask computed once
      bits = (jax.random.key_data(key)
              if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
      always = (bits.reshape(-1)[0].astype(jnp.uint32) | jnp.uint32(1)) != 0
      mask = jax.lax.cond(
          always,
          lambda: jax.random.bernoulli(key, p=keep_prob, shape=shape),
          lambda: jnp.zeros(shape, bool),
      )
      mask = jnp.broadcast_to(mask, inputs.shape)
      return jax.lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))

    return jax.lax.platform_dependent(key, inputs, cpu=materialised,
                                      default=plain)


def check_rngs(deterministic: bool, rngs: Any, rate: float, where: str):
  if not deterministic and rate > 0 and rngs is None:
    raise ValueError(
        f"{where}: deterministic=False with dropout {rate} needs"
        " rngs=nnx.Rngs(dropout=key); pass it, or deterministic=True."
    )


class MLP(nnx.Module):
  """Dense(in, hidden), ReLU, Dense(hidden, out); no dropout, no norm."""

  def __init__(
      self, in_dim: int, hidden_dim: int, out_dim: int, *, dtype=None, rngs
  ):
    self.fc1 = Dense(in_dim, hidden_dim, dtype=dtype, rngs=rngs)
    self.fc2 = Dense(hidden_dim, out_dim, dtype=dtype, rngs=rngs)

  def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.relu(self.fc1(x_BxTxD))).astype(jnp.float32)


class MultiHeadAttention(nnx.Module):
  """PyTorch-style nn.MultiheadAttention (batch-first).

  Biased q/k/v/out projections. Init as torch: the packed (3d x d)
  in-projection is Xavier-uniform, i.e. U(+-sqrt(6/(4d))) for each of q, k, v,
  with zero bias; the out-projection weight is U(+-1/sqrt(d)), bias 0.
  Dropout acts on the attention probabilities. `mask` (True = attend) has
  shape [B, 1|H, Tq, Tk]; masked scores are set to -1e10, so fully masked
  query rows get uniform attention and never NaN.
  """

  def __init__(
      self,
      dim: int,
      num_heads: int,
      *,
      dropout: float = 0.0,
      dtype: Any = None,
      rngs: nnx.Rngs,
  ):
    if dim % num_heads:
      raise ValueError(
          f"dim={dim} is not divisible by num_heads={num_heads}; pick a head"
          " count that divides the model width."
      )
    self.dim, self.num_heads = dim, num_heads
    self.dtype = get_dtype(dtype)
    xavier = uniform_init(math.sqrt(6.0 / (4 * dim)))
    zeros = nnx.initializers.zeros_init()
    kw = dict(kernel_init=xavier, bias_init=zeros, dtype=self.dtype, rngs=rngs)
    self.q_proj = Dense(dim, dim, **kw)
    self.k_proj = Dense(dim, dim, **kw)
    self.v_proj = Dense(dim, dim, **kw)
    self.out_proj = Dense(
        dim, dim, bias_init=zeros, dtype=self.dtype, rngs=rngs
    )
    self.attn_dropout = Dropout(dropout)

  def attention_weights(
      self,
      q_BxQxD: jax.Array,
      kv_BxKxD: jax.Array,
      mask: jax.Array | None = None,
  ) -> tuple[jax.Array, jax.Array]:
    """Softmax weights [B,H,Q,K] (float32, before dropout) and values."""
    B, Q, _ = q_BxQxD.shape
    K = kv_BxKxD.shape[1]
    H, Dh = self.num_heads, self.dim // self.num_heads
    q = self.q_proj(q_BxQxD).reshape(B, Q, H, Dh)
    k = self.k_proj(kv_BxKxD).reshape(B, K, H, Dh)
    v = self.v_proj(kv_BxKxD).reshape(B, K, H, Dh)
    q = q * jnp.asarray(1.0 / math.sqrt(Dh), q.dtype)
    scores_BxHxQxK = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
    if mask is not None:
      if mask.ndim != 4:
        raise ValueError(
            f"attention mask has shape {mask.shape}; expected [B, 1|H, Tq, Tk]."
        )
      scores_BxHxQxK = jnp.where(mask, scores_BxHxQxK, MASK_VALUE)
    return jax.nn.softmax(scores_BxHxQxK, axis=-1), v

  def __call__(
      self,
      q_BxQxD: jax.Array,
      kv_BxKxD: jax.Array,
      mask: jax.Array | None = None,
      *,
      deterministic: bool,
      rngs: nnx.Rngs | None = None,
  ) -> jax.Array:
    B, Q, _ = q_BxQxD.shape
    probs_BxHxQxK, v = self.attention_weights(q_BxQxD, kv_BxKxD, mask)
    probs_BxHxQxK = self.attn_dropout(
        probs_BxHxQxK, deterministic=deterministic, rngs=rngs
    )
    out = jnp.einsum("bhqk,bkhd->bqhd", probs_BxHxQxK.astype(self.dtype), v)
    return self.out_proj(out.reshape(B, Q, self.dim)).astype(jnp.float32)


class FeedForward(nnx.Module):
  """Linear(d, d_ff), ReLU, Dropout, Linear(d_ff, d)."""

  def __init__(self, dim: int, ffn_dim: int, *, dropout=0.0, dtype=None, rngs):
    self.linear1 = Dense(dim, ffn_dim, dtype=dtype, rngs=rngs)
    self.linear2 = Dense(ffn_dim, dim, dtype=dtype, rngs=rngs)
    self.dropout = Dropout(dropout)

  def __call__(self, x, *, deterministic: bool, rngs=None) -> jax.Array:
    h = jax.nn.relu(self.linear1(x))
    h = self.dropout(h, deterministic=deterministic, rngs=rngs)
    return self.linear2(h).astype(jnp.float32)


class CrossAttentionUnit(nnx.Module):
  """h = LN(q + Drop(MCA(q, kv))); out = LN(h + Drop(FFN(h))), post-LN."""

  def __init__(self, dim, num_heads, ffn_dim, *, dropout=0.0, dtype=None, rngs):
    self.rate = dropout
    self.attn = MultiHeadAttention(
        dim, num_heads, dropout=dropout, dtype=dtype, rngs=rngs
    )
    self.ffn = FeedForward(
        dim, ffn_dim, dropout=dropout, dtype=dtype, rngs=rngs
    )
    self.norm1 = layer_norm(dim, rngs=rngs)
    self.norm2 = layer_norm(dim, rngs=rngs)
    self.dropout = Dropout(dropout)

  def __call__(
      self, q_BxQxD, kv_BxKxD, mask=None, *, deterministic: bool, rngs=None
  ) -> jax.Array:
    check_rngs(deterministic, rngs, self.rate, type(self).__name__)
    kw = dict(deterministic=deterministic, rngs=rngs)
    h = self.attn(q_BxQxD, kv_BxKxD, mask, **kw)
    h = self.norm1(q_BxQxD + self.dropout(h, **kw))
    return self.norm2(h + self.dropout(self.ffn(h, **kw), **kw))


class EncoderLayer(CrossAttentionUnit):
  """PyTorch TransformerEncoderLayer, post-LN, ReLU: the unit with kv = q.

  x = LN(x + Drop(MHA(x))); x = LN(x + Drop(FFN(x))).
  """

  def __call__(  # pytype: disable=signature-mismatch
      self, x_BxTxD, mask=None, *, deterministic: bool, rngs=None
  ) -> jax.Array:
    return super().__call__(x_BxTxD, x_BxTxD, mask,
                            deterministic=deterministic, rngs=rngs)


class DecoderLayer(nnx.Module):
  """Post-LN transformer decoder layer without a causal mask.

  h = LN(q + Drop(MSA(q))); h = LN(h + Drop(MCA(h, kv)));
  out = LN(h + Drop(FFN(h))).
  """

  def __init__(self, dim, num_heads, ffn_dim, *, dropout=0.0, dtype=None, rngs):
    self.rate = dropout
    kw = dict(dropout=dropout, dtype=dtype, rngs=rngs)
    self.self_attn = MultiHeadAttention(dim, num_heads, **kw)
    self.cross_attn = MultiHeadAttention(dim, num_heads, **kw)
    self.ffn = FeedForward(dim, ffn_dim, **kw)
    self.norm1 = layer_norm(dim, rngs=rngs)
    self.norm2 = layer_norm(dim, rngs=rngs)
    self.norm3 = layer_norm(dim, rngs=rngs)
    self.dropout = Dropout(dropout)

  def __call__(
      self, q_BxQxD, kv_BxKxD, *, deterministic: bool, rngs=None
  ) -> jax.Array:
    check_rngs(deterministic, rngs, self.rate, "DecoderLayer")
    kw = dict(deterministic=deterministic, rngs=rngs)
    h = self.self_attn(q_BxQxD, q_BxQxD, **kw)
    h = self.norm1(q_BxQxD + self.dropout(h, **kw))
    c = self.cross_attn(h, kv_BxKxD, **kw)
    h = self.norm2(h + self.dropout(c, **kw))
    return self.norm3(h + self.dropout(self.ffn(h, **kw), **kw))


class MaskedBatchNorm(nnx.Module):
  """PyTorch BatchNorm over the last (channel) axis, masked to real entries.

  Statistics run over every non-channel axis, restricted to entries where
  `mask` is true (dummy videos are ignored), so a padded batch gives exactly
  the result of the smaller batch. As in torch, normalisation uses the biased
  batch variance and the running variance is updated with the unbiased one:
  running = momentum * running + (1 - momentum) * batch (flax convention;
  momentum 0.9 = torch 0.1). A batch with no real entry leaves the running
  statistics unchanged.
  """

  def __init__(
      self,
      num_features: int,
      *,
      momentum: float = 0.9,
      epsilon: float = 1e-5,
      rngs: nnx.Rngs | None = None,
  ):
    del rngs  # deterministic init
    self.momentum, self.epsilon = momentum, epsilon
    self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
    self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))

  def __call__(
      self,
      x_NxF: jax.Array,
      mask: jax.Array | None = None,
      *,
      use_running_average: bool,
  ) -> jax.Array:
    """x: [..., F]; mask: broadcastable to x.shape[:-1] (same rank)."""
    x = x_NxF.astype(jnp.float32)
    if use_running_average:
      mean_F, var_F = self.mean[...], self.var[...]
    else:
      if mask is None:
        m = jnp.ones(x.shape[:-1] + (1,), jnp.float32)
      else:
        m = jnp.broadcast_to(mask, x.shape[:-1]).astype(jnp.float32)[..., None]
      axes = tuple(range(x.ndim - 1))
      n = jnp.sum(m)
      n_safe = jnp.maximum(n, 1.0)
      mean_F = jnp.sum(x * m, axis=axes) / n_safe
      centred = x - mean_F.reshape((1,) * len(axes) + (-1,))
      var_F = jnp.sum(jnp.square(centred) * m, axis=axes) / n_safe
      # Running statistics carry no gradient (torch updates them in no_grad).
      batch_mean_F = jax.lax.stop_gradient(mean_F)
      unbiased_F = jax.lax.stop_gradient(var_F) * (
          n / jnp.maximum(n - 1.0, 1.0)
      )
      mom = self.momentum
      has_data = n > 0
      self.mean[...] = jnp.where(
          has_data,
          mom * self.mean[...] + (1 - mom) * batch_mean_F,
          self.mean[...],
      )
      self.var[...] = jnp.where(
          has_data, mom * self.var[...] + (1 - mom) * unbiased_F, self.var[...]
      )
    shape = (1,) * (x.ndim - 1) + (-1,)
    mean_F, var_F = mean_F.reshape(shape), var_F.reshape(shape)
    y = (x - mean_F) * jax.lax.rsqrt(var_F + self.epsilon)
    return y * self.scale[...].reshape(shape) + self.bias[...].reshape(shape)


def stack_layers(make_layer, num_layers: int, *, identical: bool, rngs):
  """nnx.List of `make_layer(rngs)`; identical=True copies the first init.

  identical=True reproduces PyTorch's nn.TransformerEncoder quirk: it
  deep-copies one initialised layer, so all layers start with equal weights.
  """
  if not identical:
    return nnx.List([make_layer(rngs) for _ in range(num_layers)])
  key = rngs.params()
  return nnx.List([make_layer(nnx.Rngs(params=key)) for _ in range(num_layers)])
