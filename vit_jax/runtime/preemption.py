"""Preemption: SIGTERM (Cloud TPU maintenance, SLURM preemption) stops training at a step
boundary that every process agrees on, so the run saves and exits cleanly."""
from __future__ import annotations

import signal
import threading

import jax


class PreemptionWatcher:
  """SIGTERM (Cloud TPU maintenance, SLURM preemption) -> stop at the next step boundary.

  One process: our own SIGTERM handler. Several: JAX's preemption sync point, so that all
  processes agree on the step at which they stop and save.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._flag.set())

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # no preemption service (e.g. not a managed cluster).
        return False
    return self._flag.is_set()

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
