"""Processes of this host: is one still running, and ending a helper process when the
process that started it dies (input workers must never outlive the trainer, even one
killed with SIGKILL, which runs no cleanup)."""
from __future__ import annotations

import os
import threading


def is_running(pid) -> bool:
  """Whether process `pid` of this host runs (a zombie, killed but not yet reaped, does
  not)."""
  try:
    os.kill(int(pid), 0)
  except (ProcessLookupError, ValueError, TypeError):
    return False
  except PermissionError:
    return True
  try:
    with open(f"/proc/{int(pid)}/stat") as f:  # Linux: the state follows the name.
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (OSError, IndexError):
    return True


def exit_when_gone(pid: int, *, poll_seconds: float = 0.5) -> None:
  """From a helper process: a daemon thread that ends this process as soon as process
  `pid` (its owner) is no longer running."""
  def watch():
    stop = threading.Event()
    while not stop.wait(poll_seconds):
      if not is_running(pid):
        os._exit(0)  # pylint: disable=protected-access  (no cleanup: the owner is gone)
  threading.Thread(target=watch, daemon=True, name=f"exit-when-{pid}-gone").start()
