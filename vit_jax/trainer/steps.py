"""The pure train step: the objective's loss, gradient accumulation, the optimizer update,
the moving average and the non-finite guard. (Losses live with their objectives,
`vit_jax.objectives`; evaluation steps with their evaluators.)"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_jax.models import naflex
from vit_jax.objectives import classification
from vit_jax.trainer.state import TrainState


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, *, accum_steps: int,
                    batch_loss: Callable | None = None, loss: str = "softmax",
                    label_smoothing: float = 0.0, mixup_alpha: float = 0.0,
                    cutmix_alpha: float = 0.0,
                    input_transform: Callable | None = None,
                    ema_decay: float = 0.0) -> Callable:
  """(state, batch) -> (state, metrics). `batch_loss(params, images, labels, rng)`: the
  objective's (`Objective.batch_loss`); None: classification with `loss`,
  `label_smoothing` and mixup / CutMix. With accum_steps > 1 the batch is split into
  equal micro-batches whose gradients are averaged: the same update as the full batch.
  `input_transform` maps the batch's images to the model's input first (e.g. uint8 ->
  float32 [-1, 1] on the accelerator). `ema_decay`: `state.ema_params` follows the
  parameters with decay min(ema_decay, (1 + step) / (10 + step)) (the warm-up of TF's
  ExponentialMovingAverage: a short run's average is not dominated by the init)."""

  if batch_loss is None:
    batch_loss = classification.batch_loss(model, loss=loss, label_smoothing=label_smoothing,
                                           mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
  grad_fn = jax.value_and_grad(batch_loss)

  def train_step(state: TrainState, batch: dict):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    images, labels = naflex.model_input(batch), batch["label"]
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
          (jnp.arange(accum_steps), jax.tree.map(split, images), split(labels)))
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
