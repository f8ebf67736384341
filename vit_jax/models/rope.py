"""Rotary position embeddings (RoPE) over the 2-D patch grid, as two sources define them.

Each head's query and key of every patch token are rotated in pairs of channels by
angles that depend on the token's (row, column); the prefix tokens ([class], registers)
are left as they are. Half of the angle frequencies follow the row, half the column.

- 'eva' (EVA-02; timm's RotaryEmbeddingCat): integer positions rescaled onto the
  pre-training grid (`ref_grid`, so a fine-tune at a new size sees the same angle range),
  frequencies 1 / temperature ** (i / n), channel pairs interleaved (x0, x1), (x2, x3), ...
- 'dinov3' (DINOv3; timm's RotaryEmbeddingDinoV3, transformers' DINOv3ViT): patch centres
  normalised to [-1, 1] per axis, periods temperature ** (2 i / (head_dim / 2)), angles
  2 pi coordinate / period, channel halves rotated against each other (rotate_half).

The (sin, cos) tables depend only on the grid's shape: numpy constants under jit.
"""
from __future__ import annotations

from typing import Optional

import jax.numpy as jnp
import numpy as np

KINDS = ("none", "eva", "dinov3")
DEFAULT_TEMPERATURE = {"eva": 10_000.0, "dinov3": 100.0}


def _angles(kind: str, grid: tuple[int, int], head_dim: int, temperature: float,
            ref_grid: Optional[tuple[int, int]]) -> np.ndarray:
  """(rows * cols, 2, head_dim // 4) angles: axis 1 is (row, column)."""
  bands = head_dim // 4
  if kind == "eva":
    axes = [np.arange(size, dtype=np.float64) for size in grid]
    if ref_grid is not None:
      axes = [t / size * ref for t, size, ref in zip(axes, grid, ref_grid)]
    frequencies = 1.0 / temperature ** (np.arange(bands, dtype=np.float64) / bands)
    scale = frequencies
  else:  # dinov3
    axes = [2.0 * (np.arange(size, dtype=np.float64) + 0.5) / size - 1.0 for size in grid]
    periods = temperature ** (2.0 * np.arange(bands, dtype=np.float64) / (head_dim // 2))
    scale = 2.0 * np.pi / periods
  rows, cols = np.meshgrid(*axes, indexing="ij")
  coords = np.stack([rows.reshape(-1), cols.reshape(-1)], axis=-1)  # (N, 2)
  return coords[:, :, None] * scale[None, None, :]


def table(kind: str, grid: tuple[int, int], head_dim: int, *,
          temperature: Optional[float] = None,
          ref_grid: Optional[tuple[int, int]] = None) -> np.ndarray:
  """(2, rows * cols, head_dim) float32: the sin and cos each channel is rotated by."""
  if head_dim % 4:
    raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, not {head_dim}.")
  temperature = DEFAULT_TEMPERATURE[kind] if temperature is None else temperature
  angles = _angles(kind, tuple(grid), head_dim, temperature,
                   tuple(ref_grid) if ref_grid else None).reshape(grid[0] * grid[1], -1)
  if kind == "eva":
    angles = np.repeat(angles, 2, axis=-1)            # (a0, a0, a1, a1, ...)
  else:
    angles = np.concatenate([angles, angles], axis=-1)  # (a0, a1, ..., a0, a1, ...)
  return np.stack([np.sin(angles), np.cos(angles)]).astype(np.float32)


def _rotated(x, kind: str):
  """The partner of each channel with the sign the rotation gives it."""
  if kind == "eva":
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
  first, second = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-second, first], axis=-1)


def apply(x, rope_table, kind: str):
  """x: (batch, tokens, heads, head_dim) with the patch tokens last; the leading
  tokens - rope_table.shape[1] prefix tokens are not rotated."""
  prefix = x.shape[1] - rope_table.shape[1]
  sin = jnp.asarray(rope_table[0])[None, :, None, :]
  cos = jnp.asarray(rope_table[1])[None, :, None, :]
  patches = x[:, prefix:].astype(jnp.float32)
  rotated = patches * cos + _rotated(patches, kind) * sin
  return jnp.concatenate([x[:, :prefix], rotated.astype(x.dtype)], axis=1)
