"""Masked autoencoders (He et al. 2022): `config.objective = "mae"`, settings in
`config.mae` (mask_ratio, norm_pix_loss, decoder {width, depth, heads, mlp_dim}).

The loss: the mean squared error of the predicted pixels of each masked patch, against
the patch's pixels (as the model sees them, e.g. in [-1, 1]) normalised by the patch's own
mean and variance with `norm_pix_loss`. The masks are drawn per example in the train step
from the step's key (one global program: every process draws the same)."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.errors import UserError
from vit_jax.models import mae as mae_lib
from vit_jax.objectives import base


class Objective(base.Objective):
  name = "mae"
  own_params = ("decoder",)
  config_section = "mae"
  classifies = False
  description = "MAE's pre-training decoder"

  def check(self, config) -> None:
    base.check_share("mae.mask_ratio", config.mae.mask_ratio,
                     "the share of patches hidden from the encoder (MAE: 0.75)")
    d = config.mae.decoder
    for field in ("width", "depth", "heads"):
      if not isinstance(d[field], int) or d[field] <= 0:
        raise UserError(f"mae.decoder.{field}={d[field]!r} must be a positive integer.")
    if d.width % d.heads:
      raise UserError(f"mae.decoder.width={d.width} is not divisible by mae.decoder.heads="
                      f"{d.heads}.")
    if d.posemb not in ("sincos2d_mae", "learned"):
      raise UserError(f"mae.decoder.posemb={d.posemb!r} is not one of 'sincos2d_mae' (MAE's "
                      f"fixed table), 'learned'.")
    if d.posemb == "sincos2d_mae" and d.width % 4:
      raise UserError(f"mae.decoder.width={d.width} must be divisible by 4 (its sincos "
                      f"position embeddings).")
    super().check(config)  # the evaluators.

  def check_model(self, model, mesh, image_shape) -> None:
    encoder = model.encoder
    if getattr(encoder, "resnet_layers", None) is not None or not hasattr(encoder, "patch_grid"):
      raise UserError(f"objective='mae' needs a plain ViT encoder (model {type(encoder).__name__} "
                      f"{'is a hybrid' if hasattr(encoder, 'resnet_layers') else 'is not a ViT'}).")
    if encoder.rope != "none":
      raise UserError(f"objective='mae' drops the masked patches before the blocks; "
                      f"rope={encoder.rope!r} rotates by patch position there: use "
                      f"posemb='sincos2d_mae' or 'learned' instead.")
    grid = encoder.patch_grid(*image_shape[:2])
    visible = mae_lib.num_visible(grid[0] * grid[1], model.mask_ratio)
    if visible < 1:
      raise UserError(f"mae.mask_ratio={model.mask_ratio} leaves no visible patch of the "
                      f"{grid[0]}x{grid[1]} grid: lower it.")
    tensor = mesh.shape.get("model", 1)
    if model.decoder_heads % tensor or model.decoder_width % tensor:
      raise UserError(f"mae.decoder (width {model.decoder_width}, {model.decoder_heads} heads) "
                      f"cannot be split over the mesh's {tensor}-way 'model' axis (heads and "
                      f"width must be multiples of it): choose a decoder width and head "
                      f"count divisible by {tensor}, or --config.mesh.model=1.")

  def backbone(self, model):
    return model.encoder

  def wrap(self, model):
    d = self.config.mae.decoder
    return mae_lib.MaskedAutoencoder(
        encoder=model, mask_ratio=float(self.config.mae.mask_ratio), decoder_width=d.width,
        decoder_depth=d.depth, decoder_heads=d.heads, decoder_mlp_dim=d.get("mlp_dim"),
        decoder_posemb=d.posemb)

  def _losses(self, model, params, images, noise, *, train: bool, rngs=None):
    out = model.apply({"params": params}, images, train=train, noise=noise, rngs=rngs)
    target = mae_lib.patch_targets(images, model.encoder.token_patch_size,
                                   norm_pix=bool(self.config.mae.norm_pix_loss))
    return mae_lib.reconstruction_loss(out["pred"], target, out["mask"]), out

  def noise(self, model, images, rng):
    grid = model.patch_grid(*images.shape[1:3])
    return jax.random.uniform(rng, (images.shape[0], grid[0] * grid[1]))

  def batch_loss(self, model):
    def mean_loss(params, images, labels, rng):
      del labels  # unused: no labels are needed.
      noise_rng, dropout_rng = jax.random.split(rng)
      losses, _ = self._losses(model, params, images, self.noise(model, images, noise_rng),
                               train=True, rngs={"dropout": dropout_rng})
      return losses.mean()
    return mean_loss

  def chance_loss(self, num_classes: Optional[int]) -> Optional[float]:
    return None

  def eval_losses(self, model, params, images, rng):
    losses, _ = self._losses(model, params, images, self.noise(model, images, rng),
                             train=False)
    return {"loss": losses}

  def figure(self, model, params, images, rng) -> np.ndarray:
    """Rows of (original, masked, reconstruction with the visible patches pasted back),
    in the model's input range mapped to [0, 1]."""
    out = model.apply({"params": params}, images, noise=self.noise(model, images, rng))
    patch = model.encoder.token_patch_size
    grid = model.patch_grid(*images.shape[1:3])
    pixels = mae_lib.patch_targets(images, patch, norm_pix=False)
    pred = out["pred"]
    if self.config.mae.norm_pix_loss:  # back to pixels with each patch's own statistics.
      mean, std = mae_lib.patch_stats(pixels)
      pred = pred * std + mean
    mask = out["mask"][..., None]
    pasted = mae_lib.unpatchify(pixels * (1 - mask) + pred * mask, grid, patch)
    to01 = lambda x: jnp.clip(base.images01(x, self.config.pp_eval), 0, 1)  # noqa: E731
    grey = _mask_image(mask, grid, patch)  # the masked patches, shown grey.
    return base.image_grid([to01(images), to01(images) * (1 - grey) + 0.5 * grey,
                            to01(pasted)])

def _mask_image(mask, grid, patch):
  """(B, N, 1) -> (B, H, W, 1): 1 on the masked patches (shown grey)."""
  return mae_lib.unpatchify(jnp.broadcast_to(mask, (*mask.shape[:2], patch * patch)),
                            grid, patch)

