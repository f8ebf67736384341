"""The host's view of the per-step metrics fetched at each log point: the non-finite check
that guards every checkpoint, and the averages that are logged."""
from __future__ import annotations

import numpy as np

from vit_jax.errors import UserError


class NonFiniteStepError(UserError, FloatingPointError):
  """A step's loss, gradient norm or updated parameters are not finite."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


def remedies(config) -> str:
  """What to try, given what the config already does."""
  fixes = [f"lower the learning rate (lr={config.lr:g})"]
  if not config.grad_clip_norm:
    fixes.append("enable grad_clip_norm (e.g. 1.0)")
  if config.get("on_divergence", "stop") != "rollback":
    fixes.append("set on_divergence='rollback' to resume from the newest healthy "
                 "checkpoint automatically")
  if not config.skip_nonfinite_steps:
    fixes.append("set skip_nonfinite_steps=True to drop such updates")
  fixes.append("check the input data")
  return ", ".join(fixes[:-1]) + " or " + fixes[-1]


def first_nonfinite(history: list[tuple[int, dict]]):
  """(step, metrics) of the first non-finite step in `history`, or None."""
  return next(((step, values) for step, values in history if values["nonfinite"]), None)


def nonfinite_error(step: int, values: dict, config) -> NonFiniteStepError:
  return NonFiniteStepError(
      f"Non-finite training step {step} (loss {float(values['train_loss']):.4g}, grad norm "
      f"{float(values['grad_norm']):.4g}, or the updated parameters): it was not "
      f"checkpointed; running the same command resumes from the newest healthy "
      f"checkpoint. To avoid it: {remedies(config)}.", step)


def mean_metrics(history: list[tuple[int, dict]], *, skip_nonfinite: bool) -> dict:
  """Per-step metrics averaged over the finite steps; the learning rate is the current
  one, not a window mean. With `skip_nonfinite`, 'skipped_steps' counts the window's
  dropped updates."""
  good = [values for _, values in history if not values["nonfinite"]] or [history[-1][1]]
  means = {key: float(np.mean([v[key] for v in good])) for key in good[0]
           if key not in ("nonfinite", "learning_rate")}
  means["learning_rate"] = float(history[-1][1]["learning_rate"])
  if skip_nonfinite:
    means["skipped_steps"] = float(sum(bool(values["nonfinite"]) for _, values in history))
  return means


def to_record(history: list[tuple[int, dict]]) -> dict:
  """Fetched per-step metrics as JSON (a stop's window not yet logged, kept with its
  checkpoint): values, and their dtypes so that `from_record` gives back the same numbers."""
  dtypes = {k: np.asarray(v).dtype.name for k, v in history[0][1].items()} if history else {}
  return {"dtypes": dtypes,
          "steps": [[step, {k: np.asarray(v).item() for k, v in values.items()}]
                    for step, values in history]}


def from_record(record: dict | None) -> list[tuple[int, dict]]:
  if not record:
    return []
  dtypes = record["dtypes"]
  return [(int(step), {k: np.asarray(v, dtype=dtypes[k]) for k, v in values.items()})
          for step, values in record["steps"]]
