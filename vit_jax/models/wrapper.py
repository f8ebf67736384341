"""What a self-supervised objective's model (vit_jax.objectives) shares: a ViT `encoder`
whose parameters sit at the top of the tree (`nn.share_scope`), no class head, the
encoder's patch grid, and its pooled features for `return_representation` (k-NN, few-shot
and feature extraction on a run without labels)."""
from __future__ import annotations

import flax.linen as nn


class EncoderWrapper(nn.Module):
  encoder: nn.Module

  @property
  def num_classes(self):
    return None

  def patch_grid(self, height: int, width: int) -> tuple[int, int]:
    return self.encoder.patch_grid(height, width)

  def representation(self, images, *, train: bool):
    return self.encoder(images, train=train, return_representation=True)
