"""PyTorch checkpoints of UWAV, the original HAN and VALOR as ear-jax runs.

A state dict is mapped key by key onto the matching ear-jax model, and
written as an ordinary workdir (config.json + orbax best/) that stage 2,
eval and parse restore like a run of their own. torch is imported lazily.
"""
# pylint: disable=invalid-name

from __future__ import annotations

import copy
import hashlib
import os
from typing import Any, Callable, Mapping

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from ear_jax import checkpoint as ckpt_lib
from ear_jax import generator_lib
from ear_jax import jsonio
from ear_jax import parser_lib
from ear_jax import train_state as ts_lib
from ear_jax import workdir as workdir_lib
from ear_jax.data import avvp
from ear_jax.data import llp_features

# source -> (what it is, default attention heads of its published scripts).
SOURCES = {
    "uwav_generator": ("UWAV model/TemporalTransformer.py (stage-1"
                       " pseudo-label generator)", 16),
    "uwav_han": ("UWAV model/HAN.py HybridAttentionNet (VGGish/ResNet-152/"
                 "R(2+1)D or CLIP/CLAP input)", 16),
    "han_eccv20": ("AVVP-ECCV20 nets/net_audiovisual.py MMIL_Net (the"
                   " original HAN)", 1),
    "valor_han": ("VALOR main_network.py MMIL_Net", 8),
}
PARSER_SOURCES = ("uwav_han", "han_eccv20", "valor_han")
_WRAPPERS = ("state_dict", "model_state_dict", "model")

Flat = dict[tuple, np.ndarray]


class CheckpointImportError(ValueError):
  """A checkpoint that does not fit the chosen source or ear-jax."""


# ------------------------------------------------------------------ reading
def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """{key: float32 array} of a .pt/.pth state dict (torch, weights_only)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "Importing a PyTorch checkpoint needs torch: pip install"
        " 'ear-jax[export]' (or any torch>=2.4). Training never needs it."
    ) from e
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config.checkpoint={path!r} is not a file.")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointImportError(
        f"{path}: torch.load(weights_only=True) failed ({e}). Expected a"
        " state dict saved with torch.save(model.state_dict(), path)."
    ) from e
  return state_dict_to_numpy(obj, path)


def state_dict_to_numpy(obj: Any, where: str = "checkpoint"
                        ) -> dict[str, np.ndarray]:
  """Unwraps {"state_dict": ...} and DataParallel "module." prefixes."""
  if isinstance(obj, Mapping):
    for k in _WRAPPERS:
      if k in obj and isinstance(obj[k], Mapping) and len(obj) <= 4:
        obj = obj[k]
        break
  if not isinstance(obj, Mapping) or not obj:
    raise CheckpointImportError(
        f"{where}: expected a non-empty state dict {{name: tensor}}, got"
        f" {type(obj).__name__}.")
  keys = list(obj)
  if all(k.startswith("module.") for k in keys):
    obj = {k[len("module."):]: v for k, v in obj.items()}
  out = {}
  for k, v in obj.items():
    if hasattr(v, "detach"):
      v = v.detach().cpu().float().numpy()
    v = np.asarray(v)
    if not np.issubdtype(v.dtype, np.floating):
      raise CheckpointImportError(f"{where}: parameter {k!r} has dtype {v.dtype};"
                         " expected floating-point weights.")
    out[str(k)] = v.astype(np.float32)
  return out


class _Reader:
  """Hands out state-dict entries by name and remembers which were used."""

  def __init__(self, sd: Mapping[str, np.ndarray], source: str):
    self.sd, self.source, self.used = sd, source, set()

  def has(self, key: str) -> bool:
    return key in self.sd

  def get(self, key: str, ndim: int | None = None) -> np.ndarray:
    if key not in self.sd:
      raise CheckpointImportError(
          f"source={self.source!r}: the checkpoint has no parameter {key!r}"
          f" (it has {_sample(self.sd)}). Is it a state dict of"
          f" {SOURCES[self.source][0]}? Pick the matching"
          f" --config.source (one of {sorted(SOURCES)}).")
    x = self.sd[key]
    if ndim is not None and x.ndim != ndim:
      raise CheckpointImportError(
          f"source={self.source!r}: parameter {key!r} has shape {x.shape};"
          f" expected {ndim} dimensions.")
    self.used.add(key)
    return x

  def count(self, pattern: str) -> int:
    """Number of consecutive i with some key matching pattern.format(i)."""
    n = 0
    while any(k.startswith(pattern.format(n)) for k in self.sd):
      n += 1
    return n

  def ignore(self, prefix: str) -> None:
    """Marks keys of modules the source's forward never uses."""
    self.used.update(k for k in self.sd if k.startswith(prefix))

  def check_all_used(self) -> None:
    unknown = sorted(set(self.sd) - self.used)
    if unknown:
      raise CheckpointImportError(
          f"source={self.source!r}: unknown parameters {unknown[:8]}"
          f"{' ...' if len(unknown) > 8 else ''} ({len(unknown)} in all) are"
          " not part of this architecture. Is the checkpoint from another"
          f" model? Pick the matching --config.source ({sorted(SOURCES)}).")


