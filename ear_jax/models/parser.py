"""EAR parser: uni-modal temporal encoders, asymmetric multi-modal dynamic
fusion (AMDF), cross-modal aggregation, event-relation modelling (ERM) over
class nodes, and HAN's MMIL head (docs/METHOD.md, "EAR parser")."""

# pylint: disable=invalid-name

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from ear_jax.models import han as han_lib
from ear_jax.models import layers as layers_lib

AMDF_MODES = ("asymmetric", "none", "msa_mca", "han")
AGGREGATIONS = ("decoder", "sum")
ERM_MODES = (
    "alternate",
    "none",
    "a_v_then_av",
    "no_uni",
    "no_multi",
    "attention",
    "attention_direct",
)
GRAPH_MODES = ("alternate", "a_v_then_av", "no_uni", "no_multi")
ADJACENCY_INITS = ("identity",)


def _check_choice(name: str, value, valid):
  if value not in valid:
    raise ValueError(f"parser cfg.{name}={value!r}; expected one of {valid}.")


class GraphStep(nnx.Module):
  """One ERM relation step on nodes Z [B, T, N, d_e]. [R]

  1x1 conv (a per-node Linear(d_e -> d_e) shared across nodes), node mixing
  Y[b,t,i] = sum_j A[i,j] Z'[b,t,j] with a learnable A (initialised to the
  identity), BatchNorm over the d_e channels with statistics over (B, T, N)
  of real videos only, LeakyReLU. No residual.
  """

  def __init__(
      self,
      num_nodes: int,
      node_dim: int,
      *,
      leaky_slope: float,
      bn_momentum: float,
      adjacency_init: str = "identity",
      dtype=None,
      rngs: nnx.Rngs,
  ):
    _check_choice("adjacency_init", adjacency_init, ADJACENCY_INITS)
    self.dtype = layers_lib.get_dtype(dtype)
    self.leaky_slope = leaky_slope
    self.conv = layers_lib.Dense(node_dim, node_dim, dtype=dtype, rngs=rngs)
    self.adjacency = nnx.Param(jnp.eye(num_nodes, dtype=jnp.float32))
    self.norm = layers_lib.MaskedBatchNorm(node_dim, momentum=bn_momentum)

  def __call__(self, z_BxTxNxE, video_mask_B, *, deterministic: bool):
    h = self.conv(z_BxTxNxE)
    h = mix_nodes(self.adjacency[...].astype(self.dtype), h)
    B, T, N, _ = h.shape
    mask_BxTxN = jnp.broadcast_to((video_mask_B > 0)[:, None, None], (B, T, N))
    h = self.norm(h, mask_BxTxN, use_running_average=deterministic)
    return jax.nn.leaky_relu(h, self.leaky_slope)


def mix_nodes(adjacency_NxN: jax.Array, h_BxTxNxE: jax.Array) -> jax.Array:
  """out[b,t,i] = sum_j A[i,j] h[b,t,j] (float32), the graph convolution.

  einsum("ij,btje->btie", A, h) written as a batched matmul with A
  broadcast over the B*T segments: XLA:CPU then no longer transposes the
  whole [B,T,N,E] activation to [N, B*T*E] and back around one wide matmul
  in the forward and backward pass of every graph step (~10% of the
  full-size EAR step on CPU, benchmarks/step_profile.py). Same math; the
  forward values match the einsum bit for bit on CPU, dA is summed in
  another order (float32 rounding; tests/parser_test.py compares both).
  """
  B, T, N, E = h_BxTxNxE.shape
  x_XxNxE = h_BxTxNxE.reshape(B * T, N, E)
  a_XxNxN = jnp.broadcast_to(adjacency_NxN, (B * T, N, N))
  out = jax.lax.dot_general(a_XxNxN, x_XxNxE, (((2,), (1,)), ((0,), (0,))))
  return out.reshape(B, T, N, E).astype(jnp.float32)


