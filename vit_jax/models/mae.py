"""Masked autoencoder (He et al. 2022) around any vit_jax ViT.

The encoder sees only the visible patches (a random 1 - mask_ratio of each image: the
compute saving is the point); a light decoder gets the encoded tokens, a shared mask
token in every masked place and its own fixed position embeddings, and predicts each
patch's pixels. The encoder's parameters are the ViT's own, at the top of the tree
(`nn.share_scope`); the decoder's sit under `decoder/`: a MAE run's parameters less
`decoder/` are an ordinary ViT, which fine-tuning and the converters take as they are.
Names follow transformers' ViTMAEForPreTraining (decoder_embed, mask_token,
decoder_norm, decoder_pred), so its checkpoints map one to one.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import posemb as posemb_lib
from vit_jax.models.patch_embed import patchify
from vit_jax.models.vit import Encoder1DBlock, layer_norm
from vit_jax.models.wrapper import EncoderWrapper

Dtype = Any
partitioned = nn.with_logical_partitioning


def num_visible(num_patches: int, mask_ratio: float) -> int:
  """Patches the encoder sees: int(N * (1 - ratio)), as MAE and transformers count."""
  return int(num_patches * (1 - mask_ratio))


def random_masking(noise: jax.Array, mask_ratio: float):
  """Per-example masking by sorting `noise` (batch, N): the patches with the smallest
  noise stay visible. Returns (visible indices (batch, K) in noise order, mask (batch, N)
  1.0 where masked, restore (batch, N): the inverse permutation), transformers'
  random_masking exactly."""
  keep = num_visible(noise.shape[1], mask_ratio)
  shuffle = jnp.argsort(noise, axis=1)
  restore = jnp.argsort(shuffle, axis=1)
  return shuffle[:, :keep], (restore >= keep).astype(jnp.float32), restore


def patch_targets(images: jax.Array, patch_size: int, *, norm_pix: bool) -> jax.Array:
  """(B, H, W, C) -> (B, N, P*P*C) pixel targets, each patch normalised by its own mean
  and (unbiased, as torch's .var()) variance with `norm_pix` (MAE's norm_pix_loss)."""
  target = patchify(images.astype(jnp.float32), patch_size)
  target = target.reshape(target.shape[0], -1, target.shape[-1])
  if norm_pix:
    mean, std = patch_stats(target)
    target = (target - mean) / std
  return target


def patch_stats(pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Each patch's mean and norm_pix_loss's std (unbiased variance + 1e-6, square root)."""
  return (pixels.mean(-1, keepdims=True),
          (pixels.var(-1, keepdims=True, ddof=1) + 1e-6) ** 0.5)


def reconstruction_loss(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Per-example mean squared error over the masked patches (batch,): MAE's loss per image
  (the batch's mean, weighted by each image's masked count, is transformers' loss; with a
  fixed ratio every image masks as many)."""
  per_patch = jnp.mean((pred - target) ** 2, axis=-1)
  return jnp.sum(per_patch * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)


def unpatchify(patches: jax.Array, grid: tuple[int, int], patch_size: int) -> jax.Array:
  """(B, N, P*P*C) -> (B, H, W, C): patchify's inverse."""
  batch = patches.shape[0]
  x = patches.reshape(batch, grid[0], grid[1], patch_size, patch_size, -1)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch, grid[0] * patch_size, grid[1] * patch_size, -1)