def _sample(sd) -> str:
  keys = sorted(sd)
  return ", ".join(repr(k) for k in keys[:5]) + (" ..." if len(keys) > 5
                                                  else "")


# ------------------------------------------------------------ key mapping
def _linear(r: _Reader, key: str, path: tuple, out: Flat) -> tuple[int, int]:
  w = r.get(f"{key}.weight", 2)
  out[path + ("kernel",)] = w.T
  out[path + ("bias",)] = r.get(f"{key}.bias", 1)
  return w.shape[1], w.shape[0]  # (in, out)


def _mlp(r: _Reader, key: str, path: tuple, out: Flat, n: int) -> list:
  """torch MLP(layers.0..n-1) -> ear-jax MLP (fc1, fc2) or Dense (n = 1)."""
  if n == 1:
    return [_linear(r, f"{key}.layers.0", path, out)]
  if n != 2:
    raise CheckpointImportError(
        f"source={r.source!r}: {key} has {n} layers; ear-jax supports 1 or 2"
        " (num_proj_layers / num_MMIL_layers <= 2).")
  return [_linear(r, f"{key}.layers.{i}", path + (f"fc{i + 1}",), out)
          for i in range(2)]


def _layer_norm(r: _Reader, key: str, path: tuple, out: Flat) -> None:
  out[path + ("scale",)] = r.get(f"{key}.weight", 1)
  out[path + ("bias",)] = r.get(f"{key}.bias", 1)


def _mha(r: _Reader, key: str, path: tuple, out: Flat) -> int:
  """nn.MultiheadAttention (packed in_proj) -> q/k/v/out projections."""
  w = r.get(f"{key}.in_proj_weight", 2)
  b = r.get(f"{key}.in_proj_bias", 1)
  d = w.shape[1]
  if w.shape != (3 * d, d) or b.shape != (3 * d,):
    raise CheckpointImportError(
        f"source={r.source!r}: {key}.in_proj_weight has shape {w.shape}"
        f" (bias {b.shape}); expected ({3 * d}, {d}) and ({3 * d},).")
  for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
    out[path + (name, "kernel")] = w[i * d:(i + 1) * d].T
    out[path + (name, "bias")] = b[i * d:(i + 1) * d]
  _linear(r, f"{key}.out_proj", path + ("out_proj",), out)
  return d


