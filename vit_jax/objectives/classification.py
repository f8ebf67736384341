"""Supervised classification: softmax or sigmoid cross-entropy on the labels, with
label smoothing and mixup / CutMix. The default objective: what every run trained before
the seam, unchanged."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from vit_jax.losses import chance_loss, loss_fn, one_hot_labels
from vit_jax.objectives import base


def mixup(rng: jax.Array, images: jax.Array, targets: jax.Array,
          alpha: float) -> tuple[jax.Array, jax.Array]:
  """Mixup (Zhang et al. 2018, as in AugReg): each example is blended with its neighbour in
  the batch, images and (one-hot or multi-hot) targets alike, with one lambda ~ Beta(alpha,
  alpha) per batch."""
  lam = jax.random.beta(rng, alpha, alpha)
  mix = lambda x: lam * x + (1 - lam) * jnp.roll(x, 1, axis=0)  # noqa: E731
  return mix(images), mix(targets)


def cutmix(rng: jax.Array, images: jax.Array, targets: jax.Array,
           alpha: float) -> tuple[jax.Array, jax.Array]:
  """CutMix (Yun et al. 2019, as in DeiT): a box of each neighbour's image is pasted in,
  its side sqrt(1 - lambda) of the image's with lambda ~ Beta(alpha, alpha) per batch, and
  the targets mixed by the box's actual area (after clipping at the borders)."""
  lam_rng, y_rng, x_rng = jax.random.split(rng, 3)
  lam = jax.random.beta(lam_rng, alpha, alpha)
  height, width = images.shape[1:3]
  cut = jnp.sqrt(1.0 - lam)
  cy = jax.random.uniform(y_rng) * height
  cx = jax.random.uniform(x_rng) * width
  y0, y1 = jnp.clip(cy - cut * height / 2, 0, height), jnp.clip(cy + cut * height / 2, 0, height)
  x0, x1 = jnp.clip(cx - cut * width / 2, 0, width), jnp.clip(cx + cut * width / 2, 0, width)
  rows, cols = jnp.arange(height)[:, None] + 0.5, jnp.arange(width)[None, :] + 0.5
  box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)    # pixel centres inside.
  pasted = jnp.mean(box)
  images = jnp.where(box[None, :, :, None], jnp.roll(images, 1, axis=0), images)
  targets = (1 - pasted) * targets + pasted * jnp.roll(targets, 1, axis=0)
  return images, targets


def mix_batch(rng: jax.Array, images: jax.Array, targets: jax.Array, *, mixup_alpha: float,
              cutmix_alpha: float) -> tuple[jax.Array, jax.Array]:
  """Mixup or CutMix (each batch one of the two, at random, when both are on; DeiT's
  recipe)."""
  choice_rng, mixup_rng, cutmix_rng = jax.random.split(rng, 3)
  if not cutmix_alpha:
    return mixup(mixup_rng, images, targets, mixup_alpha)
  if not mixup_alpha:
    return cutmix(cutmix_rng, images, targets, cutmix_alpha)
  use_cutmix = jax.random.bernoulli(choice_rng)
  a = mixup(mixup_rng, images, targets, mixup_alpha)
  b = cutmix(cutmix_rng, images, targets, cutmix_alpha)
  return tuple(jnp.where(use_cutmix, y, x) for x, y in zip(a, b))


def batch_loss(model, *, loss: str, label_smoothing: float = 0.0, mixup_alpha: float = 0.0,
               cutmix_alpha: float = 0.0):
  """(params, images, labels, rng) -> the batch's mean cross-entropy."""

  def mean_loss(params, images, labels, rng):
    if mixup_alpha or cutmix_alpha:
      rng, mix_rng = jax.random.split(rng)
      images, labels = mix_batch(mix_rng, images, one_hot_labels(labels, model.num_classes),
                                 mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
    logits = model.apply({"params": params}, images, train=True, rngs={"dropout": rng})
    return loss_fn(logits, labels, kind=loss, label_smoothing=label_smoothing).mean()
  return mean_loss


class Objective(base.Objective):
  name = "classification"

  def batch_loss(self, model):
    c = self.config
    return batch_loss(model, loss=c.loss, label_smoothing=c.label_smoothing,
                      mixup_alpha=c.mixup_alpha, cutmix_alpha=c.cutmix_alpha)

  def chance_loss(self, num_classes: Optional[int]) -> Optional[float]:
    return chance_loss(self.config.loss, num_classes)
