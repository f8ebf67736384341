"""Fixes for known breaks in pinned-by-circumstance dependencies, applied on import.

clu 0.0.12 (its only release) calls `jnp.clip(x, a_min=0.0)` in `metrics.Std.compute`;
current jax removed `a_min` (fixed upstream in clu, never released). vit_jax computes its
own metrics in the step, but users combining clu metrics with vit_jax would hit it, so we
replace that one method when, and only when, the installed clu has the old code.
"""
from __future__ import annotations

import inspect

import jax.numpy as jnp


def _std_compute(self):
  mean = self.total / self.count
  variance = self.sum_of_squares / self.count - mean**2
  # Never negative mathematically; rounding can make it so.
  return jnp.maximum(variance, 0.0) ** 0.5


def patch_clu_std() -> bool:
  """Returns True if clu's Std.compute needed (and got) the fix."""
  try:
    from clu import metrics  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  try:
    needs_fix = "a_min" in inspect.getsource(metrics.Std.compute)
  except (OSError, TypeError):
    return False
  if needs_fix:
    metrics.Std.compute = _std_compute
  return needs_fix


patch_clu_std()
