"""Patch embedding: non-overlapping PxP patches mapped linearly to D dimensions.

The same parameters as a PxP convolution with stride P (`kernel` (P, P, C, D), `bias`
(D,), the published layout, created in nn.Conv's order with its initialisers), computed as
patchify (a reshape) then one matmul. The TPU compiler spends tens of seconds on a strided
convolution's weight gradient, growing with the batch (a 2-block ViT-Ti/16's forward and
backward pass, 8 images per v5e chip: 41 s to compile with nn.Conv, 8.5 s as a matmul;
measured 2026-12-06, BENCHMARKS.md), while the matmul is what the hardware runs anyway.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def patchify(images, patch_size: int):
  """(B, H, W, C) -> (B, H/P, W/P, P*P*C), each patch's pixels row-major then channels:
  the order of a (P, P, C, D) kernel flattened to (P*P*C, D)."""
  batch, height, width, channels = images.shape
  rows, cols = height // patch_size, width // patch_size
  x = images.reshape(batch, rows, patch_size, cols, patch_size, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch, rows, cols, patch_size * patch_size * channels)


class PatchEmbedding(nn.Module):
  """(B, H, W, C) -> (B, H/P, W/P, features); H and W multiples of `patch_size`."""
  features: int
  patch_size: int
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images):
    size = self.patch_size
    kernel = self.param("kernel", self.kernel_init,
                        (size, size, images.shape[-1], self.features), self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    images, kernel, bias = nn.dtypes.promote_dtype(images, kernel, bias, dtype=self.dtype)
    x = patchify(images, size) @ kernel.reshape(-1, self.features)
    return x if bias is None else x + bias
