"""The pure train step: mixup/CutMix, gradient accumulation and the non-finite guard.
(Evaluation steps live with their evaluators; losses in `vit_jax.losses`.)"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_jax.losses import loss_fn, one_hot_labels
from vit_jax.trainer.state import TrainState


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


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, *, loss: str, label_smoothing: float,
                    accum_steps: int, mixup_alpha: float = 0.0,
                    cutmix_alpha: float = 0.0,
                    input_transform: Callable | None = None,
                    ema_decay: float = 0.0) -> Callable:
  """(state, batch) -> (state, metrics). With accum_steps > 1 the batch is split into
  equal micro-batches whose gradients are averaged: the same update as the full batch.
  `input_transform` maps the batch's images to the model's input first (e.g. uint8 ->
  float32 [-1, 1] on the accelerator). `ema_decay`: `state.ema_params` follows the
  parameters with decay min(ema_decay, (1 + step) / (10 + step)) (the warm-up of TF's
  ExponentialMovingAverage: a short run's average is not dominated by the init)."""

  def batch_loss(params, images, labels, rng):
    if mixup_alpha or cutmix_alpha:
      rng, mix_rng = jax.random.split(rng)
      images, labels = mix_batch(mix_rng, images, one_hot_labels(labels, model.num_classes),
                                 mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
    logits = model.apply({"params": params}, images, train=True, rngs={"dropout": rng})
    return loss_fn(logits, labels, kind=loss, label_smoothing=label_smoothing).mean()

  grad_fn = jax.value_and_grad(batch_loss)

  def train_step(state: TrainState, batch: dict):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    images, labels = batch["image"], batch["label"]
    if input_transform is not None:
      images = input_transform(images)
    if accum_steps == 1:
      loss_value, grads = grad_fn(state.params, images, labels, rng)
    else:
      # Example i of the batch goes to micro-batch i % accum_steps, so each device keeps
      # its own rows (no resharding).
      def split(x):
        x = x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

      def accumulate(carry, micro):
        loss_sum, grad_sum = carry
        index, micro_images, micro_labels = micro
        value, grads = grad_fn(state.params, micro_images, micro_labels,
                               jax.random.fold_in(rng, index))
        return (loss_sum + value, jax.tree.map(jnp.add, grad_sum, grads)), None

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (loss_sum, grad_sum), _ = jax.lax.scan(
          accumulate, (jnp.zeros((), jnp.float32), zeros),
          (jnp.arange(accum_steps), split(images), split(labels)))
      loss_value = loss_sum / accum_steps
      grads = jax.tree.map(lambda g: g / accum_steps, grad_sum)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"train_loss": loss_value, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(state.step)}
    ema = state.ema_params
    if ema_decay:
      step = state.step.astype(jnp.float32)
      decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
      ema = jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema, params)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         ema_params=ema), metrics

  return train_step


def all_finite(*trees) -> jax.Array:
  """One boolean: every element of every array in `trees` is finite."""
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for t in trees for x in jax.tree.leaves(t)]))


def with_nonfinite_guard(train_step: Callable, *, skip_nonfinite: bool) -> Callable:
  """Flags a step whose loss, gradient norm or updated parameters are not finite (metric
  'nonfinite' = 1), so that the host never checkpoints such a state. A finite loss does
  not prove finite parameters: the loss is computed before the update.

  With `skip_nonfinite` such an update is dropped instead: parameters and optimizer state
  stay as they were, while the step counter (and so the data stream) moves on."""
  def guarded(state: TrainState, batch: dict):
    new_state, metrics = train_step(state, batch)
    finite = all_finite(metrics["train_loss"], metrics["grad_norm"], new_state.params)
    if skip_nonfinite:
      kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
      new_state = kept.replace(step=new_state.step)
    return new_state, {**metrics, "nonfinite": 1.0 - finite.astype(jnp.float32)}
  return guarded