def _han_layers(r: _Reader, prefix: str, out: Flat) -> tuple[int, int]:
  """HANLayer stack; returns (num_layers, ffn_dim)."""
  n = r.count(prefix + ".layers.{}.")
  if n == 0:
    r.get(f"{prefix}.layers.0.self_attn.in_proj_weight")  # raises
  ffn = 0
  for i in range(n):
    k, p = f"{prefix}.layers.{i}", ("encoder", "layers", i)
    _mha(r, f"{k}.cm_attn", p + ("cross_attn",), out)
    _mha(r, f"{k}.self_attn", p + ("self_attn",), out)
    _, ffn = _linear(r, f"{k}.linear1", p + ("ffn", "linear1"), out)
    _linear(r, f"{k}.linear2", p + ("ffn", "linear2"), out)
    _layer_norm(r, f"{k}.norm1", p + ("norm1",), out)
    _layer_norm(r, f"{k}.norm2", p + ("norm2",), out)
  return n, ffn


def _mmil_head(r: _Reader, out: Flat, att_layers: int | None) -> tuple:
  """fc_prob / fc_frame_att / fc_av_att; returns (d, C, att_hidden)."""
  d, C = _linear(r, "fc_prob", ("head", "fc_prob"), out)
  att_hidden = 0
  for name in ("fc_frame_att", "fc_av_att"):
    if att_layers is None:  # HAN-ECCV20 / VALOR: plain Linear
      _linear(r, name, ("head", name), out)
    else:
      dims = _mlp(r, name, ("head", name), out, att_layers)
      att_hidden = dims[0][1] if att_layers == 2 else 0
  return d, C, att_hidden


def _check_classes(source: str, C: int) -> None:
  if C != len(avvp.LLP_CLASSES):
    raise CheckpointImportError(
        f"source={source!r}: fc_prob predicts {C} classes; an LLP parser has"
        f" {len(avvp.LLP_CLASSES)}.")


def _features_of(source: str, in_a: int, in_v2d: int, in_v3d: int | None
                 ) -> tuple[str, bool]:
  """(config.data.features, use_3d_with_clip) with these input widths."""
  for features, use_3d in (("vggish_res152_r2plus1d", False),
                           ("clip_clap", False), ("clip_clap", True)):
    a, v = llp_features.parser_input_dims(features, use_3d)
    _, parts = llp_features._parts(features, use_3d)  # pylint: disable=protected-access
    v2d = v - (512 if len(parts) == 2 else 0)
    if a == in_a and v2d == in_v2d and (in_v3d or 0) == v - v2d:
      return features, use_3d
  raise CheckpointImportError(
      f"source={source!r}: inputs audio {in_a}-d, visual 2D {in_v2d}-d, 3D"
      f" {in_v3d}-d match no ear-jax feature set (VGGish 128 + ResNet-152"
      " 2048 + R(2+1)D 512, or CLAP 512 + CLIP 768 [+ R(2+1)D 512]).")


def _parser_uwav(r: _Reader, opts) -> tuple[dict, Flat]:
  out: Flat = {}
  att_layers = r.count("fc_frame_att.layers.{}.")
  d, C, att_hidden = _mmil_head(r, out, max(att_layers, 1))
  _check_classes(r.source, C)
  (in_a, a_hidden), _ = _mlp(r, "fc_a", ("proj", "audio"), out, 2)
  model = dict(audio_proj="mlp", audio_proj_hidden=a_hidden,
               mmil_att_hidden=att_hidden)
  n_proj = r.count("fc_fusion.layers.{}.")
  if in_a == 128:  # VGGish + ResNet-152 + R(2+1)D: fc_fusion on the concat
    dims = _mlp(r, "fc_fusion", ("proj", "visual"), out, n_proj)
    model.update(
        visual_proj="linear" if n_proj == 1 else "mlp",
        **({"visual_proj_hidden": dims[0][1]} if n_proj == 2 else {}))
    inputs = (in_a, dims[0][0] - 512, 512)
  else:  # main.py --use_clip_clap_feat: CLIP enters the encoder unprojected
    r.ignore("fc_fusion.")
    model.update(visual_proj="none")
    inputs = (in_a, d, None)
  n, ffn = _han_layers(r, "hat_encoder", out)
  if opts["pre_norm"]:
    for m in ("a", "v"):
      _layer_norm(r, f"hat_encoder.final_norm_{m}",
                  ("encoder", f"final_norm_{m}"), out)
  else:  # built but only applied with pre_norm
    r.ignore("hat_encoder.final_norm_")
  model.update(hidden_dim=d, ffn_dim=ffn, han_layers=n,
               han_norm="pre" if opts["pre_norm"] else "post",
               han_update="sequential", identical_layer_init=True)
  return dict(model=model, inputs=inputs), out


