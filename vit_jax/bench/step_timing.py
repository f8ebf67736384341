"""Per-step wall times of a blocking step function: the distribution, not one number."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import jax


def time_steps(run: Callable[[], object], *, steps: int, warmup: int) -> dict:
  """Runs `run` warmup + steps times, each call blocked until its results are ready.

  Returns {'min', 'median', 'max', 'mean'} seconds per step; report the median (robust
  to a slow outlier on a shared machine).
  """
  for _ in range(warmup):
    jax.block_until_ready(run())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
  return {"min": min(times), "median": statistics.median(times), "max": max(times),
          "mean": statistics.fmean(times)}


def typical_seconds(timing: dict) -> float:
  """The number to report from `time_steps`' result (median), or from a loop timed only
  as a whole ('mean')."""
  return timing.get("median", timing["mean"])
