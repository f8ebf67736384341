"""What the console shows of a run: progress lines (bar, loss, lr, img/s, ETA, MFU), eval
lines and the final summary."""
from __future__ import annotations

import time
from typing import Mapping, Optional


class Progress:
  """Steps/s, images/s, ETA and MFU between two log points. Timing starts after the first
  step, so neither compilation nor the input pipeline's warm-up inflates the ETA."""

  def __init__(self, *, total_steps: int, start_step: int, batch_size: int,
               flops_per_step: Optional[float], peak_flops: Optional[float]):
    self.total_steps, self.batch_size = total_steps, batch_size
    self.flops_per_step, self.peak_flops = flops_per_step, peak_flops
    self._last_step, self._last_time = start_step, None

  def exclude(self, seconds: float) -> None:
    """Time spent on other work since the last log point (a save, an evaluation): not
    training, so not in the rate."""
    if self._last_time is not None:
      self._last_time += seconds

  def measure(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    if self._last_time is None:  # the first step: the clock starts now.
      self._last_step, self._last_time = step, now
      return {}
    elapsed, steps = now - self._last_time, step - self._last_step
    self._last_step, self._last_time = step, now
    if steps <= 0 or elapsed <= 0:
      return {}
    rate = steps / elapsed
    out = {"steps_per_sec": rate, "images_per_sec": rate * self.batch_size,
           "eta_seconds": (self.total_steps - step) / rate}
    if self.flops_per_step and self.peak_flops:
      out["mfu"] = rate * self.flops_per_step / self.peak_flops
    return out

  @staticmethod
  def line(step: int, total: int, metrics: Mapping[str, float], width: int = 20) -> str:
    """'[#####---------------] step 200/800 | loss 0.9455 | lr 0.00272 | ...'"""
    done = int(width * step / max(total, 1))
    eta = metrics.get("eta_seconds")
    skipped = metrics.get("skipped_images")
    parts = [f"[{'#' * done}{'-' * (width - done)}] step {step}/{total}",
             f"loss {metrics['train_loss']:.4f}" if "train_loss" in metrics else "",
             f"lr {metrics['learning_rate']:.3g}" if "learning_rate" in metrics else "",
             f"{metrics['images_per_sec']:,.0f} img/s" if "images_per_sec" in metrics else "",
             f"ETA {_duration(eta)}" if eta is not None else "",
             f"MFU {metrics['mfu']:.1%}" if "mfu" in metrics else "",  # n/a: said once.
             f"{int(skipped)} unreadable image(s) skipped" if skipped else "",
             f"{int(metrics['skipped_steps'])} non-finite step(s) skipped"
             if metrics.get("skipped_steps") else ""]
    return " | ".join(p for p in parts if p)


def _duration(seconds: float) -> str:
  return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400 else \
      f"{seconds / 86400:.1f} days"


def summary_line(*, steps: int, seconds: float, batch_size: int,
                 final_eval: Mapping[str, float], checkpoint_dir, skipped_steps: int = 0) -> str:
  """The run's last line: what was done, how fast, how well, and where it is."""
  rate = steps * batch_size / seconds if seconds > 0 else 0.0
  results = ", ".join(f"{k} {v:.4f}" for k, v in sorted(final_eval.items())
                      if not k.endswith("examples"))
  skipped = (f" ({skipped_steps} of them skipped as non-finite: their updates were dropped)"
             if skipped_steps else "")
  short = [_short_split(key[:-len("_skipped_examples")], final_eval)
           for key, value in sorted(final_eval.items())
           if key.endswith("_skipped_examples") and value]
  return (f"Done: {steps} steps{skipped} in {_duration(seconds)} ({rate:,.0f} img/s)"
          f"{'; ' + results if results else ''}{''.join('; ' + s for s in short)}; "
          f"checkpoints in {checkpoint_dir}")


def _short_split(name: str, scalars: Mapping[str, float]) -> str:
  """'test on 50 of 51 examples (1 unreadable, skipped)'."""
  used, skipped = int(scalars.get(f"{name}_examples", 0)), int(scalars[f"{name}_skipped_examples"])
  return f"{name} on {used} of {used + skipped} examples ({skipped} unreadable, skipped)"


def eval_line(step: int, scalars: Mapping[str, float],
              shown: Optional[dict[str, float]] = None) -> str:
  """'eval step 400: fewshot_5shot_accuracy 0.9100, test_accuracy 0.9721, ...'. With
  `shown` (kept by the caller across a run's evals), example counts appear when they
  first appear or change, not on every line."""
  def text(key: str, value: float) -> str:
    return f"{key} {int(value)}" if key.endswith("examples") else f"{key} {value:.4f}"
  items = sorted(scalars.items())
  if shown is not None:
    items = [(k, v) for k, v in items if not k.endswith("examples") or shown.get(k) != v]
    shown.update({k: v for k, v in scalars.items() if k.endswith("examples")})
  return f"eval step {step}: " + ", ".join(text(k, v) for k, v in items)
