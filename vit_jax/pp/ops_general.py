"""Built-in ops on fields other than the image."""
from __future__ import annotations

import numpy as np

from vit_jax.pp.registry import register


@register("multi_hot", key="label")
def multi_hot(num_classes: int):
  """A list of labels (multi-label pre-training) -> a {0, 1} vector."""
  def op(labels, rng):
    out = np.zeros(num_classes, np.float32)
    out[np.asarray(labels, np.int64).reshape(-1)] = 1.0
    return out
  return op
