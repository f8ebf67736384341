"""Device mesh, logical-axis sharding rules and activation constraints.

Models annotate parameters and activations with *logical* axis names ('embed', 'mlp',
'act_batch', ...). This module turns those names into mesh axes by rule, so the model
never mentions a mesh and the same code runs on 1 CPU and on a pod.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")

# Logical axis -> mesh axis. Parameters: FSDP shards the embedding dimension of every
# large weight over 'fsdp'; tensor parallelism shards MLP and attention heads over
# 'model'. Activations use their own names ('act_*') so that the batch is split over
# data and fsdp while the hidden dimension of activations stays whole.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("classes", None),
    ("length", None),
    ("layers", None),
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_mlp", "model"),
    ("act_heads", "model"),
    ("act_kv", None),
)


def resolve_mesh_shape(mesh_shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Fills in the one axis given as -1 so that the product equals `num_devices`."""
  unknown = [k for k in mesh_shape if k not in MESH_AXES]
  if unknown:
    raise ValueError(f"Unknown mesh axes {unknown}; valid axes are {list(MESH_AXES)}.")
  shape = {axis: int(mesh_shape.get(axis, 1)) for axis in MESH_AXES}
  free = [axis for axis, size in shape.items() if size == -1]
  if len(free) > 1:
    raise ValueError(f"At most one mesh axis may be -1, got {dict(mesh_shape)}.")
  known = math.prod(size for size in shape.values() if size != -1)
  if free:
    if num_devices % known:
      raise ValueError(
          f"Mesh {dict(mesh_shape)} does not divide the {num_devices} devices: the fixed axes "
          f"multiply to {known}.")
    shape[free[0]] = num_devices // known
  if math.prod(shape.values()) != num_devices:
    raise ValueError(
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


def logical_to_shardings(logical_tree: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
  """Boxed (nn.LogicallyPartitioned) abstract params -> tree of NamedShardings."""
  specs = nn.get_partition_spec(logical_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def shape_safe_shardings(abstract_tree: Any, shardings: Any) -> Any:
  """Replaces a sharding by replication for any dimension the mesh axis does not divide.

  A 10-class head cannot be split 8 ways; replicating that one weight is what a user wants,
  not an error.
  """
  def fix(leaf, sharding):
    spec = list(sharding.spec) + [None] * (len(leaf.shape) - len(sharding.spec))
    for i, axes in enumerate(spec):
      names = axes if isinstance(axes, tuple) else (axes,)
      size = math.prod(sharding.mesh.shape[n] for n in names if n is not None)
      if axes is not None and leaf.shape[i] % size:
        spec[i] = None
    return NamedSharding(sharding.mesh, PartitionSpec(*spec))
  return jax.tree.map(fix, abstract_tree, shardings)


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
_ACTIVE: list[tuple[Mesh, Any]] = []


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules=DEFAULT_RULES) -> Iterator[None]:
  """While tracing under this context, `constrain` pins activations to the mesh."""
  _ACTIVE.append((mesh, rules))
  try:
    yield
  finally:
    _ACTIVE.pop()


def with_activation_sharding(fn, mesh: Mesh, rules=DEFAULT_RULES):
  """`fn` traced with its activations constrained to `mesh` by rule (see `constrain`)."""
  def wrapped(*args, **kwargs):
    with activation_sharding(mesh, rules):
      return fn(*args, **kwargs)
  return wrapped


def constrain(x: jax.Array, logical_axes: tuple[str | None, ...]) -> jax.Array:
  """Sharding constraint by logical names; a no-op outside `activation_sharding`."""
  if not _ACTIVE:
    return x
  mesh, rules = _ACTIVE[-1]
  spec = nn.logical_to_mesh_axes(logical_axes, rules)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