class MaeDecoder(nn.Module):
  """Encoded tokens (prefix, then the visible patches) -> predicted pixels of every
  patch (B, N, patch_pixels)."""
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  patch_pixels: int
  posemb: str = "sincos2d_mae"   # MAE's fixed table; 'learned': a trained grid of its own.
  mlp_activation: str = "gelu"
  layernorm_epsilon: float = 1e-6
  attention_implementation: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens, restore, *, grid: tuple[int, int], num_prefix: int,
               deterministic: bool = True):
    dense = lambda features, name, axes: nn.Dense(  # noqa: E731
        features, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
        kernel_init=partitioned(nn.initializers.xavier_uniform(), axes),
        bias_init=partitioned(nn.initializers.zeros, axes[1:]))
    x = dense(self.width, "decoder_embed", ("embed", None))(tokens)
    prefix, visible = x[:, :num_prefix], x[:, num_prefix:]
    batch, num_patches = restore.shape
    mask_token = self.param("mask_token", partitioned(nn.initializers.normal(0.02),
                                                      (None, None, None)),
                            (1, 1, self.width), self.param_dtype)
    masked = jnp.broadcast_to(mask_token.astype(x.dtype),
                              (batch, num_patches - visible.shape[1], self.width))
    patches = jnp.take_along_axis(jnp.concatenate([visible, masked], axis=1),
                                  restore[..., None], axis=1)  # back in image order.
    x = jnp.concatenate([prefix, patches], axis=1)
    if self.posemb == "learned":  # prefix rows too (transformers' layout).
      table = self.param("pos_embedding", partitioned(nn.initializers.normal(0.02),
                                                      (None, None)),
                         (num_prefix + num_patches, self.width), self.param_dtype)
      x = x + table.astype(x.dtype)[None]
    else:  # MAE's fixed table; the prefix's rows are 0.
      table = posemb_lib.sincos_2d(*grid, self.width, mae=True)
      x = x.at[:, num_prefix:].add(jnp.asarray(table, x.dtype)[None])
    for i in range(self.depth):
      x = Encoder1DBlock(mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                         attention_implementation=self.attention_implementation,
                         mlp_activation=self.mlp_activation,
                         layernorm_epsilon=self.layernorm_epsilon, dtype=self.dtype,
                         param_dtype=self.param_dtype, name=f"decoderblock_{i}")(
                             x, deterministic)
    x = layer_norm("decoder_norm", self.layernorm_epsilon, self.dtype, self.param_dtype)(x)
    pred = dense(self.patch_pixels, "decoder_pred", (None, None))(x[:, num_prefix:])
    return pred.astype(jnp.float32)


class MaskedAutoencoder(EncoderWrapper):
  """`encoder` (a VisionTransformer) + MaeDecoder. `__call__(images, noise=...)` ->
  {'pred': (B, N, P*P*C), 'mask': (B, N)}; `return_representation=True`: the encoder's
  pooled features of the whole image (k-NN, few-shot, features)."""
  mask_ratio: float = 0.75
  decoder_width: int = 512
  decoder_depth: int = 8
  decoder_heads: int = 16
  decoder_mlp_dim: Optional[int] = None   # None: 4 x width.
  decoder_posemb: str = "sincos2d_mae"

  def setup(self):
    nn.share_scope(self, self.encoder)  # the encoder's parameters at the top level.
    e = self.encoder
    self.decoder = MaeDecoder(
        width=self.decoder_width, depth=self.decoder_depth, num_heads=self.decoder_heads,
        mlp_dim=self.decoder_mlp_dim or 4 * self.decoder_width,
        patch_pixels=e.token_patch_size ** 2 * 3, posemb=self.decoder_posemb,
        mlp_activation=e.mlp_activation,
        layernorm_epsilon=e.layernorm_epsilon,
        attention_implementation=e.attention_implementation, dtype=e.dtype,
        param_dtype=e.param_dtype)

  def __call__(self, images, *, train: bool = False, noise=None,
               return_representation: bool = False):
    if return_representation:
      return self.representation(images, train=train)
    grid = self.encoder.patch_grid(*images.shape[1:3])
    num_patches = grid[0] * grid[1]
    if noise is None:  # init and a fixed look: the first patches stay visible.
      noise = jnp.broadcast_to(jnp.arange(num_patches, dtype=jnp.float32),
                               (images.shape[0], num_patches))
    visible, mask, restore = random_masking(noise, self.mask_ratio)
    tokens = self.encoder(images, train=train, return_tokens=True, visible=visible)
    pred = self.decoder(tokens, restore, grid=grid, num_prefix=self.encoder.num_prefix_tokens,
                        deterministic=not train)
    return {"pred": pred, "mask": mask}
