"""Position embeddings: the fixed 2-D sin-cos table and resampling a learned grid.

Resampling is a pair of (out, in) matrices applied to the grid's rows and columns,
built in numpy from the sizes alone (static under jit) and matching
`torch.nn.functional.interpolate(align_corners=False)` exactly, with and without
`antialias`: timm resamples with bicubic + antialias, Hugging Face with plain bicubic.
big_vision's `load()` zooms with `scipy.ndimage.zoom(order=1)`: linear interpolation
with the corner positions pinned ('bilinear_align_corners', torch's align_corners=True).
A checkpoint records which.
"""
from __future__ import annotations

import math

import numpy as np

from vit_jax.errors import UserError

RESAMPLE_METHODS = ("bilinear", "bicubic", "bilinear_align_corners")


def sincos_2d(height: int, width: int, dim: int, temperature: float = 10_000.0, *,
              mae: bool = False) -> np.ndarray:
  """(height * width, dim) fixed embeddings of big_vision / MoCo v3: sin and cos of the
  column, then of the row, at dim // 4 geometric frequencies each, the last 1/temperature
  (`mae`: MAE's table, whose frequencies stop one step short of it: exponents i / (dim/4),
  not i / (dim/4 - 1))."""
  if dim % 4:
    raise ValueError(f"sincos2d position embeddings need a width divisible by 4, not {dim}.")
  rows, cols = np.mgrid[:height, :width]
  omega = np.arange(dim // 4) / (dim // 4 if mae else max(dim // 4 - 1, 1))
  omega = 1.0 / temperature**omega
  y = np.einsum("m,d->md", rows.reshape(-1), omega)
  x = np.einsum("m,d->md", cols.reshape(-1), omega)
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(np.float32)


def cubic_kernel(x, a: float, xp=np):
  """Keys' cubic convolution kernel (numpy, or `xp=jax.numpy` on traced positions)."""
  x = xp.abs(x)
  return xp.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                  xp.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def triangle_kernel(x, xp=np):
  """The linear interpolation kernel."""
  return xp.maximum(1.0 - xp.abs(x), 0.0)


def _interpolating(size_in: int, size_out: int, method: str) -> np.ndarray:
  """torch's upsample_{bilinear,bicubic}2d, align_corners=False: source coordinate
  (i + 0.5) * scale - 0.5, taps clamped to the edge."""
  scale = size_in / size_out
  matrix = np.zeros((size_out, size_in))
  for i in range(size_out):
    src = (i + 0.5) * scale - 0.5
    if method == "bilinear":
      src = max(src, 0.0)
      lo = int(math.floor(src))
      frac = src - lo
      for tap, weight in ((lo, 1 - frac), (lo + 1, frac)):
        matrix[i, min(tap, size_in - 1)] += weight
    else:
      lo = int(math.floor(src))
      frac = src - lo
      for offset in (-1, 0, 1, 2):
        weight = cubic_kernel(np.asarray(frac - offset), a=-0.75)
        matrix[i, min(max(lo + offset, 0), size_in - 1)] += weight
  return matrix


def _corner_aligned(size_in: int, size_out: int) -> np.ndarray:
  """Linear interpolation that maps the first and last positions onto each other
  (scipy.ndimage.zoom order=1, torch's align_corners=True): no antialiasing."""
  src = np.arange(size_out) * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
  lo = np.minimum(np.floor(src).astype(int), size_in - 1)
  hi = np.minimum(lo + 1, size_in - 1)
  frac = src - lo
  matrix = np.zeros((size_out, size_in))
  np.add.at(matrix, (np.arange(size_out), lo), 1 - frac)
  np.add.at(matrix, (np.arange(size_out), hi), frac)
  return matrix


def _antialiased(size_in: int, size_out: int, method: str) -> np.ndarray:
  """torch's antialiased resampling (Pillow's): the kernel is stretched by the
  downscaling factor and renormalised over the taps inside the image."""
  scale = size_in / size_out
  kernel = triangle_kernel if method == "bilinear" else (lambda x: cubic_kernel(x, a=-0.5))
  radius = (1.0 if method == "bilinear" else 2.0) * max(scale, 1.0)
  stretch = 1.0 / max(scale, 1.0)
  matrix = np.zeros((size_out, size_in))
  for i in range(size_out):
    center = scale * (i + 0.5)
    lo = max(int(center - radius + 0.5), 0)
    hi = min(int(center + radius + 0.5), size_in)
    taps = np.arange(lo, hi)
    weights = kernel((taps - center + 0.5) * stretch)
    matrix[i, lo:hi] = weights / weights.sum()
  return matrix


def resample_matrix(size_in: int, size_out: int, method: str = "bilinear",
                    antialias: bool = False) -> np.ndarray:
  """(size_out, size_in) weights resampling one axis as torch.nn.functional.interpolate."""
  if method not in RESAMPLE_METHODS:
    raise ValueError(f"Unknown resampling method {method!r}; use one of {RESAMPLE_METHODS}.")
  if size_in == size_out:
    return np.eye(size_in)
  if method == "bilinear_align_corners":
    return _corner_aligned(size_in, size_out)
  if antialias:
    return _antialiased(size_in, size_out, method)
  return _interpolating(size_in, size_out, method)


def resample_grid(grid, target: tuple[int, int], *, method: str = "bilinear",
                  antialias: bool = False, xp=np):
  """(..., h, w, dim) -> (..., target_h, target_w, dim), in float32 whatever `grid` is
  (resampling in half precision visibly shifts the embeddings)."""
  h, w = grid.shape[-3:-1]
  if (h, w) == tuple(target):
    return grid
  # float32 at least; float64 stays float64 (numpy callers resampling checkpoints).
  dtype = np.promote_types(np.dtype(grid.dtype), np.float32) if xp is np else xp.float32
  rows = resample_matrix(h, target[0], method, antialias).astype(dtype)
  cols = resample_matrix(w, target[1], method, antialias).astype(dtype)
  out = xp.einsum("ai,bj,...ijd->...abd", rows, cols, grid.astype(dtype))
  return out.astype(grid.dtype)


def square_grid(num_patches: int, what: str) -> tuple[int, int]:
  side = math.isqrt(num_patches)
  if side * side != num_patches:
    raise UserError(f"{what} has {num_patches} patch positions, not a square grid; pass "
                    f"the grid shape explicitly.")
  return side, side


def resize_posemb(posemb: np.ndarray, *, target_grid: tuple[int, int],
                  source_grid: tuple[int, int] | None = None, num_prefix_tokens: int = 1,
                  method: str = "bilinear", antialias: bool = False) -> np.ndarray:
  """Resamples (1, prefix + gh*gw, D) position embeddings to a new patch grid (as
  torch.nn.functional.interpolate would); the prefix-token embeddings are kept as they are."""
  posemb = np.asarray(posemb)
  prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
  if source_grid is None:
    source_grid = square_grid(grid.shape[0], "The source position embedding")
  if source_grid[0] * source_grid[1] != grid.shape[0]:
    raise UserError(f"source_grid={source_grid} does not match {grid.shape[0]} positions.")
  grid = grid.reshape(*source_grid, -1).astype(np.float64)
  resized = resample_grid(grid, tuple(target_grid), method=method,
                          antialias=antialias).reshape(1, -1, grid.shape[-1])
  return np.concatenate([prefix, resized.astype(posemb.dtype)], axis=1)
