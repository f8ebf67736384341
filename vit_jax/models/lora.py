"""LoRA (Hu et al. 2021) on any family's kernels, as a reparameterisation of the parameter
tree: beside each targeted `kernel` sit `lora_a` (fan-in x rank) and `lora_b` (rank x
fan-out), and the model runs with `kernel + alpha / rank * a @ b` (the same function merges
the adapters into plain weights for export). `b` starts at zero, so training starts from
the base model exactly. An attention `out` kernel (heads, head_dim, width) takes its first
two axes as fan-in, other kernels their first; a scanned block's leading layer axis is a
batch axis (one adapter per layer)."""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp

from vit_jax.errors import UserError
from vit_jax.models import family as family_lib
from vit_jax.models import family_of
from vit_jax.param_names import names

A, B = "lora_a", "lora_b"


@dataclasses.dataclass(frozen=True)
class LoraSpec:
  rank: int
  alpha: float            # the update's scale is alpha / rank.
  targets: str            # regex of the kernels adapted ('': the family's NAMES').

  @classmethod
  def from_config(cls, config) -> "LoraSpec | None":
    lora = config.get("lora")
    if not lora or not lora.get("rank"):
      return None
    rank = int(lora.rank)
    if rank < 0:
      raise UserError(f"lora.rank={rank} must be a positive integer (0: off).")
    targets = lora.get("targets") or family_lib.names(family_of(config.model_name)).lora_targets
    return cls(rank, float(lora.get("alpha") or rank), targets)

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


def _split(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, int, int]:
  """(batch axes, fan-in axes, fan-out axes) of a kernel."""
  batch = 1 if "encoderblock" in path else 0      # a scanned block's layer axis.
  fan_in = 2 if path[-2] == "out" and len(shape) - batch == 3 else 1
  return batch, fan_in, len(shape) - batch - fan_in


def targeted(params: Mapping[str, Any], spec: LoraSpec) -> list[tuple[str, ...]]:
  paths = [tuple(name.split("/")) for name in names(nn.unbox(dict(params)))]
  return [p for p in paths if p[-1] == "kernel" and re.search(spec.targets, "/".join(p))]


def add_adapters(params: Mapping[str, Any], spec: LoraSpec, rng: jax.Array) -> dict:
  """The base params with zero-effect adapters beside each targeted kernel."""
  params = jax.tree.map(lambda x: x, dict(params), is_leaf=lambda x: isinstance(x, nn.Partitioned))
  paths = targeted(params, spec)
  if not paths:
    raise UserError(f"lora.targets={spec.targets!r} matches no kernel; kernels are named "
                    f"like 'Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel'.")
  for i, path in enumerate(paths):
    module = params
    for key in path[:-1]:
      module[key] = dict(module[key])
      module = module[key]
    kernel = nn.unbox(module["kernel"])
    batch, fan_in, _ = _split(path, kernel.shape)
    lead, n_in = kernel.shape[:batch], math.prod(kernel.shape[batch:batch + fan_in])
    n_out = math.prod(kernel.shape[batch + fan_in:])
    # A as in the paper's reference code (Kaiming-uniform), B zero: no change at step 0.
    bound = 1.0 / math.sqrt(n_in)
    module[A] = jax.random.uniform(jax.random.fold_in(rng, i), (*lead, n_in, spec.rank),
                                   kernel.dtype, -bound, bound)
    module[B] = jnp.zeros((*lead, spec.rank, n_out), kernel.dtype)
  return params


def has_adapters(params: Mapping[str, Any]) -> bool:
  return any(A in {str(getattr(k, "key", "")) for k in p}
             for p, _ in jax.tree_util.tree_flatten_with_path(dict(params))[0])


def split_adapters(params: Mapping[str, Any]) -> tuple[dict, dict]:
  """(the base params, {flat name: adapter}) - fine-tuning fits the base to a checkpoint."""
  flat = traverse_util.flatten_dict(dict(params), sep="/")
  adapters = {k: v for k, v in flat.items() if k.rsplit("/", 1)[-1] in (A, B)}
  base = {k: v for k, v in flat.items() if k not in adapters}
  return traverse_util.unflatten_dict(base, sep="/"), adapters


def with_adapters(base: Mapping[str, Any], adapters: Mapping[str, Any]) -> dict:
  flat = traverse_util.flatten_dict(dict(base), sep="/")
  return traverse_util.unflatten_dict({**flat, **adapters}, sep="/")


def merge(params: Mapping[str, Any], scale: float) -> dict:
  """Adapters folded into their kernels; a tree without adapters is returned as it is."""
  def fold(tree, path=()):
    if not isinstance(tree, Mapping):
      return tree
    if A in tree and B in tree and "kernel" in tree:
      kernel = tree["kernel"]
      batch, _, _ = _split(path + ("kernel",), kernel.shape)
      delta = jnp.einsum("...ir,...ro->...io", tree[A], tree[B]) if batch else tree[A] @ tree[B]
      rest = {k: v for k, v in tree.items() if k not in (A, B)}
      return {**rest, "kernel": kernel + (scale * delta).reshape(kernel.shape).astype(kernel.dtype)}
    return {k: fold(v, path + (k,)) for k, v in tree.items()}
  return fold(params)


class LoraModel:
  """A model whose params carry adapters: `init` adds them, `apply` merges them first;
  everything else is the base model's."""

  def __init__(self, base: nn.Module, spec: LoraSpec):
    self.base, self.spec = base, spec

  def init(self, rng, *args, **kwargs):
    variables = self.base.init(rng, *args, **kwargs)
    params = add_adapters(variables["params"], self.spec, jax.random.fold_in(rng, 7))
    return {**variables, "params": params}

  def apply(self, variables, *args, **kwargs):
    params = merge(variables["params"], self.spec.scale)
    return self.base.apply({**variables, "params": params}, *args, **kwargs)

  def __getattr__(self, name):
    return getattr(self.base, name)


def wrapped(model, config):
  """The config's model with its LoRA adapters (`config.lora`), or as it is."""
  spec = LoraSpec.from_config(config)
  return model if spec is None else LoraModel(model, spec)


def unwrapped(model):
  """The base model of a LoRA model (any other model as it is)."""
  return model.base if isinstance(model, LoraModel) else model
