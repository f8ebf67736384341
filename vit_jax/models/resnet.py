"""The ResNet stem of the hybrid R50+ViT models (weight-standardised convs, GroupNorm).

Parameter names follow the published hybrid checkpoints (conv_root, gn_root,
block{i}/unit{j}/conv{k}, ...).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class StdConv(nn.Module):
  """Convolution with weight standardisation (BiT): kernels are normalised per output.
  nn.Conv's parameters, initialisers and padding ('SAME', or explicit (low, high) pairs);
  standardised in __call__ (not by overriding `param`, which tools that read nn.Conv's
  kernel directly would miss: jax2onnx's ONNX export)."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  use_bias: bool = True
  padding: Any = "SAME"
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    kernel = nn.unbox(kernel)
    bias = (self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            if self.use_bias else None)
    kernel = kernel - jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
    kernel = kernel / jnp.sqrt(jnp.var(kernel, axis=(0, 1, 2), keepdims=True) + 1e-10)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    padding = self.padding if isinstance(self.padding, str) else tuple(
        tuple(p) for p in self.padding)
    y = jax.lax.conv_general_dilated(x, kernel, tuple(self.strides), padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y if bias is None else y + bias


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
  x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
  for i, block_size in enumerate(num_layers):
    x = ResNetStage(block_size, width * 2**i, (1, 1) if i == 0 else (2, 2), dtype, param_dtype,
                    name=f"block{i + 1}")(x)
  return x
