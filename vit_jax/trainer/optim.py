"""Optimizers and learning-rate schedules from the config (optax).

Pre-training: Adam(b1, b2) with decoupled weight decay, AdamW-style (the decay is scaled by
the learning rate, as in the official code) and applied to weight matrices only
(`*/kernel` of ndim >= 2): biases, LayerNorm scales, position embeddings and the class
token are not decayed. Fine-tuning: SGD with momentum, no weight decay. Both: gradient
clipping at a global norm first, optimizer state (Adam's first moment / SGD's momentum)
optionally in bfloat16.
"""
from __future__ import annotations

import optax

from vit_jax.errors import UserError
from vit_jax.models.hparams import as_dtype
from vit_jax.trainer import param_groups


def make_schedule(config) -> optax.Schedule:
  """Linear warm-up from 0 to `lr`, then cosine / linear decay to `end_lr` at total_steps."""
  warmup, total = int(config.warmup_steps), int(config.total_steps)
  if not 0 <= warmup < total:
    raise UserError(f"warmup_steps={warmup} must be in [0, total_steps={total}); set "
                    f"--config.warmup_steps={max(total // 10, 0)} (a tenth) or fewer.")
  decay_steps = total - warmup
  if config.schedule == "cosine":
    decay = optax.cosine_decay_schedule(config.lr, decay_steps, alpha=config.end_lr / config.lr
                                        if config.lr else 0.0)
  elif config.schedule == "linear":
    decay = optax.linear_schedule(config.lr, config.end_lr, decay_steps)
  elif config.schedule == "constant":
    decay = optax.constant_schedule(config.lr)
  else:
    raise UserError(f"schedule={config.schedule!r} is not one of 'cosine', 'linear', "
                     f"'constant'.")
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), decay], [warmup])


def make_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The configured optimizer; parameter groups (`param_groups`) scale each parameter's
  learning rate and weight decay, and frozen parameters get no update and no state."""
  schedule = make_schedule(config)
  state_dtype = as_dtype(config.optimizer_dtype, "optimizer_dtype",
                         allowed=("float32", "bfloat16"))
  if config.optimizer == "adam":
    parts = [optax.scale_by_adam(b1=config.b1, b2=config.b2, mu_dtype=state_dtype)]
    if config.weight_decay:
      parts.append(param_groups.add_decayed_weights(config.weight_decay, config))
    optimizer = optax.chain(*parts, optax.scale_by_learning_rate(schedule))
  elif config.optimizer == "sgd":
    if config.weight_decay:
      raise UserError("The SGD fine-tuning recipe has no weight decay; set "
                       "weight_decay=0 or optimizer='adam'.")
    optimizer = optax.sgd(schedule, momentum=config.momentum, accumulator_dtype=state_dtype)
  else:
    raise UserError(f"optimizer={config.optimizer!r} is not one of 'adam', 'sgd'.")
  chain = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm else []
  multipliers = param_groups.lr_multiplier_fn(config)
  if multipliers is not None:
    optimizer = optax.chain(optimizer, param_groups.scale_by_multipliers(multipliers))
  tx = optax.chain(*chain, optimizer)
  frozen = param_groups.frozen_pattern(config)
  if frozen:  # clipping sees the trained gradients only.
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               param_groups.frozen_labels(frozen))
  return tx, schedule
