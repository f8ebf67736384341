"""The host's view of the per-step metrics fetched at each log point: the non-finite check
that guards every checkpoint, and the averages that are logged."""
from __future__ import annotations

import numpy as np

from vit_jax.errors import UserError


class NonFiniteStepError(UserError, FloatingPointError):
  pass


def check_finite(history: list[tuple[int, dict]], *, skip_nonfinite: bool) -> None:
  """Stops the run at the first non-finite step (unless such steps are skipped). Runs
  before every checkpoint, so a poisoned state is never saved."""
  bad = [(step, values) for step, values in history if values["nonfinite"]]
  if bad and not skip_nonfinite:
    step, values = bad[0]
    raise NonFiniteStepError(
        f"Non-finite training step {step} (loss {float(values['train_loss']):.4g}, grad norm "
        f"{float(values['grad_norm']):.4g}, or the updated parameters): it was not "
        f"checkpointed; the newest checkpoint is the last finite state. Lower the learning "
        f"rate, enable grad_clip_norm, check the input data or set skip_nonfinite_steps=True.")


def mean_metrics(history: list[tuple[int, dict]], *, skip_nonfinite: bool) -> dict:
  """Per-step metrics averaged over the finite steps; the learning rate is the current
  one, not a window mean."""
  good = [values for _, values in history if not values["nonfinite"]] or [history[-1][1]]
  means = {key: float(np.mean([v[key] for v in good])) for key in good[0]
           if key not in ("nonfinite", "learning_rate")}
  means["learning_rate"] = float(history[-1][1]["learning_rate"])
  if skip_nonfinite:
    means["skipped_steps"] = float(sum(bool(values["nonfinite"]) for _, values in history))
  return means
