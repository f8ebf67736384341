"""Everything about a run that can be checked before any compiling, each with one line that
names the bad value and the fix: a run refused here leaves nothing behind."""
from __future__ import annotations

import os

from vit_jax import objectives, storage
from vit_jax.runtime import workdir as workdir_lib
from vit_jax.trainer import wandb_writer
from vit_jax.errors import UserError

_POSITIVE = ("total_steps", "batch_size", "eval_batch_size", "log_every", "checkpoint_every",
             "keep_checkpoints", "accum_steps")


def check_config(config) -> None:
  for field in _POSITIVE:
    value = config[field]
    if not isinstance(value, int) or value <= 0:
      raise UserError(f"{field}={value!r} must be a positive integer.")
  if config.input_workers < -1:
    raise UserError(f"input_workers={config.input_workers} must be -1 (automatic), 0 (no "
                    f"worker processes) or a number of processes.")
  wandb_writer.check(config)
  objectives.create(config).check(config)  # it exists, its settings and evaluators fit.
  ema = float(config.get("ema_decay") or 0.0)
  if not 0 <= ema < 1:
    raise UserError(f"ema_decay={ema} must be in [0, 1) (0: off; 0.999-0.9999 is usual).")
  if config.on_divergence not in ("stop", "rollback"):
    raise UserError(f"on_divergence={config.on_divergence!r} is not one of 'stop', "
                    f"'rollback'.")
  for field in ("rollback_skip_batches", "max_rollbacks"):
    if not isinstance(config[field], int) or config[field] < 0:
      raise UserError(f"{field}={config[field]!r} must be a non-negative integer.")
  if config.get("resume_step") is not None and config.resume_step < 0:
    raise UserError(f"resume_step={config.resume_step} must be a step of a saved checkpoint.")


def check_storage(workdir: str, *, state_bytes: int) -> None:
  """Before compiling: the checkpoints folder, if there is one, can be written, and a
  local disk has room for two more checkpoints (a save that cannot write fails at once
  with its cause, never after a wait)."""
  checkpoints = workdir_lib.checkpoints(workdir)
  if checkpoints.is_dir():
    storage.check_writable(checkpoints, what="the checkpoints folder")
  free = storage.free_bytes(workdir)
  if free is not None and free < 2 * state_bytes:
    raise UserError(f"--workdir={workdir}: {_size(free)} free, but each checkpoint "
                    f"takes about {_size(state_bytes)}; free some space (at least "
                    f"{_size(2 * state_bytes)}) or use another --workdir.")


def _size(num_bytes: int) -> str:
  """In GiB, or in MiB (or bytes) where GiB would round to 0.00."""
  if num_bytes >= 2**30 / 100:
    return f"{num_bytes / 2**30:.2f} GiB"
  return f"{num_bytes / 2**20:.2f} MiB" if num_bytes >= 2**20 / 100 else f"{num_bytes} bytes"


def check_workdir(workdir: str) -> str:
  """The workdir as a canonical path (a bucket URI as it is, a local path absolute); it
  exists or can be created, and is writable (a bucket is probed with a test object)."""
  return os.fspath(storage.check_writable(workdir))