def _parser_mmil(r: _Reader, opts, eccv20: bool) -> tuple[dict, Flat]:
  out: Flat = {}
  d, C, _ = _mmil_head(r, out, None)
  _check_classes(r.source, C)
  in_a, _ = _linear(r, "fc_a", ("proj", "audio"), out)
  in_2d, _ = _linear(r, "fc_v", ("proj", "visual_2d"), out)
  in_3d, _ = _linear(r, "fc_st", ("proj", "visual_3d"), out)
  _linear(r, "fc_fusion", ("proj", "fusion"), out)
  n, ffn = _han_layers(r, "hat_encoder", out)
  if eccv20:
    # Built by MMIL_Net but never called in its forward (norm=None).
    for prefix in ("audio_encoder.", "visual_encoder.", "cmt_encoder.",
                   "hat_encoder.norm1.", "hat_encoder.norm2."):
      r.ignore(prefix)
  elif opts["pre_norm"]:
    for m in ("a", "v"):
      _layer_norm(r, f"hat_encoder.final_norm_{m}",
                  ("encoder", f"final_norm_{m}"), out)
  else:
    r.ignore("hat_encoder.final_norm_")
  model = dict(audio_proj="linear", visual_proj="split", visual_3d_dim=in_3d,
               hidden_dim=d, ffn_dim=ffn, han_layers=n,
               han_norm="pre" if opts["pre_norm"] else "post",
               han_update="eccv20" if eccv20 else "sequential",
               mmil_att_hidden=0, identical_layer_init=True)
  return dict(model=model, inputs=(in_a, in_2d, in_3d)), out


def _generator_uwav(r: _Reader, opts) -> tuple[dict, Flat]:
  del opts
  out: Flat = {}
  model, dims = {}, {}
  for m, stack, feat in (("a", "audio", "clap"), ("v", "visual", "clip")):
    (in_dim, hidden), (_, d) = _mlp(r, f"proj_{m}", (stack, "proj"), out, 2)
    fin = _mlp(r, f"final_proj_{m}", (stack, "final_proj"), out, 2)
    if fin[0][0] != d or fin[1][1] != in_dim:
      raise CheckpointImportError(
          f"source={r.source!r}: final_proj_{m} maps {fin[0][0]} ->"
          f" {fin[1][1]}; ear-jax's generator needs {d} -> {in_dim} (its"
          f" input width, the text embedding width of {feat.upper()}).")
    prefix = f"{m}_transformer.encoder.layers"
    n = r.count(prefix + ".{}.")
    if n == 0:
      r.get(f"{prefix}.0.self_attn.in_proj_weight")  # raises
    for i in range(n):
      k, p = f"{prefix}.{i}", (stack, "layers", i)
      _mha(r, f"{k}.self_attn", p + ("attn",), out)
      _, ffn = _linear(r, f"{k}.linear1", p + ("ffn", "linear1"), out)
      _linear(r, f"{k}.linear2", p + ("ffn", "linear2"), out)
      _layer_norm(r, f"{k}.norm1", p + ("norm1",), out)
      _layer_norm(r, f"{k}.norm2", p + ("norm2",), out)
    scale = r.get(f"{m}_logit_scale")
    if scale.shape not in ((), (1,)):
      raise CheckpointImportError(f"source={r.source!r}: {m}_logit_scale has shape"
                         f" {scale.shape}; expected a scalar.")
    model[f"logit_scale_{m}"] = float(scale.reshape(()))
    model[f"{feat}_dim"] = in_dim
    dims[m] = (hidden, d, n, ffn)
  if dims["a"] != dims["v"]:
    raise CheckpointImportError(
        f"source={r.source!r}: audio (proj hidden, width, layers, ffn)"
        f" {dims['a']} differ from visual {dims['v']}; ear-jax's generator"
        " uses one set for both stacks.")
  hidden, d, n, ffn = dims["a"]
  model.update(asymmetric=False, proj_hidden=hidden, hidden_dim=d,
               num_layers=n, ffn_dim=ffn, static_mode="frozen_zeroshot",
               static_logit_scale_a=None, static_logit_scale_v=None,
               identical_layer_init=True)
  return dict(model=model), out


