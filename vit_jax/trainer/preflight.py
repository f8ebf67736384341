"""Everything about a run that can be checked before any compiling, each with one line that
names the bad value and the fix: a run refused here leaves nothing behind."""
from __future__ import annotations

import os

from vit_jax.trainer import finetune, optim
from vit_jax import storage
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
  optim.make_optimizer(config)  # schedule, optimizer and dtype settings.
  if config.pretrained:
    finetune.check_exists(config.pretrained)


def check_workdir(workdir: str) -> str:
  """The workdir as a canonical path (a bucket URI as it is, a local path absolute); it
  exists or can be created, and is writable (a bucket is probed with a test object)."""
  return os.fspath(storage.check_writable(workdir))
