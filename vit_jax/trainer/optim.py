"""Optimizers and learning-rate schedules from the config (optax).

Pre-training: Adam(b1, b2) with decoupled weight decay, AdamW-style (the decay is scaled by
the learning rate, as in the official code) and applied to weight matrices only
(`*/kernel` of ndim >= 2): biases, LayerNorm scales, position embeddings and the class
token are not decayed. Fine-tuning: SGD with momentum, no weight decay. Both: gradient
clipping at a global norm first, optimizer state (Adam's first moment / SGD's momentum)
optionally in bfloat16.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax
from flax import traverse_util

from vit_jax.errors import UserError
from vit_jax.models.hparams import as_dtype


def make_schedule(config) -> optax.Schedule:
  """Linear warm-up from 0 to `lr`, then cosine / linear decay to `end_lr` at total_steps."""
  warmup, total = int(config.warmup_steps), int(config.total_steps)
  if not 0 <= warmup < total:
    raise UserError(f"warmup_steps={warmup} must be in [0, total_steps={total}).")
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


def weight_decay_mask(params: Any) -> Any:
  """True for weight matrices (kernels with ndim >= 2), False for everything else."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {path: path[-1] == "kernel" and jnp.ndim(value) >= 2 for path, value in flat.items()})


def make_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = make_schedule(config)
  state_dtype = as_dtype(config.optimizer_dtype, "optimizer_dtype",
                         allowed=("float32", "bfloat16"))
  if config.optimizer == "adam":
    optimizer = optax.adamw(schedule, b1=config.b1, b2=config.b2, mu_dtype=state_dtype,
                            weight_decay=config.weight_decay, mask=weight_decay_mask)
  elif config.optimizer == "sgd":
    if config.weight_decay:
      raise UserError("The SGD fine-tuning recipe has no weight decay; set "
                       "weight_decay=0 or optimizer='adam'.")
    optimizer = optax.sgd(schedule, momentum=config.momentum, accumulator_dtype=state_dtype)
  else:
    raise UserError(f"optimizer={config.optimizer!r} is not one of 'adam', 'sgd'.")
  chain = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm else []
  return optax.chain(*chain, optimizer), schedule
