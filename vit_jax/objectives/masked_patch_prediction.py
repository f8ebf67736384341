"""Masked patch prediction, the ViT paper's self-supervision (Section 4.6, Appendix
B.1.2): `config.objective = "masked_patch_prediction"`, settings in `config.mpp`
(ratio 0.5 of the patches corrupted; of those, mask_share 0.8 get the [mask] embedding,
random_share 0.1 another patch's, the rest stay as they are). The loss: cross-entropy of
the 3-bit mean colour (512 classes) of every corrupted patch."""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax.errors import UserError
from vit_jax.models import masked_patch as mpp_lib
from vit_jax.objectives import base


class Objective(base.Objective):
  name = "masked_patch_prediction"
  own_params = mpp_lib.OWN_PARAMS
  config_section = "mpp"
  classifies = False
  description = "masked patch prediction's [mask] embedding and colour head"

  def check(self, config) -> None:
    m = config.mpp
    base.check_share("mpp.ratio", m.ratio, "the share of patches corrupted (the paper: 0.5)")
    if not (0 <= m.mask_share and 0 <= m.random_share and m.mask_share + m.random_share <= 1):
      raise UserError(f"mpp.mask_share={m.mask_share} and mpp.random_share={m.random_share} "
                      f"must be shares that sum to at most 1 (the paper: 0.8, 0.1).")
    super().check(config)  # the evaluators.

  def check_model(self, model, mesh, image_shape) -> None:
    if getattr(model.encoder, "resnet_layers", None) is not None:
      raise UserError("objective='masked_patch_prediction' needs a plain ViT encoder, not "
                      "a hybrid.")

  def backbone(self, model):
    return model.encoder

  def wrap(self, model):
    return mpp_lib.MaskedPatchPredictor(encoder=model)

  def _corruption(self, model, images, rng):
    grid = model.patch_grid(*images.shape[1:3])
    m = self.config.mpp
    return mpp_lib.sample_corruption(rng, images.shape[0], grid[0] * grid[1], ratio=m.ratio,
                                     mask_share=m.mask_share, random_share=m.random_share)

  def _losses(self, model, params, images, rng, *, train: bool, pp: str, rngs=None):
    corruption = self._corruption(model, images, rng)
    out = model.apply({"params": params}, images, train=train, corruption=corruption,
                      rngs=rngs)
    targets = mpp_lib.colour_classes(base.images01(images, pp), model.encoder.token_patch_size)
    weight = corruption["corrupted"].astype(jnp.float32)
    count = jnp.maximum(weight.sum(1), 1.0)
    losses = optax.softmax_cross_entropy_with_integer_labels(out["logits"], targets)
    hits = (jnp.argmax(out["logits"], -1) == targets).astype(jnp.float32)
    return (losses * weight).sum(1) / count, (hits * weight).sum(1) / count, out, corruption

  def batch_loss(self, model):
    def mean_loss(params, images, labels, rng):
      del labels
      corrupt_rng, dropout_rng = jax.random.split(rng)
      losses, *_ = self._losses(model, params, images, corrupt_rng, train=True,
                                pp=self.config.pp_train, rngs={"dropout": dropout_rng})
      return losses.mean()
    return mean_loss

  def chance_loss(self, num_classes: Optional[int]) -> Optional[float]:
    return math.log((2 ** mpp_lib.BITS) ** 3)

  def eval_losses(self, model, params, images, rng):
    losses, hits, *_ = self._losses(model, params, images, rng, train=False,
                                    pp=self.config.pp_eval)
    return {"loss": losses, "colour_accuracy": hits}

  def figure(self, model, params, images, rng) -> np.ndarray:
    """Rows of (original, corrupted patches grey, predicted mean colours of those)."""
    *_, out, corruption = self._losses(model, params, images, rng, train=False,
                                       pp=self.config.pp_eval)
    patch = model.encoder.token_patch_size
    grid = model.patch_grid(*images.shape[1:3])
    levels = 2 ** mpp_lib.BITS
    cls = jnp.argmax(out["logits"], -1)
    colour = (jnp.stack([cls // (levels * levels), cls // levels % levels, cls % levels],
                        -1) + 0.5) / levels                          # (B, N, 3)
    original = jnp.clip(base.images01(images, self.config.pp_eval), 0, 1)
    flat = lambda x: x.reshape(x.shape[0], grid[0], patch, grid[1], patch, -1)  # noqa: E731
    shown = corruption["corrupted"].reshape(-1, grid[0], 1, grid[1], 1, 1)
    blocks = flat(original)
    grey = jnp.where(shown, 0.5, blocks).reshape(original.shape)
    predicted = jnp.where(shown, colour.reshape(-1, grid[0], 1, grid[1], 1, 3),
                          blocks).reshape(original.shape)
    return base.image_grid([original, grey, predicted])
