"""One training run per workdir: two runs writing the same checkpoints and metrics would
corrupt each other (as a relaunch while the first run is still saving does). Process 0
holds the lock for the run's lifetime.

- A local workdir: an exclusive `flock` on WORKDIR/.lock; the kernel drops it when the
  process ends, however it ends, so a crash leaves no stale lock.
- A bucket workdir (gs://): the object WORKDIR/.lock, created only if absent (a
  generation precondition, so two starts cannot both win) and rewritten every
  `REFRESH_SECONDS` while the run lives. A lock not refreshed for `STALE_SECONDS`, or
  one held on this host by a process that no longer exists (a run killed with -9), is
  taken over with one warning. A run whose lock was taken over stops at its next step.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from typing import Iterator, Optional

from vit_jax import console, storage
from vit_jax.errors import UserError
from vit_jax.runtime import processes

LOCK_FILE = ".lock"
REFRESH_SECONDS = 20.0
STALE_SECONDS = 120.0


def _busy(workdir, owner: str) -> UserError:
  return UserError(f"Another run is training in {workdir} ({owner}); two runs in one "
                   f"workdir would overwrite each other's checkpoints. Wait for it to "
                   f"finish, stop it, or use another --workdir.")


class _Held:
  """A held lock; `check()` raises when it has been lost (bucket locks only)."""

  def check(self) -> None:
    pass


@contextlib.contextmanager
def held(workdir, *, is_first_process: Optional[bool] = None) -> Iterator[_Held]:
  if is_first_process is None:
    import jax  # pylint: disable=g-import-not-at-top  (a lock needs no JAX otherwise)
    is_first_process = jax.process_index() == 0
  if not is_first_process:  # one lock per run; the other processes share its workdir.
    yield _Held()
    return
  manager = _bucket_lock if storage.is_remote(workdir) else _local_lock
  with manager(storage.path(workdir)) as lock:
    yield lock


def _owner_text() -> str:
  return f"pid {os.getpid()} on {socket.gethostname()}"


@contextlib.contextmanager
def _local_lock(workdir) -> Iterator[_Held]:
  workdir.mkdir(parents=True, exist_ok=True)
  with open(os.fspath(workdir / LOCK_FILE), "a+") as f:  # flock: local files only.
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      raise _busy(workdir, f.read().strip() or "another process") from None
    f.seek(0)
    f.truncate()
    f.write(_owner_text() + "\n")
    f.flush()
    try:
      yield _Held()
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


class _BucketLock(_Held):
  """The lock object in a bucket (Google Cloud Storage's generation preconditions)."""

  def __init__(self, workdir):
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
    from google.cloud import storage as gcs  # pylint: disable=g-import-not-at-top
    self.exceptions = exceptions
    bucket, _, prefix = os.fspath(workdir).split("://", 1)[1].partition("/")
    self.name = f"{prefix.rstrip('/')}/{LOCK_FILE}" if prefix else LOCK_FILE
    self.where = workdir
    self.bucket = gcs.Client().bucket(bucket)
    self.generation: Optional[int] = None
    self.lost: Optional[str] = None
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._refresh_forever, daemon=True)

  def _content(self) -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})

  def _upload(self, if_generation_match: int) -> None:
    blob = self.bucket.blob(self.name)
    blob.upload_from_string(self._content(), if_generation_match=if_generation_match)
    self.generation = blob.generation

  def acquire(self) -> None:
    try:
      self._upload(if_generation_match=0)
    except self.exceptions.PreconditionFailed:
      self._take_over_if_stale()
    self._thread.start()

  def _take_over_if_stale(self) -> None:
    blob = self.bucket.get_blob(self.name)
    if blob is None:  # released in between: try again from the start.
      return self.acquire()
    try:
      owner = json.loads(blob.download_as_text())
    except (ValueError, self.exceptions.NotFound):
      owner = {}
    text = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
    age = time.time() - float(owner.get("time", 0))
    dead_here = owner.get("host") == socket.gethostname() and not processes.is_running(owner.get("pid"))
    if not dead_here and age < STALE_SECONDS:
      raise _busy(self.where, f"{text}, its lock refreshed {age:.0f}s ago")
    try:
      self._upload(if_generation_match=blob.generation)
    except self.exceptions.PreconditionFailed:
      raise _busy(self.where, "another process took its lock just now") from None
    why = "that process no longer exists" if dead_here else f"not refreshed for {age:.0f}s"
    console.warn(f"took over the workdir lock of {self.where} from {text} ({why}).")

  def _refresh_forever(self) -> None:
    while not self._stop.wait(REFRESH_SECONDS):
      try:
        self._upload(if_generation_match=self.generation)
      except self.exceptions.PreconditionFailed:
        self.lost = "another run took over this workdir's lock"
        return
      except Exception:  # pylint: disable=broad-except  (a network blip: retry next time)
        continue

  def check(self) -> None:
    if self.lost:
      raise UserError(f"Stopped: {self.lost} ({self.where}); two runs must not write one "
                      f"workdir. The checkpoints so far are intact.")

  def release(self) -> None:
    self._stop.set()
    if self.lost is None and self.generation is not None:
      with contextlib.suppress(Exception):
        self.bucket.blob(self.name).delete(if_generation_match=self.generation)


@contextlib.contextmanager
def _bucket_lock(workdir) -> Iterator[_Held]:
  storage.check_client(workdir)
  try:
    lock = _BucketLock(workdir)
  except ImportError:
    raise UserError(f"{workdir}: a bucket workdir's lock needs google-cloud-storage: "
                    f"pip install 'vit_jax[gcs]'") from None
  lock.acquire()
  try:
    yield lock
  finally:
    lock.release()
