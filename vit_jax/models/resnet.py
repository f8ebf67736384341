"""The ResNet stem of the hybrid R50+ViT models (weight-standardised convs, GroupNorm).

Parameter names follow the published hybrid checkpoints (conv_root, gn_root,
block{i}/unit{j}/conv{k}, ...).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class StdConv(nn.Conv):
  """Convolution with weight standardisation (BiT): kernels are normalised per output."""

  def param(self, name: str, *args, **kwargs):
    param = super().param(name, *args, **kwargs)
    if name == "kernel":
      param = param - jnp.mean(param, axis=(0, 1, 2), keepdims=True)
      param = param / jnp.sqrt(jnp.var(param, axis=(0, 1, 2), keepdims=True) + 1e-10)
    return param


class ResidualUnit(nn.Module):
  """Bottleneck unit: 1x1 -> 3x3 (strided) -> 1x1 with a projected shortcut when needed."""
  features: int
  strides: tuple[int, int] = (1, 1)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = lambda f, k, s, name: StdConv(
        f, k, s, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    norm = lambda name, **kw: nn.GroupNorm(
        dtype=self.dtype, param_dtype=self.param_dtype, name=name, **kw)
    residual = x
    if x.shape[-1] != self.features * 4 or self.strides != (1, 1):
      residual = conv(self.features * 4, (1, 1), self.strides, "conv_proj")(residual)
      residual = norm("gn_proj")(residual)
    y = nn.relu(norm("gn1")(conv(self.features, (1, 1), (1, 1), "conv1")(x)))
    y = nn.relu(norm("gn2")(conv(self.features, (3, 3), self.strides, "conv2")(y)))
    y = norm("gn3", scale_init=nn.initializers.zeros)(
        conv(self.features * 4, (1, 1), (1, 1), "conv3")(y))
    return nn.relu(residual + y)


class ResNetStage(nn.Module):
  block_size: int
  features: int
  first_stride: tuple[int, int]
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.block_size):
      strides = self.first_stride if i == 0 else (1, 1)
      x = ResidualUnit(self.features, strides, self.dtype, self.param_dtype,
                       name=f"unit{i + 1}")(x)
    return x


def resnet_stem(x, *, num_layers: Sequence[int], width_factor: float, dtype, param_dtype):
  """Must be called inside an `nn.compact` method: adds conv_root, gn_root, block1..N."""
  width = int(64 * width_factor)
  x = StdConv(width, (7, 7), (2, 2), use_bias=False, dtype=dtype, param_dtype=param_dtype,
              name="conv_root")(x)
  x = nn.GroupNorm(dtype=dtype, param_dtype=param_dtype, name="gn_root")(x)
  x = nn.relu(x)
  x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
  for i, block_size in enumerate(num_layers):
    x = ResNetStage(block_size, width * 2**i, (1, 1) if i == 0 else (2, 2), dtype, param_dtype,
                    name=f"block{i + 1}")(x)
  return x
