"""Multi-process start-up (`jax.distributed`): one program for one host and for a pod."""
from __future__ import annotations

import contextlib
import os
import sys
import threading
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
                heartbeat_timeout_seconds=heartbeat_timeout)
  if explicit:
    kwargs.update(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  watchdog.start()
  try:
    with _peer_failure_as_one_line():
      jax.distributed.initialize(**kwargs)
  except Exception as e:  # pylint: disable=broad-except  (XlaRuntimeError, gRPC errors)
    raise UserError(f"{message.removeprefix('error: ')} ({str(e).splitlines()[0]})") from None
  finally:
    watchdog.cancel()


@contextlib.contextmanager
def _peer_failure_as_one_line():
  """A peer that dies mid-run is reported by the coordination service to every other
  process, whose runtime client then aborts the process from C++ (SIGABRT, a thread dump).
  The client takes a callback for that moment; JAX does not expose it, so it is passed here
  while `jax.distributed.initialize` creates the client (left as it is if the private
  hook is not there)."""
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  lib = getattr(jax_distributed, "_jax", None)
  create = getattr(lib, "get_distributed_runtime_client", None)
  if create is None:
    yield
    return

  def create_with_callback(*args, **kwargs):
    kwargs.setdefault("missed_heartbeat_callback", _on_peer_failure)
    return create(*args, **kwargs)
  lib.get_distributed_runtime_client = create_with_callback
  try:
    yield
  finally:
    lib.get_distributed_runtime_client = create


def _on_peer_failure(status=None, *unused) -> None:
  detail = str(status).strip().splitlines()[0][:200] if status is not None else ""
  _exit_with(f"error: process {jax.process_index()} lost contact with the other processes "
             f"(a peer died or hung{': ' + detail if detail else ''}); it stops too. "
             f"Completed checkpoints are intact: restart every process with the same command "
             f"to resume.", code=1)


def _exit_with(message: str, code: int = 2) -> None:
  print(message, file=sys.stderr, flush=True)
  os._exit(code)  # pylint: disable=protected-access
