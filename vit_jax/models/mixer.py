"""MLP-Mixer (Tolstikhin et al. 2021), the official repository's second model family.

The parameter tree is the published `.npz` layout (stem, MixerBlock_i/{LayerNorm_0,
token_mixing, LayerNorm_1, channel_mixing}/Dense_{0,1}, pre_head_layer_norm, head), so
the released Mixer checkpoints load as they are. Same call signature as the ViT, so
every config, evaluator and tool that takes a model takes a Mixer.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from vit_jax.errors import UserError
from vit_jax.models.hparams import checked
from vit_jax.models.patch_embed import PatchEmbedding
from vit_jax.param_names import HEADS, FamilyNames

NAMES = FamilyNames(block="MixerBlock_{}/", top=(*HEADS, "pre_head_layer_norm/"),
                    input_kernel="stem/kernel")

Dtype = Any
partitioned = nn.with_logical_partitioning


class MixingMlp(nn.Module):
  """Dense -> GELU (tanh, as trained) -> Dense over the last axis. `axis` names the
  mixed dimension for sharding: 'embed' for channels; tokens stay unsharded."""
  mlp_dim: int
  axis: Optional[str] = "embed"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    def dense(features, axes, name):
      return nn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
                      kernel_init=partitioned(nn.initializers.xavier_uniform(), axes),
                      bias_init=partitioned(nn.initializers.normal(1e-6), axes[1:]))
    y = nn.gelu(dense(self.mlp_dim, (self.axis, "mlp"), "Dense_0")(x))
    return dense(x.shape[-1], ("mlp", self.axis), "Dense_1")(y)


class MixerBlock(nn.Module):
  tokens_mlp_dim: int
  channels_mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    norm = lambda name: nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype,  # noqa: E731
                                     name=name)
    y = jnp.swapaxes(norm("LayerNorm_0")(x), 1, 2)
    y = MixingMlp(self.tokens_mlp_dim, axis=None, dtype=self.dtype,
                  param_dtype=self.param_dtype, name="token_mixing")(y)
    x = x + jnp.swapaxes(y, 1, 2)
    y = norm("LayerNorm_1")(x)
    return x + MixingMlp(self.channels_mlp_dim, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="channel_mixing")(y)


class MlpMixer(nn.Module):
  num_classes: Optional[int]
  patch_size: int
  hidden_size: int
  num_layers: int
  tokens_mlp_dim: int
  channels_mlp_dim: int
  head_kernel_init_std: float = 0.0
  head_bias_init: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def pixels_per_patch(self) -> int:
    return self.patch_size

  def patch_grid(self, height: int, width: int) -> tuple[int, int]:
    return height // self.patch_size, width // self.patch_size

  @nn.compact
  def __call__(self, images, *, train: bool = False, return_representation: bool = False):
    if images.shape[1] % self.patch_size or images.shape[2] % self.patch_size:
      raise UserError(f"Image size {images.shape[1]}x{images.shape[2]} is not divisible by "
                      f"patch_size={self.patch_size}.")
    x = PatchEmbedding(self.hidden_size, self.patch_size, dtype=self.dtype,
                       param_dtype=self.param_dtype, name="stem",
                       kernel_init=partitioned(nn.initializers.lecun_normal(),
                                               (None, None, None, "embed")),
                       bias_init=partitioned(nn.initializers.zeros, ("embed",)))(
                           images.astype(self.dtype))
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    for i in range(self.num_layers):
      x = MixerBlock(self.tokens_mlp_dim, self.channels_mlp_dim, dtype=self.dtype,
                     param_dtype=self.param_dtype, name=f"MixerBlock_{i}")(x)
    x = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype,
                     name="pre_head_layer_norm")(x)
    x = jnp.mean(x, axis=1)
    if return_representation or not self.num_classes:
      return x.astype(jnp.float32)
    kernel_init = (nn.initializers.normal(self.head_kernel_init_std)
                   if self.head_kernel_init_std else nn.initializers.zeros)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                    kernel_init=partitioned(kernel_init, (None, "classes")),
                    bias_init=partitioned(nn.initializers.constant(self.head_bias_init),
                                          ("classes",)),
                    name="head")(x).astype(jnp.float32)


def arch_from_params(params) -> Optional[dict]:
  """The family contract: a published Mixer `.npz`'s architecture, read off its shapes."""
  if "MixerBlock_0" not in params:
    return None
  block = params["MixerBlock_0"]
  return dict(family="mixer", patch_size=params["stem"]["kernel"].shape[0],
              hidden_size=params["stem"]["kernel"].shape[-1],
              num_layers=sum(k.startswith("MixerBlock_") for k in params),
              tokens_mlp_dim=block["token_mixing"]["Dense_0"]["kernel"].shape[-1],
              channels_mlp_dim=block["channel_mixing"]["Dense_0"]["kernel"].shape[-1])


# Options the trainer's config carries for every family; a Mixer has no use for them.
_VIT_ONLY_DEFAULTS = ("dropout_rate", "attention_dropout_rate", "stochastic_depth_rate",
                      "attention_implementation", "remat_policy", "scan_layers",
                      "representation_size", "classifier")


def create(*, num_classes: Optional[int], **hparams) -> MlpMixer:
  for field in _VIT_ONLY_DEFAULTS:
    value = hparams.pop(field, None)
    if value not in (None, 0, 0.0, False, "none", "auto", "einsum", "token", "gap"):
      raise UserError(f"model.{field}={value!r} has no meaning for an MLP-Mixer.")
  hparams = checked(MlpMixer, hparams, family="mixer", example="Mixer-B_16")
  return MlpMixer(num_classes=num_classes, **hparams)
