"""The BiT family (Big Transfer, Kolesnikov et al. 2020): the paper's baseline, a ResNet-v2.

Pre-activation bottleneck units (GroupNorm -> ReLU -> conv, 1x1 -> 3x3 (strided) -> 1x1,
4x expansion, the shortcut projected from the pre-activated input where the shape
changes), every convolution weight-standardised (`resnet.StdConv`), GroupNorm with 32
groups, a root of one 7x7 stride-2 convolution and a 3x3 stride-2 max pool, a final
GroupNorm + ReLU, global average pooling and a zero-initialised head. Widths 64 x
`width_factor` per stage base; `block_sizes` units per stage ((3, 4, 6, 3): R50, (3, 4,
23, 3): R101, (3, 8, 36, 3): R152).

Parameters: `root_block/conv_root`, `block{s}/unit{uu}/{gn1, conv1, gn2, conv2, gn3,
conv3, conv_proj}`, `pre_head_norm`, `head`: big_vision's `bit_paper.py` names (its
GroupNorm parameters there are (1, 1, 1, C); here (C,)), read from and written to the
published `.npz`, big_vision and timm by `vit_jax.convert.bit_format`.

`stem_pool_padding`: the root max pool's padding: 'zeros' as the published BiT code and
timm (a zero-padded border; the root has no ReLU, so it matters there), '-inf' as
big_vision's re-implementation.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from vit_jax.errors import UserError
from vit_jax.models.hparams import checked
from vit_jax.models.presets import BIT_DEPTHS
from vit_jax.models.resnet import StdConv
from vit_jax.param_names import HEADS, FamilyNames

# Blocks are the four stages (block1..block4); after them the final norm and the head.
NAMES = FamilyNames(block="block{}/", first_block=1, top=(*HEADS, "pre_head_norm/"),
                    lora_targets=r"conv[123]/kernel$",
                    input_kernel="root_block/conv_root/kernel")

DEPTHS = BIT_DEPTHS
STEM_POOL_PADDINGS = ("zeros", "-inf")

Dtype = Any
partitioned = nn.with_logical_partitioning
# FSDP splits every convolution over its output channels (and each GroupNorm over its
# channels: at 256 chips their copies would be 16% of a chip's share), the head over its
# input.
_CONV_AXES = (None, None, None, "embed")


def _conv(features: int, kernel: int, stride: int, name: str, dtype, param_dtype):
  pad = (kernel - 1) // 2  # symmetric, as BiT and timm pad (not 'SAME': (0, 1) at stride 2).
  return StdConv(features, (kernel, kernel), (stride, stride), use_bias=False,
                 padding=((pad, pad), (pad, pad)), dtype=dtype, param_dtype=param_dtype,
                 kernel_init=partitioned(nn.initializers.lecun_normal(), _CONV_AXES),
                 name=name)


def _norm(groups: int, name: str, dtype, param_dtype):
  # Variance as E[(x - mean)^2], as BiT's own GroupNorm computes it.
  return nn.GroupNorm(num_groups=groups, epsilon=1e-5, use_fast_variance=False, dtype=dtype,
                      param_dtype=param_dtype, name=name,
                      scale_init=partitioned(nn.initializers.ones, ("embed",)),
                      bias_init=partitioned(nn.initializers.zeros, ("embed",)))


class _Layer(nn.Module):
  """The compute and parameter dtypes every part of the network takes (by keyword)."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32


class PreActBottleneck(_Layer, kw_only=True):
  """GN -> ReLU -> (projection) -> conv1 -> GN -> ReLU -> conv2 -> GN -> ReLU -> conv3, + x."""
  mid: int
  stride: int = 1
  groups: int = 32

  @nn.compact
  def __call__(self, x):
    out = self.mid * 4
    conv = lambda f, k, s, name: _conv(f, k, s, name, self.dtype, self.param_dtype)  # noqa: E731
    norm = lambda name: _norm(self.groups, name, self.dtype, self.param_dtype)  # noqa: E731
    shortcut = x
    x = nn.relu(norm("gn1")(x))
    if shortcut.shape[-1] != out or self.stride != 1:
      shortcut = conv(out, 1, self.stride, "conv_proj")(x)
    x = conv(self.mid, 1, 1, "conv1")(x)
    x = conv(self.mid, 3, self.stride, "conv2")(nn.relu(norm("gn2")(x)))
    x = conv(out, 1, 1, "conv3")(nn.relu(norm("gn3")(x)))
    return x + shortcut


