"""Patch embedding: non-overlapping PxP patches mapped linearly to D dimensions.

The same parameters as a PxP convolution with stride P (`kernel` (P, P, C, D), `bias`
(D,), the published layout, created in nn.Conv's order with its initialisers), computed as
patchify (a reshape) then one matmul. The TPU compiler spends tens of seconds on a strided
convolution's weight gradient, growing with the batch (a 2-block ViT-Ti/16's forward and
backward pass, 8 images per v5e chip: 41 s to compile with nn.Conv, 8.5 s as a matmul;
measured 2026-12-06, BENCHMARKS.md), while the matmul is what the hardware runs anyway.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vit_jax.errors import UserError
from vit_jax.models import posemb as posemb_lib

Dtype = Any


def patchify(images, patch_size: int):
  """(B, H, W, C) -> (B, H/P, W/P, P*P*C), each patch's pixels row-major then channels:
  the order of a (P, P, C, D) kernel flattened to (P*P*C, D)."""
  batch, height, width, channels = images.shape
  rows, cols = height // patch_size, width // patch_size
  x = images.reshape(batch, rows, patch_size, cols, patch_size, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch, rows, cols, patch_size * patch_size * channels)


def uneven_patch_sizes(sizes, height: int, width: int) -> list[int]:
  """The patch sizes in `sizes` that do not cut height x width images into whole patches."""
  return [int(s) for s in sizes if height % int(s) or width % int(s)]


@functools.lru_cache(maxsize=64)
def pi_resize_matrix(size: int, new_size: int, method: str = "bilinear",
                     antialias: bool = False) -> np.ndarray:
  """(new*new, size*size): PI-resize (FlexiViT, Beyer et al. 2023), the pseudo-inverse of
  the transposed resize matrix B (patches x' = B x, resized as the input pipeline resizes
  images): a kernel w' = pinv(B^T) w gives <x', w'> = <x, w>, so a patch resized from
  `size` to `new_size` embeds as the original did (exactly when upsampling). `method`,
  `antialias`: the resize B stands for (big_vision: bilinear; timm: bicubic, antialiased)."""
  axis = posemb_lib.resample_matrix(size, new_size, method, antialias)  # (new, size)
  resize = np.kron(axis, axis)             # row-major (rows, cols) patches, both axes.
  return np.linalg.pinv(resize.T)


def resize_kernel(kernel, new_size: int, *, method: str = "bilinear",
                  antialias: bool = False):
  """A (P, P, C, D) patch-embedding kernel PI-resized to (new, new, C, D); numpy or jax
  arrays (in a jitted step the matrix is a constant and the gradient reaches `kernel`)."""
  size, _, channels, features = kernel.shape
  if new_size == size:
    return kernel
  matrix = pi_resize_matrix(size, new_size, method, antialias)
  flat = kernel.reshape(size * size, channels * features)
  out = matrix @ flat.astype(np.float64) if isinstance(kernel, np.ndarray) else (
      jnp.asarray(matrix, jnp.float32) @ flat.astype(jnp.float32))
  return out.reshape(new_size, new_size, channels, features).astype(kernel.dtype)


class PatchEmbedding(nn.Module):
  """(B, H, W, C) -> (B, H/P, W/P, features); H and W multiples of `patch_size`, or of
  `input_patch_size` (FlexiViT): the kernel, stored at `patch_size`, PI-resized to it.
  NaFlex patches already cut, (B, N, P*P*C) -> (B, N, features), at the input size."""
  features: int
  patch_size: int
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  input_patch_size: Optional[int] = None
  resize_method: str = "bilinear"
  resize_antialias: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images):
    size = self.patch_size
    cut = images.ndim == 3  # NaFlex: patches of the input size, flattened.
    channels = images.shape[-1]
    if cut:
      side = self.input_patch_size or size
      channels //= side * side
      if channels * side * side != images.shape[-1]:
        raise UserError(f"NaFlex patches of {images.shape[-1]} values are not {side}x{side} "
                        f"patches of whole channels; patchify with the model's patch size.")
    kernel = self.param("kernel", self.kernel_init,
                        (size, size, channels, self.features), self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    if self.input_patch_size and self.input_patch_size != size:
      kernel = resize_kernel(kernel, self.input_patch_size, method=self.resize_method,
                             antialias=self.resize_antialias)
      size = self.input_patch_size
    images, kernel, bias = nn.dtypes.promote_dtype(images, kernel, bias, dtype=self.dtype)
    x = (images if cut else patchify(images, size)) @ kernel.reshape(-1, self.features)
    return x if bias is None else x + bias
