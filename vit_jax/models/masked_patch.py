"""Masked patch prediction (the ViT paper, Section 4.6 and Appendix B.1.2) around any
vit_jax ViT: a share of the patch embeddings is corrupted (BERT's 80/10/10: a learned
[mask] embedding, another patch's embedding, or left as is) and a linear head on each
patch's output token predicts the patch's 3-bit mean colour (512 classes).

The encoder's parameters are the ViT's own, at the top of the tree (`nn.share_scope`);
the objective's are `mpp_mask_embedding` and `mpp_head/`.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models.patch_embed import patchify
from vit_jax.models.wrapper import EncoderWrapper

BITS = 3                       # per channel: 8 levels, 8 ** 3 = 512 colours.
OWN_PARAMS = ("mpp_mask_embedding", "mpp_head")


def sample_corruption(rng: jax.Array, batch: int, num_patches: int, *, ratio: float = 0.5,
                      mask_share: float = 0.8, random_share: float = 0.1) -> dict:
  """Which patches are corrupted (each with probability `ratio`) and how: the [mask]
  embedding (`mask_share` of them), another patch's embedding (`random_share`; which
  one: `source`, an index into the batch's B * N patches) or unchanged (the rest)."""
  pick, how, source = jax.random.split(rng, 3)
  corrupted = jax.random.bernoulli(pick, ratio, (batch, num_patches))
  u = jax.random.uniform(how, (batch, num_patches))
  return {"corrupted": corrupted,
          "use_mask": corrupted & (u < mask_share),
          "use_random": corrupted & (u >= mask_share) & (u < mask_share + random_share),
          "source": jax.random.randint(source, (batch, num_patches), 0, batch * num_patches)}


def colour_classes(images01: jax.Array, patch_size: int) -> jax.Array:
  """(B, H, W, 3) images in [0, 1] -> (B, N) class of each patch's mean colour, each
  channel's mean quantised to 3 bits: r * 64 + g * 8 + b."""
  patches = patchify(images01.astype(jnp.float32), patch_size)
  batch, rows, cols, _ = patches.shape
  mean = patches.reshape(batch, rows * cols, patch_size * patch_size, -1).mean(axis=2)
  levels = 2 ** BITS
  q = jnp.clip(jnp.floor(mean * levels), 0, levels - 1).astype(jnp.int32)
  return (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]


class MaskedPatchPredictor(EncoderWrapper):
  """`encoder` (a VisionTransformer) + [mask] embedding + colour head.
  `__call__(images, corruption=...)` -> {'logits': (B, N, 512)}; without `corruption`
  nothing is corrupted; `return_representation=True`: the encoder's pooled features."""

  def setup(self):
    nn.share_scope(self, self.encoder)
    e = self.encoder
    self.mpp_mask_embedding = self.param(
        "mpp_mask_embedding", nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                          ("embed",)),
        (e.hidden_size,), e.param_dtype)
    self.mpp_head = nn.Dense(
        (2 ** BITS) ** 3, dtype=e.dtype, param_dtype=e.param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", None)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))

  def __call__(self, images, *, train: bool = False, corruption=None,
               return_representation: bool = False):
    if return_representation:
      return self.representation(images, train=train)

    def corrupt(x):  # (B, rows, cols, D) patch embeddings, before the positions.
      if corruption is None:
        return x
      shape = x.shape
      flat = x.reshape(shape[0], -1, shape[-1])
      other = flat.reshape(-1, shape[-1])[corruption["source"]]
      flat = jnp.where(corruption["use_random"][..., None], other, flat)
      flat = jnp.where(corruption["use_mask"][..., None],
                       self.mpp_mask_embedding.astype(flat.dtype), flat)
      return flat.reshape(shape)

    tokens = self.encoder(images, train=train, return_tokens=True, corrupt=corrupt)
    logits = self.mpp_head(tokens[:, self.encoder.num_prefix_tokens:])
    return {"logits": logits.astype(jnp.float32)}