class _RootBlock(_Layer, kw_only=True):
  """7x7 stride-2 convolution, then a 3x3 stride-2 max pool over a 1-pixel border."""
  width: int
  pool_padding: str

  @nn.compact
  def __call__(self, x):
    x = _conv(self.width, 7, 2, "conv_root", self.dtype, self.param_dtype)(x)
    if self.pool_padding == "zeros":
      x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
      return nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="VALID")
    return nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class _Stage(_Layer, kw_only=True):
  """`units` bottlenecks (unit01, unit02, ...); the first one strides."""
  units: int
  mid: int
  stride: int
  groups: int

  @nn.compact
  def __call__(self, x):
    for unit in range(self.units):
      x = PreActBottleneck(mid=self.mid, stride=self.stride if unit == 0 else 1,
                           groups=self.groups, dtype=self.dtype, param_dtype=self.param_dtype,
                           name=f"unit{unit + 1:02d}")(x)
    self.sow("intermediates", "out", x)  # the stage's feature map (features' blocks).
    return x


class BiT(nn.Module):
  num_classes: Optional[int]
  block_sizes: Sequence[int]
  width_factor: float = 1.0
  norm_groups: int = 32
  stem_pool_padding: str = "zeros"
  head_kernel_init_std: float = 0.0  # 0: the zero head BiT fine-tunes with.
  head_bias_init: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def pixels_per_patch(self) -> int:
    """The feature map's stride: one position per 32x32 pixels."""
    return 32

  def patch_grid(self, height: int, width: int) -> tuple[int, int]:
    return -(-height // 32), -(-width // 32)

  @nn.compact
  def __call__(self, images, *, train: bool = False, return_representation: bool = False):
    del train  # no dropout, and GroupNorm keeps no batch statistics.
    width = int(64 * self.width_factor)
    x = _RootBlock(width=width, pool_padding=self.stem_pool_padding, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="root_block")(images.astype(self.dtype))
    for stage, units in enumerate(self.block_sizes):
      x = _Stage(units=units, mid=width * 2**stage, stride=1 if stage == 0 else 2,
                 groups=self.norm_groups, dtype=self.dtype, param_dtype=self.param_dtype,
                 name=f"block{stage + 1}")(x)
    x = nn.relu(_norm(self.norm_groups, "pre_head_norm", self.dtype, self.param_dtype)(x))
    # The final feature map, one "token" per position (features' patch_tokens).
    self.sow("intermediates", "tokens", x.reshape(x.shape[0], -1, x.shape[-1]))
    x = jnp.mean(x, axis=(1, 2))
    if return_representation or not self.num_classes:
      return x.astype(jnp.float32)
    kernel_init = (nn.initializers.normal(self.head_kernel_init_std)
                   if self.head_kernel_init_std else nn.initializers.zeros)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                    kernel_init=partitioned(kernel_init, ("embed", "classes")),
                    bias_init=partitioned(nn.initializers.constant(self.head_bias_init),
                                          ("classes",)),
                    name="head")(x).astype(jnp.float32)


def arch_from_params(params) -> Optional[dict]:
  """The family contract: a BiT tree's architecture, read off its shapes."""
  if "root_block" not in params or "block1" not in params:
    return None
  width = params["root_block"]["conv_root"]["kernel"].shape[-1]
  blocks = sorted((k for k in params if k.startswith("block")), key=lambda k: int(k[5:]))
  return dict(family="bit", width_factor=width / 64,
              block_sizes=tuple(len(params[b]) for b in blocks))


# Options the trainer's config carries for every family; a ResNet has no use for them.
_VIT_ONLY = ("dropout_rate", "attention_dropout_rate", "stochastic_depth_rate",
             "attention_implementation", "remat_policy", "scan_layers", "classifier")


def create(*, num_classes: Optional[int], **hparams) -> BiT:
  for field in _VIT_ONLY:
    value = hparams.pop(field, None)
    if value not in (None, 0, 0.0, False, "none", "auto", "einsum", "token", "gap"):
      raise UserError(f"model.{field}={value!r} has no meaning for a BiT ResNet.")
  if "depth" in hparams:  # 50 / 101 / 152, as the presets and big_vision name them.
    depth = hparams.pop("depth")
    if depth not in DEPTHS:
      raise UserError(f"model.depth={depth!r} is not one of {sorted(DEPTHS)}; or give "
                      f"model.block_sizes, units per stage, e.g. (3, 4, 6, 3).")
    hparams.setdefault("block_sizes", DEPTHS[depth])
  hparams = checked(BiT, hparams, family="bit", example="BiT-R50x1")
  if hparams.get("stem_pool_padding", "zeros") not in STEM_POOL_PADDINGS:
    raise UserError(f"model.stem_pool_padding={hparams['stem_pool_padding']!r} is not one "
                    f"of {STEM_POOL_PADDINGS}.")
  hparams["block_sizes"] = tuple(hparams["block_sizes"])
  width = int(64 * hparams.get("width_factor", 1.0))
  groups = hparams.get("norm_groups", 32)
  if width % groups:
    raise UserError(f"model.width_factor={hparams.get('width_factor')} gives {width} root "
                    f"channels, not a multiple of the {groups} GroupNorm groups.")
  return BiT(num_classes=num_classes, **hparams)
