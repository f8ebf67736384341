"""Device mesh, logical-axis sharding rules and activation constraints.

Models annotate parameters and activations with *logical* axis names ('embed', 'mlp',
'act_batch', ...). The config's `sharding_rules` turn those names into mesh axes (Flax's
own `nn.logical_axis_rules` format), so the model never mentions a mesh and the same
code runs on 1 CPU and on a pod. The default rules are in `vit_jax.config`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from vit_jax.errors import UserError
from vit_jax.param_names import name_of


MESH_AXES = ("data", "fsdp", "model")
Rules = Sequence[tuple[str, Any]]   # (logical axis, mesh axis | tuple of them | None)

def resolve_mesh_shape(mesh_shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Fills in the one axis given as -1 so that the product equals `num_devices`."""
  unknown = [k for k in mesh_shape if k not in MESH_AXES]
  if unknown:
    raise UserError(f"Unknown mesh axes {unknown}; valid axes are {list(MESH_AXES)}.")
  shape = {axis: int(mesh_shape.get(axis, 1)) for axis in MESH_AXES}
  free = [axis for axis, size in shape.items() if size == -1]
  if len(free) > 1:
    raise UserError(f"At most one mesh axis may be -1, got {dict(mesh_shape)}.")
  known = math.prod(size for size in shape.values() if size != -1)
  if free:
    if num_devices % known:
      raise UserError(
          f"Mesh {dict(mesh_shape)} does not divide the {num_devices} devices: the fixed axes "
          f"multiply to {known}.")
    shape[free[0]] = num_devices // known
  if math.prod(shape.values()) != num_devices:
    raise UserError(
        f"Mesh {dict(mesh_shape)} has {math.prod(shape.values())} devices but "
        f"{num_devices} are available; use -1 on one axis to take the rest.")
  return shape


def make_mesh(mesh_shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, model) mesh over all devices (of all processes)."""
  devices = list(devices) if devices is not None else jax.devices()
  shape = resolve_mesh_shape(mesh_shape, len(devices))
  sizes = tuple(shape[a] for a in MESH_AXES)
  if devices == jax.devices():
    # jax.make_mesh knows the physical topology (ICI rings on TPU, NVLink on GPU).
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """How a global batch (leading dimension = examples) is laid out: over data and fsdp."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_divisor(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def check_rules(rules: Rules) -> tuple[tuple[str, Any], ...]:
  """Config rules (lists from JSON or the command line) -> tuples, mesh axes checked."""
  checked = []
  for rule in rules:
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise UserError(f"sharding_rules entry {rule!r} is not a (logical_axis, mesh_axes) pair; "
                      f"e.g. ('embed', 'fsdp') or ('act_batch', ('data', 'fsdp')).")
    logical, target = rule
    target = tuple(target) if isinstance(target, (list, tuple)) else target
    names = target if isinstance(target, tuple) else (target,)
    unknown = [n for n in names if n is not None and n not in MESH_AXES]
    if unknown:
      raise UserError(f"sharding_rules maps {logical!r} to unknown mesh axes {unknown}; mesh "
                      f"axes are {list(MESH_AXES)} (or None to replicate).")
    checked.append((logical, target))
  return tuple(checked)


def param_shardings(boxed_params: Any, mesh: Mesh, rules: Rules) -> Any:
  """Boxed (nn.LogicallyPartitioned) abstract params -> tree of NamedShardings by rule.
  A dimension its mesh axes do not divide (ViT-g's width 1408 over 256 chips) hands them
  to the largest other dimension they do divide (big_vision's FSDP rule), so a pod shards
  what 8 devices shard; only what no dimension can take (a 10-class head over 8 devices)
  is replicated. Each such change is logged once."""
  specs = nn.get_partition_spec(boxed_params)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  return jax.tree_util.tree_map_with_path(_divisible_or_moved, nn.unbox(boxed_params),
                                          shardings)


_logged_fallbacks: set[tuple[str, int, tuple]] = set()


def _axis_names(axes) -> tuple[str, ...]:
  return tuple(n for n in (axes if isinstance(axes, tuple) else (axes,)) if n is not None)


def _divisible_or_moved(path, leaf, sharding: NamedSharding) -> NamedSharding:
  mesh = sharding.mesh.shape
  size = lambda axes: math.prod(mesh[n] for n in _axis_names(axes))  # noqa: E731
  spec = list(sharding.spec) + [None] * (len(leaf.shape) - len(sharding.spec))
  for i, axes in enumerate(spec):
    if axes is None or leaf.shape[i] % size(axes) == 0:
      continue
    spec[i] = None
    moving = tuple(n for n in _axis_names(axes) if mesh[n] > 1)
    takers = [j for j in range(len(spec)) if j != i and moving
              and leaf.shape[j] % (size(spec[j]) * size(moving)) == 0]
    target = max(takers, key=lambda j: leaf.shape[j]) if takers else None
    if target is not None:
      spec[target] = (*_axis_names(spec[target]), *moving)
      spec[target] = spec[target][0] if len(spec[target]) == 1 else spec[target]
    name = name_of(path)
    key = (name, i, tuple(mesh.items()))
    if key not in _logged_fallbacks:
      _logged_fallbacks.add(key)
      logging.info("Sharding: %s dimension %d (size %d) is not divisible by mesh axes %s "
                   "(%d devices): %s.", name, i, leaf.shape[i], axes, size(axes),
                   f"sharded over dimension {target} (size {leaf.shape[target]}) instead"
                   if target is not None else "replicated")
  return NamedSharding(sharding.mesh, PartitionSpec(*spec))


def unsharded_fraction(abstract: Any, axis: str) -> float:
  """The fraction of the bytes of `abstract` (ShapeDtypeStructs with shardings) that is
  not split over mesh `axis`: each device holds a whole copy of it."""
  total = whole = 0
  for x in jax.tree.leaves(abstract):
    nbytes = math.prod(x.shape) * x.dtype.itemsize
    total += nbytes
    if not any(axis in _axis_names(axes) for axes in x.sharding.spec):
      whole += nbytes
  return whole / total if total else 0.0


def place(tree: Any, shardings: Any) -> Any:
  """Host numpy arrays (the same on every process) -> arrays with `shardings`: each
  device takes its own slice, so no process ever holds more than the host copy."""
  def put(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree, shardings)


def shardings_of(abstract: Any) -> Any:
  """The shardings of a tree of ShapeDtypeStructs (or arrays)."""
  return jax.tree.map(lambda x: x.sharding, abstract)


def to_host(tree: Any) -> Any:
  """Arrays (sharded over any processes) -> full numpy arrays on every process. Every
  process must call it when some leaf spans several processes."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))
  return jax.tree.map(fetch, tree)


# --- Activation constraints -----------------------------------------------------------
def with_mesh_rules(fn, mesh: Mesh, rules: Rules):
  """`fn` traced inside Flax's logical-axis-rules context and the mesh's abstract mesh,
  so the model's `nn.with_logical_constraint` calls pin activations to `mesh` by rule.
  (jax.set_mesh cannot be entered inside jit; the abstract mesh can.)"""
  def wrapped(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
      return fn(*args, **kwargs)
  return wrapped
