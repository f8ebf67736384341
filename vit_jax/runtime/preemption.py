"""Stopping on request: SIGTERM (Cloud TPU maintenance, SLURM preemption) and SIGINT
(Ctrl-C) stop training at a step boundary, save and exit 0; a second Ctrl-C exits at
once. A signal that arrives before training has started (during set-up or compiling)
stops the run at the next phase boundary, with one line and nothing written.

One process: our own handlers. Several: SIGTERM through JAX's preemption sync point, so
that all processes agree on the step at which they stop and save.
"""
from __future__ import annotations

import signal
import threading
from typing import Optional

from vit_jax.errors import UserError

_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT (Ctrl-C)"}


class StopRequested(UserError):
  """A signal stopped the run before its first step; nothing to save."""

  # Nothing was written: the command may end the process at once (a compile thread
  # may still be running; waiting for it is what the signal asked not to do).
  exit_now = True

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


class InterruptedAgain(KeyboardInterrupt):
  """A second Ctrl-C: stop now, without saving (a KeyboardInterrupt: no `except
  Exception` on the way out holds it up)."""


class StopWatcher:
  """Installed for a whole run (`with StopWatcher() as stop:`); `check_before_start()`
  at phase boundaries, `reached(step)` in the loop."""

  def __init__(self, *, process_count: int = 1):
    self.process_count = process_count
    self.signal: Optional[int] = None
    self._previous: dict[int, object] = {}

  def __enter__(self) -> "StopWatcher":
    if threading.current_thread() is threading.main_thread():
      signals = (signal.SIGTERM, signal.SIGINT) if self.process_count == 1 else (signal.SIGINT,)
      for signum in signals:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def _handle(self, signum, frame) -> None:
    del frame
    if signum == signal.SIGINT and self.signal == signal.SIGINT:
      raise InterruptedAgain("interrupted again (Ctrl-C twice): stopped at once, without "
                             "saving; the newest checkpoint is intact. Run the same command "
                             "to resume from it.")
    self.signal = signum

  @property
  def name(self) -> str:
    return _NAMES.get(self.signal, "a signal")

  def check_before_start(self) -> None:
    """Raises StopRequested if a signal came before the first step."""
    if self.signal is not None:
      code = 130 if self.signal == signal.SIGINT else 0
      raise StopRequested(f"Stopped by {self.name} before the first step: nothing was "
                          f"trained or saved. Run the same command to start again.", code)

  def reached(self, step: int) -> bool:
    """Whether to stop (and save) at this step; every process agrees."""
    if self.process_count > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        if multihost_utils.reached_preemption_sync_point(step):
          self.signal = signal.SIGTERM
          return True
      except RuntimeError:  # no preemption service (e.g. not a managed cluster).
        pass
      return False
    return self.signal is not None
