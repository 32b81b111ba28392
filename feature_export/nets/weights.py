"""Reading PyTorch-named weights (.pth, .safetensors, .npz) into NNX modules."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# flax >= 0.12 needs nnx.List for lists of modules; 0.11 takes plain lists.
ModuleList = getattr(nnx, "List", list)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a flat {name: array} dict; .pth needs torch, the others do not.

  A damaged file is a ValueError that names it.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"weights file {path!r} does not exist")
  try:
    return _read_state_dict(path)
  except ImportError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if isinstance(e, ValueError) and path in str(e):
      raise  # names the file already
    raise ValueError(f"{path}: cannot read the weights"
                     f" ({type(e).__name__}: {str(e)[:300]}); is the file"
                     " complete (re-download it)?") from e


def _read_state_dict(path: str) -> dict[str, np.ndarray]:
  # pylint: disable=g-import-not-at-top
  if path.endswith(".safetensors"):
    from safetensors import numpy as st_numpy

    return dict(st_numpy.load_file(path))
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  if path.endswith((".pth", ".pt", ".bin", ".ckpt")):
    try:
      import torch
    except ImportError as e:
      raise ImportError(
          f"reading {path} needs torch: pip install 'ear-jax[export]', or"
          " convert it once to .safetensors/.npz elsewhere"
      ) from e
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state"):
      if isinstance(obj, dict) and isinstance(obj.get(key), dict):
        obj = obj[key]
    out = {}
    for k, v in obj.items():
      if hasattr(v, "detach"):
        out[k.removeprefix("module.")] = v.detach().float().numpy()
      elif isinstance(v, np.ndarray):
        out[k.removeprefix("module.")] = v
    return out
  raise ValueError(
      f"{path}: unknown weights format; expected .pth/.pt (torch),"
      " .safetensors or .npz"
  )


def _set(var: nnx.Variable, value: np.ndarray, name: str) -> None:
  old = _get(var)
  if tuple(old.shape) != tuple(value.shape):
    raise ValueError(
        f"weight {name!r}: shape {tuple(value.shape)} after conversion does"
        f" not fit the model's {tuple(old.shape)}; were the weights made for"
        " this architecture and width?"
    )
  new = jnp.asarray(value, dtype=old.dtype)
  if hasattr(var, "set_value"):
    var.set_value(new)
  else:
    var.value = new


class Loader:
  """Copies torch-named tensors into NNX variables; tracks unused names."""

  def __init__(self, state_dict: dict[str, np.ndarray], ignore=()):
    self.sd = {k: np.asarray(v) for k, v in state_dict.items()}
    self.used: set[str] = set()
    self.ignore = tuple(ignore)

  def take(self, name: str) -> np.ndarray:
    if name not in self.sd:
      near = sorted(k for k in self.sd if k.split(".")[0] == name.split(".")[0])
      raise KeyError(
          f"weight {name!r} is missing from the state dict ({len(self.sd)}"
          f" tensors; same prefix: {near[:6]})"
      )
    self.used.add(name)
    return self.sd[name]

  def has(self, name: str) -> bool:
    return name in self.sd

  def conv(self, conv: nnx.Conv, prefix: str) -> None:
    """torch Conv{2,3}d weight (O, I, *k) -> flax kernel (*k, I, O)."""
    w = self.take(prefix + ".weight")
    nd = w.ndim
    _set(conv.kernel, np.transpose(w, (*range(2, nd), 1, 0)), prefix)
    if conv.bias is not None:
      _set(conv.bias, self.take(prefix + ".bias"), prefix + ".bias")

  def linear(self, lin: nnx.Linear, prefix: str) -> None:
    _set(lin.kernel, self.take(prefix + ".weight").T, prefix)
    _set(lin.bias, self.take(prefix + ".bias"), prefix + ".bias")

  def bn(self, bn: nnx.BatchNorm, prefix: str) -> None:
    _set(bn.scale, self.take(prefix + ".weight"), prefix + ".weight")
    _set(bn.bias, self.take(prefix + ".bias"), prefix + ".bias")
    _set(bn.mean, self.take(prefix + ".running_mean"), prefix + ".mean")
    _set(bn.var, self.take(prefix + ".running_var"), prefix + ".var")
    self.used.add(prefix + ".num_batches_tracked")

  def finish(self) -> None:
    """Raises if a tensor that is not ignored was never used."""
    left = sorted(k for k in self.sd
                  if k not in self.used and not k.startswith(self.ignore))
    if left:
      raise ValueError(
          f"{len(left)} weights were not used, e.g. {left[:5]}; the file does"
          " not match this architecture (wrong depth or model?)"
      )


def batch_norm(n: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """Inference-mode BatchNorm with PyTorch's epsilon."""
  return nnx.BatchNorm(n, use_running_average=True, epsilon=1e-5, rngs=rngs)


def abstract(ctor):
  """ctor(rngs) traced with nnx.eval_shape: shapes only, nothing allocated.

  Eager NNX init compiles one XLA op per parameter shape (seconds each on
  CPU); the exporters fill the abstract model from weights or `random_init`.
  """
  return nnx.eval_shape(lambda: ctor(nnx.Rngs(0)))


def _variables(model):
  for path, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Variable):
      yield path, node


def _get(var):
  return var.get_value() if hasattr(var, "get_value") else var.value


def random_init(model, seed: int) -> None:
  """He-normal kernels, zero biases, identity BatchNorm (numpy, fast)."""
  rng = np.random.default_rng(seed)
  for path, var in _variables(model):
    shape = tuple(_get(var).shape)
    name = str(path[-1])
    if name == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    elif name in ("scale", "var"):
      value = np.ones(shape)
    else:
      value = np.zeros(shape)
    _set(var, value.astype(np.float32), "/".join(map(str, path)))


def check_materialized(model, what: str) -> None:
  """Raises if a variable is still abstract (a weight was never loaded)."""
  left = [
      "/".join(map(str, p)) for p, v in _variables(model)
      if isinstance(_get(v), jax.ShapeDtypeStruct)
  ]
  if left:
    raise ValueError(f"{what}: {len(left)} variables were not set, e.g."
                     f" {left[:5]}")