class ERM(nnx.Module):
  """Event-relation modelling, Eq. (15): L layers of R_u then R_m. [R]

  R_u: per modality, a GraphStep over its C class nodes (own conv, BN and
  C x C adjacency). R_m: a GraphStep over the 2C nodes [audio; visual].
  `mode` orders the steps: "alternate" (R_m^l(R_u^l(.)) for l = 1..L),
  "a_v_then_av" (L x R_u, then L x R_m), "no_uni" (L x R_m), "no_multi"
  (L x R_u).
  """

  def __init__(self, cfg, num_classes: int, *, rngs: nnx.Rngs):
    mode, L = cfg.erm, cfg.erm_layers
    _check_choice("erm", mode, GRAPH_MODES)
    C = num_classes
    uses_uni = mode != "no_uni"
    uses_multi = mode != "no_multi"

    def make(num_nodes):
      return GraphStep(
          num_nodes,
          cfg.node_dim,
          leaky_slope=cfg.leaky_slope,
          bn_momentum=cfg.bn_momentum,
          adjacency_init=cfg.adjacency_init,
          dtype=cfg.dtype,
          rngs=rngs,
      )

    n_uni = L if uses_uni else 0
    n_multi = L if uses_multi else 0
    self.uni_a = nnx.List([make(C) for _ in range(n_uni)])
    self.uni_v = nnx.List([make(C) for _ in range(n_uni)])
    self.multi = nnx.List([make(2 * C) for _ in range(n_multi)])
    if mode == "alternate":
      schedule = [s for l in range(L) for s in (("uni", l), ("multi", l))]
    else:
      schedule = [("uni", l) for l in range(n_uni)]
      schedule += [("multi", l) for l in range(n_multi)]
    self.schedule = tuple(schedule)
    self.num_classes = C

  def __call__(self, x_a, x_v, video_mask_B, *, deterministic: bool):
    """x_a, x_v: [B, T, C, d_e] -> the relation-aware nodes, same shapes."""
    C = self.num_classes
    for kind, l in self.schedule:
      if kind == "uni":
        x_a = self.uni_a[l](x_a, video_mask_B, deterministic=deterministic)
        x_v = self.uni_v[l](x_v, video_mask_B, deterministic=deterministic)
      else:
        z = jnp.concatenate([x_a, x_v], axis=2)
        z = self.multi[l](z, video_mask_B, deterministic=deterministic)
        x_a, x_v = z[:, :, :C], z[:, :, C:]
    return x_a, x_v

  def adjacencies(self) -> dict[str, jax.Array]:
    out = {}
    for l, step in enumerate(self.uni_a):
      out[f"uni_a/layer{l}"] = step.adjacency[...]
    for l, step in enumerate(self.uni_v):
      out[f"uni_v/layer{l}"] = step.adjacency[...]
    for l, step in enumerate(self.multi):
      out[f"multi/layer{l}"] = step.adjacency[...]
    return out


class NodeAttention(nnx.Module):
  """erm="attention": L post-LN self-attention + FFN layers over the 2C
  concatenated nodes of each segment (width d_e). [R] The FFN width is
  cfg.erm_attention_ffn_dim, default 4 * d_e (not given by the text)."""

  def __init__(self, cfg, num_classes: int, *, rngs: nnx.Rngs):
    e = cfg.node_dim
    ffn = getattr(cfg, "erm_attention_ffn_dim", None) or 4 * e
    self.layers = nnx.List(
        [
            layers_lib.EncoderLayer(
                e,
                cfg.erm_attention_heads,
                ffn,
                dropout=cfg.dropout,
                dtype=cfg.dtype,
                rngs=rngs,
            )
            for _ in range(cfg.erm_layers)
        ]
    )
    self.num_classes = num_classes

  def __call__(self, x_a, x_v, *, deterministic: bool, rngs=None):
    B, T, C, E = x_a.shape
    z = jnp.concatenate([x_a, x_v], axis=2).reshape(B * T, 2 * C, E)
    for layer in self.layers:
      z = layer(z, deterministic=deterministic, rngs=rngs)
    z = z.reshape(B, T, 2 * C, E)
    return z[:, :, :C], z[:, :, C:]


