"""One training run per workdir: two runs writing the same checkpoints and metrics would
corrupt each other (as a relaunch while the first run is still saving does). Process 0
holds an exclusive `flock` on WORKDIR/.lock for the run's lifetime; the kernel drops it
when the process ends, however it ends, so a crash leaves no stale lock."""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from typing import Iterator

import jax

from vit_jax.errors import UserError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def held(workdir: str) -> Iterator[None]:
  if jax.process_index() != 0:  # one lock per run; the other processes share its workdir.
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, LOCK_FILE), "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      owner = f.read().strip() or "another process"
      raise UserError(f"Another run is training in {workdir} ({owner}); two runs in one "
                      f"workdir would overwrite each other's checkpoints. Wait for it to "
                      f"finish, stop it, or use another --workdir.") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