_CONVERTERS: dict[str, Callable] = {
    "uwav_generator": _generator_uwav,
    "uwav_han": _parser_uwav,
    "han_eccv20": lambda r, o: _parser_mmil(r, o, eccv20=True),
    "valor_han": lambda r, o: _parser_mmil(r, o, eccv20=False),
}


# ------------------------------------------------------------- conversion
def _check_source(source: str) -> None:
  if source not in SOURCES:
    raise CheckpointImportError(
        f"config.source={source!r}; expected one of {sorted(SOURCES)}:\n"
        + "\n".join(f"  {k}: {v[0]}" for k, v in SOURCES.items()))


def map_state_dict(source: str, sd: Mapping[str, np.ndarray],
                   pre_norm: bool = False) -> tuple[dict, Flat]:
  """(architecture, {ear-jax param path: array}) of a state dict.

  architecture: dict(model=config.model fields, inputs=(audio, visual 2D,
  visual 3D or None) input widths) for parsers. Also maps gradients: any
  dict with the state dict's keys and shapes.
  """
  _check_source(source)
  if pre_norm and source not in ("uwav_han", "valor_han"):
    raise CheckpointImportError(
        f"config.pre_norm=True: source={source!r} has no pre-norm variant"
        " (only uwav_han and valor_han).")
  r = _Reader(sd, source)
  arch, flat = _CONVERTERS[source](r, dict(pre_norm=bool(pre_norm)))
  r.check_all_used()
  return arch, flat


def run_config_for(source: str, sd: Mapping[str, np.ndarray], base,
                   num_heads: int | None = None, pre_norm: bool = False):
  """(run config, flat params) of `sd`: `base` (stage-1 or stage-3 config)
  with config.model (and data.features) set to the source architecture."""
  arch, flat = map_state_dict(source, sd, pre_norm)
  if source in PARSER_SOURCES:
    arch["features"], arch["use_3d"] = _features_of(source, *arch["inputs"])
  heads = int(num_heads or SOURCES[source][1])
  d = arch["model"]["hidden_dim"]
  if d % heads:
    raise CheckpointImportError(
        f"config.num_heads={heads} does not divide the checkpoint's width"
        f" {d}; pass the --nhead the checkpoint was trained with.")
  cfg = copy.deepcopy(base)
  with cfg.unlocked():
    cfg.model.update(arch["model"], num_heads=heads, dtype="float32")
    if source in PARSER_SOURCES:
      cfg.model.name = "han"
      cfg.model.use_3d_with_clip = arch["use_3d"]
      cfg.data.features = arch["features"]
      # The source's own evaluation: UWAV `> 0.5`, HAN / VALOR `>= 0.5`.
      cfg.eval.strict = source == "uwav_han"
  return cfg, flat


def make_model_fn(run_cfg) -> Callable[[], nnx.Module]:
  """make_model() of the run: the recipes stage 2 / stage 3 rebuild it with."""
  if run_cfg.model.name == "generator":
    return generator_lib.model_factory(run_cfg)
  return parser_lib.model_factory(run_cfg)


def _path_name(path: tuple) -> str:
  return "/".join(str(p) for p in path)


