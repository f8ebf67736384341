"""A fingerprint of every array of the training state, written with each checkpoint and
checked when it is restored: bytes that changed on disk (or in a bucket) are caught even
when they still decode (orbax and TensorStore check structure and shapes, not values).

Each array's fingerprint is two 32-bit sums of its raw bits weighted by each element's
position, computed on the device where the array lives (an associative integer sum: the
same on any mesh, with no gather to one host). Any change to one element changes both
sums; an unrelated change collides with probability about 2**-64.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.param_names import named_leaves

_MULTIPLIERS = (np.uint32(0x9E3779B1), np.uint32(0x85EBCA77))
_OFFSETS = (np.uint32(0x7F4A7C15), np.uint32(0xC2B2AE3D))


def _bits(x: jax.Array) -> jax.Array:
  """The array's bit patterns as uint32 (8-byte types as two words on a new last axis)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _position_weights(shape: tuple[int, ...]) -> jax.Array:
  """A different odd-ish weight for each element, built from per-axis iotas (no reshape:
  a sharded array keeps its layout)."""
  weight = jnp.zeros(shape, jnp.uint32)
  for axis in range(len(shape)):
    index = jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
    weight = (weight ^ (index + jnp.uint32(axis + 1))) * jnp.uint32(0x01000193)
  return weight


def _fingerprint(x: jax.Array) -> jax.Array:
  bits = _bits(x)
  weights = _position_weights(bits.shape)
  sums = [jnp.sum((bits ^ offset) * (weights * multiplier + jnp.uint32(1)), dtype=jnp.uint32)
          for multiplier, offset in zip(_MULTIPLIERS, _OFFSETS)]
  return jnp.stack(sums)


@jax.jit
def _fingerprints(tree: Any) -> Any:
  return jax.tree.map(_fingerprint, tree)


def fingerprints(tree: Any) -> dict[str, list[int]]:
  """{'/'-joined path: [sum_a, sum_b]} of every array in `tree` (every process gets all)."""
  sums = jax.device_get(_fingerprints(tree))
  return {name: [int(v) for v in value] for name, value in named_leaves(sums)}


def mismatches(tree: Any, expected: dict[str, list[int]]) -> list[str]:
  """The paths whose arrays no longer have the recorded fingerprint."""
  actual = fingerprints(tree)
  return sorted(path for path, value in expected.items() if actual.get(path) != value)
