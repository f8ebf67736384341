"""Multi-process start-up (`jax.distributed`): one program for one host and for a pod."""
from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from typing import Optional

import jax

from vit_jax.errors import UserError

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
    jax.distributed.initialize(**kwargs)
  except Exception as e:  # pylint: disable=broad-except  (XlaRuntimeError, gRPC errors)
    raise UserError(f"{message.removeprefix('error: ')} ({str(e).splitlines()[0]})") from None
  finally:
    watchdog.cancel()
  if jax.process_count() > 1:
    watch = _PeerWatch(heartbeat_timeout)
    watch.start()
    atexit.register(watch.finish)  # runs before JAX's own shutdown (registered earlier).


class _PeerWatch(threading.Thread):
  """A peer that dies mid-run is found by the coordination service's heartbeat, which then
  aborts every other process from C++ (SIGABRT, a thread dump, no word on what to do).
  This watch finds it first: each process stamps a counter in the service's key-value
  store every second and reads the others'; a peer whose stamp has not moved for
  `timeout` seconds is gone, and this process says so in one line and exits 1. JAX's own
  heartbeat deadline is set well beyond it. A process that ends normally stamps 'done'."""

  def __init__(self, timeout: int):
    super().__init__(daemon=True, name="vit_jax-peer-watch")
    from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
    self.client = jax_distributed.global_state.client
    self.timeout, self.index = timeout, jax.process_index()
    self.peers = [p for p in range(jax.process_count()) if p != self.index]

  def _stamp(self, value: str) -> None:
    self.client.key_value_set(f"vit_jax/alive/{self.index}", value, allow_overwrite=True)

  def _read(self, peer: int):
    try:
      return self.client.key_value_try_get(f"vit_jax/alive/{peer}")
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
          _exit_with(f"error: process {peer} stopped responding for {self.timeout}s (it died "
                     f"or hangs); process {self.index} stops too. Completed checkpoints are "
                     f"intact: restart every process with the same command to resume.", code=1)
      time.sleep(1)

  def finish(self) -> None:
    try:
      self._stamp("done")
    except Exception:  # pylint: disable=broad-except
      pass


def _exit_with(message: str, code: int = 2) -> None:
  print(message, file=sys.stderr, flush=True)
  os._exit(code)  # pylint: disable=protected-access