def fill_params(make_model: Callable[[], nnx.Module], flat: Flat,
                source: str) -> tuple[Any, dict]:
  """(graphdef, {"params", "model_state"}) with every parameter from `flat`.

  Every ear-jax parameter must be given once, with its exact shape.
  """
  model = make_model()
  graphdef, params, rest = ts_lib.split_model(model)
  target = dict(nnx.to_flat_state(params))
  missing = sorted(_path_name(p) for p in set(target) - set(flat))
  extra = sorted(_path_name(p) for p in set(flat) - set(target))
  if missing or extra:
    raise CheckpointImportError(
        f"source={source!r}: the mapped checkpoint and the ear-jax model"
        f" disagree: model parameters without a value {missing[:6]},"
        f" values without a model parameter {extra[:6]}.")
  for path, var in target.items():
    x = flat[path]
    if tuple(x.shape) != tuple(var.shape):
      raise CheckpointImportError(
          f"source={source!r}: shape mismatch for ear-jax parameter"
          f" {_path_name(path)}: checkpoint gives {x.shape}, the model"
          f" expects {tuple(var.shape)}.")
    var[...] = jnp.asarray(x, var.dtype)
  return graphdef, dict(params=params, model_state=rest)


def convert(source: str, sd: Mapping[str, np.ndarray], base,
            num_heads: int | None = None, pre_norm: bool = False):
  """(run config, graphdef, weights) of a state dict; nothing is written."""
  run_cfg, flat = run_config_for(source, sd, base, num_heads, pre_norm)
  graphdef, weights = fill_params(make_model_fn(run_cfg), flat, source)
  return run_cfg, graphdef, weights


# ------------------------------------------------------------------ stage
def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def write_run(workdir: str, run_cfg, weights: dict, meta: dict) -> None:
  """best/0 (orbax) then config.json of the run, into a new workdir.

  The workdir may hold what launch.py's claim left there (.lock and the
  import config) or the best/ of an import that died; anything else is
  refused. config.json, written last and atomically, marks it complete.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  recorded = workdir_lib.read_recorded(workdir)
  others = set(os.listdir(workdir)) - {workdir_lib.LOCK, workdir_lib.CONFIG}
  unfinished = (recorded is not None and recorded["stage"] == "import_torch"
                and others <= {"best"})
  if (recorded is not None and not unfinished) or (recorded is None
                                                   and others):
    raise FileExistsError(
        f"workdir {workdir} is not empty (it holds"
        f" {sorted(os.listdir(workdir))}); import into a new directory (an"
        " imported run is never merged into an existing one).")
  def save(tmp):
    ckpt = ckpt_lib.Checkpointer(tmp)
    ckpt.save_best(0, weights, meta)
    ckpt.wait()
    ckpt.close()

  jsonio.write_dir_atomic(os.path.join(workdir, "best"), save)
  with run_cfg.unlocked():
    run_cfg.workdir = workdir
  workdir_lib.write_config(run_cfg)


def run(config):
  """Stage `import_torch`: config.checkpoint (source) -> config.workdir."""
  _check_source(config.source)
  sd = load_torch_state_dict(config.checkpoint)
  base = config.generator if config.source == "uwav_generator" else (
      config.parser)
  run_cfg, _, weights = convert(config.source, sd, base, config.num_heads,
                                config.pre_norm)
  path = os.path.abspath(config.checkpoint)
  with run_cfg.unlocked():
    for key in ("llp_root", "llp_annotations_dir", "unav_root"):
      if config.data.get(key):
        run_cfg.data[key] = config.data[key]
    run_cfg.imported = dict(source=config.source, checkpoint=path,
                            sha256=_sha256(path))
  meta = dict(stage=run_cfg.stage, step=0, epoch=0, best_step=0,
              best_value=None, imported_from=path, source=config.source)
  write_run(config.workdir, run_cfg, weights, meta)
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(weights["params"]))
  logging.info("imported %s (%s, %d parameters) into %s as a %r run",
               path, config.source, n, config.workdir, run_cfg.stage)