class EARParser(nnx.Module):
  """The EAR AVVP model, Eq. (10)-(15) of docs/METHOD.md.

  Almost everything past the projections is a reconstruction [R] of stripped
  equations (R11); each choice is a cfg switch:
    cfg.amdf: "asymmetric" (Eq. (10)-(12): D_m = Enc_m(S_m); F_{a<-v} =
      Unit_a(q=D_a, kv=S_v), F_{v<-a} = Unit_v(q=D_v, kv=S_a)), "none"
      (F_m = S_m), "msa_mca" (Unit(q=D_a, kv=D_v) and reverse), "han" (HAN
      encoder with cfg.han_layers). N_u = cfg.temporal_layers, N_f =
      cfg.fusion_layers (units stacked with kv fixed).
    cfg.aggregation: "decoder" (Eq. (13)-(14): E_a = Dec_a(F_a, F_v), E_v =
      Dec_v(F_v, F_a)) or "sum" (E_m = LN_m(F_m + F_other)).
    cfg.erm: graph modes (see ERM), "attention" (NodeAttention),
      "attention_direct" (L encoder layers over the 2T tokens [E_a; E_v]),
      "none" (F~_m = E_m; cfg.erm_keep_aggregation=False also skips step 3).
  Event nodes (step 4): X_m = Linear_m(d -> C d_e)(E_m) as [B, T, C, d_e].
  Read-out (step 6): F~_m = LN_m(E_m + Drop(Linear_m(C d_e -> d)(X_m))).
  Head (step 7): HAN's MMIL head on (F~_a, F~_v).
  """

  def __init__(
      self, cfg, in_dim_a: int, in_dim_v: int, num_classes: int, *, rngs
  ):
    _check_choice("amdf", cfg.amdf, AMDF_MODES)
    _check_choice("aggregation", cfg.aggregation, AGGREGATIONS)
    _check_choice("erm", cfg.erm, ERM_MODES)
    dtype = layers_lib.get_dtype(cfg.dtype)
    d, C, e = cfg.hidden_dim, num_classes, cfg.node_dim
    self.amdf, self.erm_mode, self.rate = cfg.amdf, cfg.erm, cfg.dropout
    self.num_classes, self.node_dim = C, e
    blk = dict(dropout=cfg.dropout, dtype=dtype)
    identical = getattr(cfg, "identical_layer_init", False)

    def stack(layer_cls, n):  # EncoderLayer | CrossAttentionUnit
      return layers_lib.stack_layers(
          lambda r: layer_cls(d, cfg.num_heads, cfg.ffn_dim, rngs=r, **blk),
          n,
          identical=identical,
          rngs=rngs,
      )

    enc, unit = layers_lib.EncoderLayer, layers_lib.CrossAttentionUnit
    self.proj = han_lib.Projections(cfg, in_dim_a, in_dim_v, rngs=rngs)
    # Steps 1-2 (AMDF). Each attribute is assigned once (None if unused).
    temporal = cfg.amdf in ("asymmetric", "msa_mca")
    self.enc_a = stack(enc, cfg.temporal_layers) if temporal else None
    self.enc_v = stack(enc, cfg.temporal_layers) if temporal else None
    self.fuse_a = stack(unit, cfg.fusion_layers) if temporal else None
    self.fuse_v = stack(unit, cfg.fusion_layers) if temporal else None
    self.han = (
        han_lib.HANEncoder(cfg, cfg.han_layers, rngs=rngs)
        if cfg.amdf == "han"
        else None
    )
    # Step 3 (cross-modal aggregation).
    self.aggregation = cfg.aggregation
    self.use_aggregation = not (
        cfg.erm == "none" and not cfg.erm_keep_aggregation
    )
    decoder = self.use_aggregation and cfg.aggregation == "decoder"
    add_norm = self.use_aggregation and cfg.aggregation == "sum"

    def decoder_layer():
      return layers_lib.DecoderLayer(
          d, cfg.num_heads, cfg.ffn_dim, rngs=rngs, **blk
      )

    self.dec_a = decoder_layer() if decoder else None
    self.dec_v = decoder_layer() if decoder else None
    self.agg_norm_a = layers_lib.layer_norm(d, rngs=rngs) if add_norm else None
    self.agg_norm_v = layers_lib.layer_norm(d, rngs=rngs) if add_norm else None
    # Steps 4-6 (event nodes, ERM, read-out).
    nodes = cfg.erm in GRAPH_MODES or cfg.erm == "attention"
    self.uses_nodes = nodes

    def dense(i, o):
      return layers_lib.Dense(i, o, dtype=dtype, rngs=rngs) if nodes else None

    self.nodes_a = dense(d, C * e)
    self.nodes_v = dense(d, C * e)
    if cfg.erm == "attention":
      self.erm = NodeAttention(cfg, C, rngs=rngs)
    else:
      self.erm = ERM(cfg, C, rngs=rngs) if nodes else None
    self.readout_a = dense(C * e, d)
    self.readout_v = dense(C * e, d)
    self.readout_norm_a = layers_lib.layer_norm(d, rngs=rngs) if nodes else None
    self.readout_norm_v = layers_lib.layer_norm(d, rngs=rngs) if nodes else None
    self.direct = (
        stack(enc, cfg.erm_layers) if cfg.erm == "attention_direct" else None
    )
    self.dropout = layers_lib.Dropout(cfg.dropout)
    self.head = han_lib.MMILHead(d, C, dtype=dtype, rngs=rngs)

  def classify(self, feat_xD: jax.Array) -> jax.Array:
    return self.head.classify(feat_xD)

  def adjacencies(self) -> dict[str, jax.Array]:
    """Learned ERM adjacencies, e.g. "uni_a/layer0", "multi/layer2"."""
    if isinstance(self.erm, ERM):
      return self.erm.adjacencies()
    return {}

  def _amdf(self, s_a, s_v, kw):
    if self.amdf == "none":
      return s_a, s_v
    if self.amdf == "han":
      return self.han(s_a, s_v, **kw)
    d_a, d_v = s_a, s_v
    for layer in self.enc_a:  # Eq. (10)
      d_a = layer(d_a, **kw)
    for layer in self.enc_v:
      d_v = layer(d_v, **kw)
    kv_a, kv_v = (s_v, s_a) if self.amdf == "asymmetric" else (d_v, d_a)
    f_a, f_v = d_a, d_v
    for unit in self.fuse_a:  # Eq. (11): dynamic audio queries visual
      f_a = unit(f_a, kv_a, **kw)
    for unit in self.fuse_v:  # Eq. (12)
      f_v = unit(f_v, kv_v, **kw)
    return f_a, f_v

  def _aggregate(self, f_a, f_v, kw):
    if not self.use_aggregation:
      return f_a, f_v
    if self.aggregation == "decoder":  # Eq. (13)-(14)
      return self.dec_a(f_a, f_v, **kw), self.dec_v(f_v, f_a, **kw)
    return self.agg_norm_a(f_a + f_v), self.agg_norm_v(f_v + f_a)

  def _readout(self, e_m, x_m, dense, norm, kw):
    B, T = x_m.shape[:2]
    h = dense(x_m.reshape(B, T, -1)).astype(jnp.float32)
    return norm(e_m + self.dropout(h, **kw))

  def __call__(self, batch, *, deterministic: bool, rngs=None):
    layers_lib.check_rngs(deterministic, rngs, self.rate, "EARParser")
    kw = dict(deterministic=deterministic, rngs=rngs)
    s_a, s_v = self.proj(batch)  # Step 0: static features.
    B, T, _ = s_a.shape
    video_mask_B = batch.get("video_mask")
    if video_mask_B is None:
      video_mask_B = jnp.ones((B,), jnp.float32)
    f_a, f_v = self._amdf(s_a, s_v, kw)
    e_a, e_v = self._aggregate(f_a, f_v, kw)
    if self.uses_nodes:
      C, E = self.num_classes, self.node_dim
      x_a = self.nodes_a(e_a).astype(jnp.float32).reshape(B, T, C, E)
      x_v = self.nodes_v(e_v).astype(jnp.float32).reshape(B, T, C, E)
      if isinstance(self.erm, ERM):  # Eq. (15)
        x_a, x_v = self.erm(x_a, x_v, video_mask_B, deterministic=deterministic)
      else:
        x_a, x_v = self.erm(x_a, x_v, **kw)
      a = self._readout(e_a, x_a, self.readout_a, self.readout_norm_a, kw)
      v = self._readout(e_v, x_v, self.readout_v, self.readout_norm_v, kw)
    elif self.direct is not None:
      z = jnp.concatenate([e_a, e_v], axis=1)
      for layer in self.direct:
        z = layer(z, **kw)
      a, v = z[:, :T], z[:, T:]
    else:
      a, v = e_a, e_v
    return han_lib.head_outputs(self.head, a, v)
