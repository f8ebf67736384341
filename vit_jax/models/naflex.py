"""NaFlex inputs (SigLIP 2: NaViT's native aspect ratios + FlexiViT's flexible sequence
lengths): each image is a padded sequence of patches with their grid coordinates.

An image resized to keep its aspect ratio within `max_num_patches` patches (the input
pipeline's `resize_to_sequence`, `vit_jax/pp/ops_naflex.py`) is cut into an h x w grid of
patches, flattened row-major to (N, P*P*C) and padded to the sequence length; `coords`
holds each patch's (row, column), -1 on the padding, which always comes last. The model
embeds the patches with its patch kernel, resizes its learned position grid to each
image's own h x w (the resize transformers' Siglip2 and big_vision's NaFlex ViT do:
bilinear, antialiased) and masks the padding out of attention and pooling.

In a batch the patches are the `image` field and the coordinates `patch_coords`
(`model_input` pairs them for the model).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from vit_jax.models import posemb
from vit_jax.pp.ops_naflex import COORDS  # the batch field beside 'image' (the patches).


class Patches(NamedTuple):
  """A batch of NaFlex inputs (a pytree: jit, sharding and tree maps take it whole)."""
  patches: Any   # (B, N, P*P*C): each patch row-major, then channels (as `patchify`).
  coords: Any    # (B, N, 2) int32 (row, column); -1 on padding, which comes last.


def model_input(batch: dict) -> Any:
  """A batch's model input: its images, or Patches for a NaFlex batch."""
  if COORDS in batch:
    return Patches(batch["image"], batch[COORDS])
  return batch["image"]


def stacked_input(examples: list[dict], dtype=None) -> Any:
  """Preprocessed examples (one image each) -> the batch's model input."""
  batch = {"image": np.stack([np.asarray(e["image"], dtype) for e in examples])}
  if COORDS in examples[0]:
    batch[COORDS] = np.stack([e[COORDS] for e in examples])
  return model_input(batch)


def is_sequence_shape(image_shape) -> bool:
  """An example shape of NaFlex patches (N, P*P*C), not an image (H, W, C)."""
  return len(image_shape) == 2


def dummy_input(image_shape, batch: int = 1):
  """Zeros of one example's shape, batched: what a model is initialised with."""
  images = jnp.zeros((batch, *image_shape), jnp.float32)
  if not is_sequence_shape(image_shape):
    return images
  return Patches(images, jnp.zeros((batch, image_shape[0], 2), jnp.int32))


def valid(coords):
  """(B, N) True on the image's patches, False on padding."""
  return coords[..., 0] >= 0


def grid_shapes(coords):
  """(B, 2) each image's patch grid (rows, columns), read off its largest coordinates."""
  return jnp.maximum(jnp.max(coords, axis=1) + 1, 1)


def axis_weights(size_in: int, size_out, index, *, method: str = "bilinear",
                 antialias: bool = True):
  """(..., size_in) weights of output position `index` when resizing an axis of
  `size_in` to `size_out` (both traced arrays of the same leading shape): the row of
  `posemb.resample_matrix(size_in, size_out, method, antialias)` (torch's interpolate,
  align_corners=False), computed on the device because each image has its own size."""
  size_out = jnp.maximum(size_out, 1).astype(jnp.float32)
  index = index.astype(jnp.float32)
  scale = size_in / size_out
  taps = jnp.arange(size_in, dtype=jnp.float32)
  if antialias:  # the kernel stretched by the downscaling factor, renormalised.
    widen = jnp.maximum(scale, 1.0)
    support = (1.0 if method == "bilinear" else 2.0) * widen
    center = scale * (index + 0.5)
    lo = jnp.maximum(jnp.floor(center - support + 0.5), 0.0)
    hi = jnp.minimum(jnp.floor(center + support + 0.5), size_in)
    x = (taps - center[..., None] + 0.5) / widen[..., None]
    kernel = (posemb.triangle_kernel(x, xp=jnp) if method == "bilinear"
              else posemb.cubic_kernel(x, a=-0.5, xp=jnp))
    weights = kernel * ((taps >= lo[..., None]) & (taps < hi[..., None]))
    return weights / jnp.sum(weights, axis=-1, keepdims=True)
  source = (index + 0.5) * scale - 0.5
  if method == "bilinear":
    source = jnp.maximum(source, 0.0)
    lo = jnp.floor(source)
    frac = source - lo
    offsets, kernel = (0, 1), (1.0 - frac, frac)
  else:
    lo = jnp.floor(source)
    frac = source - lo
    offsets = (-1, 0, 1, 2)
    kernel = tuple(posemb.cubic_kernel(frac - o, a=-0.75, xp=jnp) for o in offsets)
  weights = 0.0
  for offset, weight in zip(offsets, kernel):
    tap = jnp.clip(lo + offset, 0, size_in - 1)
    weights = weights + weight[..., None] * (taps == tap[..., None])
  return weights


def grid_embeddings(grid, coords, *, method: str = "bilinear", antialias: bool = True):
  """(gh, gw, D) learned position grid, (B, N, 2) coordinates -> (B, N, D): the grid
  resized to each image's patch grid, read at each patch (padding reads row 0, col 0)."""
  if method not in ("bilinear", "bicubic"):
    raise ValueError(f"NaFlex resizes position grids bilinearly or bicubically, not "
                     f"{method!r}.")
  shapes = grid_shapes(coords)
  at = jnp.maximum(coords, 0)
  rows = axis_weights(grid.shape[0], shapes[:, None, 0], at[..., 0], method=method,
                      antialias=antialias)
  cols = axis_weights(grid.shape[1], shapes[:, None, 1], at[..., 1], method=method,
                      antialias=antialias)
  return jnp.einsum("bni,bnj,ijd->bnd", rows, cols, grid.astype(jnp.float32))


def sequence_lengths(coords, num_prefix: int = 0):
  """(B,) tokens each sequence holds before its padding: prefix tokens and patches."""
  return num_prefix + jnp.sum(valid(coords), axis=1).astype(jnp.int32)

