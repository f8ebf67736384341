"""Multi-process start-up (`jax.distributed`): one program for one host and for a pod."""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import sys
import threading
import time
from typing import Callable, Optional

import jax

from vit_jax.errors import UserError, first_line

def _multi_process_cluster() -> bool:
  if os.environ.get("SLURM_NTASKS", "1") not in ("", "1"):
    return True
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
    return True
  return "JAX_COORDINATOR_ADDRESS" in os.environ or "OMPI_COMM_WORLD_SIZE" in os.environ


def initialize(*, force: bool = False, coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None, process_id: Optional[int] = None,
               num_cpu_devices: Optional[int] = None,
               initialization_timeout: int = 60, heartbeat_timeout: int = 20) -> None:
  """Starts jax.distributed when asked (`force`, or a coordinator address) or when the
  environment is a multi-process cluster (SLURM, Open MPI, a Cloud TPU pod, or
  JAX_COORDINATOR_ADDRESS); with `force` and no address JAX finds the settings itself
  (Cloud TPU metadata, SLURM variables).

  A missing peer fails after `initialization_timeout` seconds; a peer that dies later
  makes the others fail after about `heartbeat_timeout` seconds: never a silent hang.
  """
  if num_cpu_devices:
    jax.config.update("jax_num_cpu_devices", num_cpu_devices)
  explicit = coordinator_address is not None
  if not (explicit or force or _multi_process_cluster()):
    return
  where = coordinator_address or "the coordinator from the cluster environment"
  message = (f"error: Could not start {num_processes or 'all'} processes with {where} within "
             f"{initialization_timeout}s: is every process started, with the same "
             f"--coordinator_address and --num_processes and a distinct --process_id?")
  # JAX aborts from C++ when a peer never registers, so Python cannot catch it: a watchdog
  # prints the actionable line and exits 2, a UserError's status, first (JAX's own
  # deadline is 10 s later).
  watchdog = threading.Timer(initialization_timeout, _exit_with, args=(message,))
  watchdog.daemon = True
  kwargs = dict(initialization_timeout=initialization_timeout + 10,
                heartbeat_timeout_seconds=3 * heartbeat_timeout + 10)  # _PeerWatch is first.
  if explicit:
    kwargs.update(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  watchdog.start()
  try:
    with _client_reports_failures_to(_on_client_failure):
      jax.distributed.initialize(**kwargs)
  except Exception as e:  # pylint: disable=broad-except  (XlaRuntimeError, gRPC errors)
    raise UserError(f"{message.removeprefix('error: ')} ({first_line(e)})") from None
  finally:
    watchdog.cancel()
  if jax.process_count() > 1:
    if jax.devices()[0].platform == "cpu":
      _GLOO_FILTER.append(_DropGlooLines())
    _WATCH.append(_PeerWatch(heartbeat_timeout))
    _WATCH[0].start()
    atexit.register(_WATCH[0].finish)  # runs before JAX's own shutdown (registered earlier).
    _on_cpp_terminate(on_runtime_failure)


_WATCH: list["_PeerWatch"] = []  # this process's peer watch, once started.
_GLOO_FILTER: list["_DropGlooLines"] = []


class _DropGlooLines:
  """gloo (the CPU collectives) prints '[Gloo] Rank N is connected to 1 peer ranks...'
  on file descriptor 1 from C++, each time a group of devices first communicates (lazily,
  mid-run): fd 1 becomes a pipe, and a thread forwards everything but that message to
  the real stdout. `close()` (at exit, or before an `os._exit`) drains it."""

  MESSAGE = re.compile(rb"\[Gloo\] Rank \d+ is connected to \d+ peer ranks\. Expected "
                       rb"number of connected peer ranks is : \d+")
  # The message's pieces: C++ writes each `<<` apart, so two gloo threads printing at once
  # interleave them ('[Gloo] Rank [Gloo] Rank 01 is connected to ...').
  PIECES = re.compile(rb"\[Gloo\] Rank|is connected to|peer ranks\.|Expected number of "
                      rb"connected peer ranks is :|[\d\s]")
  DRAINED = b"[vit_jax: drained]"  # written last by `close`: all before it was forwarded.

  def __init__(self):
    sys.stdout.flush()
    self._stdout = os.dup(1)
    read, write = os.pipe()
    os.dup2(write, 1)
    os.close(write)
    self._drained = threading.Event()
    self._thread = threading.Thread(target=self._forward, args=(read,), daemon=True,
                                    name="gloo-line-filter")
    self._thread.start()
    atexit.register(self.close)

  def _forward(self, read: int) -> None:
    pending = b""
    while chunk := os.read(read, 1 << 16):
      *lines, pending = (pending + chunk).split(b"\n")
      kept = []
      for line in lines:
        if line == self.DRAINED:
          self._drained.set()
          continue
        rest = self.MESSAGE.sub(b"", line)
        if b"[Gloo]" in rest and not self.PIECES.sub(b"", rest):
          rest = b""  # only pieces of the message, interleaved.
        if rest or line == rest:  # a line that was nothing but the message goes.
          kept.append(rest + b"\n")
      if kept:
        os.write(self._stdout, b"".join(kept))
    self._drained.set()

  def close(self) -> None:
    if self._stdout is None:
      return
    with contextlib.suppress(ValueError, OSError):
      sys.stdout.flush()
    # Input workers (and multiprocessing's resource tracker) may hold the pipe open too,
    # so the end is a marker, not end-of-file.
    os.write(1, b"\n" + self.DRAINED + b"\n")
    self._drained.wait(timeout=5)
    os.dup2(self._stdout, 1)
    self._stdout = None


def flush_console() -> None:
  """What this process printed reaches the terminal now (call before `os._exit`)."""
  for line_filter in _GLOO_FILTER:
    line_filter.close()


def on_runtime_failure(*unused_status) -> None:
  """The job failed under this process (its runtime client saw the service report a
  failure or go away, C++ is terminating, or a collective raised): if a peer died, says
  which in one line and exits 1; else returns, and the failure is reported as it is."""
  if _WATCH:
    _WATCH[0].report_dead_peers()


def _on_client_failure(*status) -> None:
  """The runtime client's failure callback (it replaces a fatal log): a dead peer is
  named; any other failure is one line too. Either way the process ends, as before."""
  on_runtime_failure()
  _exit_with(f"error: the distributed runtime reported a failure "
             f"({first_line(status[0]) if status else 'no detail'}); process "
             f"{jax.process_index()} stops. Completed checkpoints are intact: restart every "
             f"process with the same command to resume.", code=1)


@contextlib.contextmanager
def _client_reports_failures_to(callback: Callable):
  """Has `jax.distributed.initialize` create its runtime client with `callback` as the
  failure callback. JAX's default callback is a fatal log (a multi-line abort) the moment
  the coordinator's process dies. Where this jaxlib cannot hand the status to Python, the
  C++ cast error ends in `_on_cpp_terminate`'s handler, which reports the same way."""
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  runtime = jax_distributed._jax  # pylint: disable=protected-access

  class WithCallback:
    def __getattr__(self, name):
      return getattr(runtime, name)

    @staticmethod
    def get_distributed_runtime_client(*args, **kwargs):
      try:
        return runtime.get_distributed_runtime_client(
            *args, missed_heartbeat_callback=callback, **kwargs)
      except TypeError:  # a jaxlib without the argument: its default stays.
        return runtime.get_distributed_runtime_client(*args, **kwargs)

  jax_distributed._jax = WithCallback()  # pylint: disable=protected-access
  try:
    yield
  finally:
    jax_distributed._jax = runtime  # pylint: disable=protected-access


class _PeerWatch(threading.Thread):
  """A peer that hangs, or dies while the others wait in a collective, would be found only
  by the coordination service's heartbeat, which ends every other process with a fatal
  log (a thread dump, no word on what to do). This watch finds it first: each process stamps a counter in the service's key-value
  store every second and reads the others'; a peer whose stamp has not moved for
  `timeout` seconds is gone, and this process says so in one line and exits 1. JAX's own
  heartbeat deadline is set well beyond it. A process that ends normally stamps 'done'."""

  def __init__(self, timeout: int):
    super().__init__(daemon=True, name="vit_jax-peer-watch")
    from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
    self.client = jax_distributed.global_state.client
    self.timeout, self.index = timeout, jax.process_index()
    self.peers = [p for p in range(jax.process_count()) if p != self.index]
    self._reporting = threading.Lock()

  def _stamp(self, value: str) -> None:
    _within(2, self.client.key_value_set, f"vit_jax/alive/{self.index}", value,
            allow_overwrite=True)

  def _read(self, peer: int):
    try:
      return _within(2, self.client.key_value_try_get, f"vit_jax/alive/{peer}")
    except Exception:  # pylint: disable=broad-except  (not stamped yet, or the service gone)
      return None

  def run(self) -> None:
    seen = {peer: (None, time.monotonic()) for peer in self.peers}
    beat = 0
    while True:
      beat += 1
      try:
        self._stamp(str(beat))
      except Exception:  # pylint: disable=broad-except  (the coordinator itself is gone)
        pass
      now = time.monotonic()
      for peer in self.peers:
        value = self._read(peer)
        if value == "done":
          continue
        if value != seen[peer][0]:
          seen[peer] = (value, now)
        elif now - seen[peer][1] > self.timeout:
          self._stop(f"process {peer} stopped responding for {self.timeout}s (it died or "
                     f"hangs)")
      time.sleep(1)

  def _stop(self, what: str) -> None:
    _exit_with(f"error: {what}; process {self.index} stops too. Completed checkpoints are "
               f"intact: restart every process with the same command to resume.", code=1)

  def silent_peers(self, wait: float) -> list[int]:
    """The peers whose stamps do not move in `wait` seconds (they stamp every second);
    [0] when the key-value store, which lives in process 0, is gone with it."""
    def stamps():
      return {peer: self.client.key_value_try_get(f"vit_jax/alive/{peer}")
              for peer in self.peers}
    try:
      before = _within(3, stamps)
      time.sleep(wait)
      after = _within(3, stamps)
    except Exception:  # pylint: disable=broad-except  (unreachable: its calls hang or fail)
      return [0] if self.index != 0 else []
    return [peer for peer in self.peers if after[peer] == before[peer] != "done"]

  def report_dead_peers(self) -> None:
    """If a peer's stamps stopped: names it in one line and exits 1 (never returns). One
    caller at a time: the collective's error and the runtime's may arrive together."""
    with self._reporting:
      dead = self.silent_peers(wait=2.5)
      if dead:
        self._stop(f"process {', '.join(map(str, dead))} died (its connections closed)")

  def finish(self) -> None:
    try:
      self._stamp("done")
    except Exception:  # pylint: disable=broad-except
      pass


def _within(seconds: float, fn: Callable, *args, **kwargs):
  """fn(*args, **kwargs), or TimeoutError after `seconds`: a call to the coordination
  service of a dead process 0 waits for it to come back, i.e. forever."""
  result, error = [], []

  def call():
    try:
      result.append(fn(*args, **kwargs))
    except Exception as e:  # pylint: disable=broad-except
      error.append(e)
  thread = threading.Thread(target=call, daemon=True)
  thread.start()
  thread.join(seconds)
  if error:
    raise error[0]
  if not result:
    raise TimeoutError(f"no answer in {seconds}s")
  return result[0]


_TERMINATE_HANDLER = None  # the installed ctypes callback (must outlive the process).


def _on_cpp_terminate(report: Callable[[], bool]) -> None:
  """On CPU, collectives run over gloo, which throws from its own thread the moment a
  peer's connection drops; C++ then terminates the process (an abort and a thread dump,
  before any Python runs). This puts `report` in front of C++'s terminate handler (one
  for the whole process, in libstdc++, which jaxlib uses): it names a dead peer in one
  line and exits; if it finds none, the original handler runs as before."""
  global _TERMINATE_HANDLER
  try:
    set_terminate = ctypes.CDLL("libstdc++.so.6")._ZSt13set_terminatePFvvE
  except (OSError, AttributeError):  # another C++ runtime (macOS): keep its behaviour.
    return
  handler_type = ctypes.CFUNCTYPE(None)
  set_terminate.restype, set_terminate.argtypes = ctypes.c_void_p, [handler_type]
  previous = []

  def on_terminate():
    try:
      report()
    except BaseException:  # pylint: disable=broad-except  (fall through to C++'s report)
      pass
    if previous and previous[0]:
      handler_type(previous[0])()
    os.abort()

  _TERMINATE_HANDLER = handler_type(on_terminate)
  previous.append(set_terminate(_TERMINATE_HANDLER))


def _exit_with(message: str, code: int = 2) -> None:
  print(message, file=sys.stderr, flush=True)
  flush_console()
  os._exit(code)  # pylint: disable=protected-access
