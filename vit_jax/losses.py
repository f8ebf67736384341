"""Losses and top-1 hits on logits, shared by the train step and the evaluators."""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from vit_jax.errors import UserError

LOSSES = ("softmax", "sigmoid")


def one_hot_labels(labels: jax.Array, num_classes: int) -> jax.Array:
  """Integer labels -> one-hot; multi-hot float labels pass through."""
  if jnp.issubdtype(labels.dtype, jnp.integer):
    return jax.nn.one_hot(labels, num_classes)
  return labels.astype(jnp.float32)


def loss_fn(logits: jax.Array, labels: jax.Array, *, kind: str,
            label_smoothing: float = 0.0) -> jax.Array:
  """Per-example loss. 'softmax': cross-entropy; 'sigmoid': multi-label binary
  cross-entropy summed over classes (ImageNet-21k / JFT pre-training)."""
  targets = one_hot_labels(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  if kind == "softmax":
    return optax.softmax_cross_entropy(logits, targets)
  if kind == "sigmoid":
    return optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1)
  raise UserError(f"loss={kind!r} is not one of {list(LOSSES)}.")


def correct_predictions(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Top-1 hits (float 0/1): the argmax is the label, or is among the labels of a
  multi-hot row (multi-label pre-training, ImageNet-ReaL)."""
  predicted = jnp.argmax(logits, axis=-1)
  if jnp.issubdtype(labels.dtype, jnp.integer):
    return (predicted == labels).astype(jnp.float32)
  return (jnp.take_along_axis(labels, predicted[:, None], axis=-1)[:, 0] > 0).astype(jnp.float32)


def chance_loss(loss: str, num_classes: Optional[int]) -> Optional[float]:
  """The loss of a uniform guess: ln C for softmax cross-entropy (whatever the targets:
  smoothed or mixed labels too); None where it depends on the labels (sigmoid)."""
  if loss == "softmax" and num_classes and num_classes > 1:
    return math.log(num_classes)
  return None
