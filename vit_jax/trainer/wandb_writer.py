"""An optional Weights & Biases writer (`config.trackers` includes 'wandb'): the same
scalars, images and config as TensorBoard. `WANDB_MODE=offline` writes a local run under
the workdir (`wandb/offline-run-*`) to `wandb sync` later. A resumed run continues the same
W&B run (its id is kept in the workdir). Never a hard dependency: `pip install -e
'.[wandb]'`."""
from __future__ import annotations

import os
import uuid
from typing import Any, Mapping

import numpy as np

from vit_jax import storage
from vit_jax.errors import UserError

RUN_ID_FILE = "wandb_run_id"
TRACKERS = ("tensorboard", "wandb")


def check(config) -> None:
  """Before anything is written: known trackers, and wandb importable if asked for."""
  trackers = tuple(config.get("trackers", ("tensorboard",)))
  unknown = sorted(set(trackers) - set(TRACKERS))
  if unknown:
    raise UserError(f"trackers={trackers!r}: unknown {unknown}; choose from {TRACKERS}.")
  if "wandb" in trackers:
    try:
      import wandb  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      raise UserError("trackers includes 'wandb' but wandb is not installed: pip install -e "
                      "'.[wandb]' (WANDB_MODE=offline needs no account).") from None


class WandbWriter:

  def __init__(self, workdir, config):
    import wandb  # pylint: disable=g-import-not-at-top
    self.wandb = wandb
    workdir = storage.path(workdir)
    id_file = workdir / RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
    if not id_file.exists():
      storage.write_text(id_file, run_id)
    # W&B writes its files locally: the workdir itself, or a cache for a bucket workdir.
    local = (os.fspath(workdir) if not storage.is_remote(workdir)
             else os.fspath(storage.cache_dir() / "wandb" / run_id))
    os.makedirs(local, exist_ok=True)
    self.run = wandb.init(project=config.get("wandb_project") or "vit_jax", id=run_id,
                          resume="allow", dir=local, name=workdir.name,
                          config=config.to_dict(), settings=wandb.Settings(silent=True))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self.run.log({k: (None if v is None else float(v)) for k, v in scalars.items()},
                 step=step)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    self.run.log({k: self.wandb.Image(np.asarray(v)[0]) for k, v in images.items()},
                 step=step)

  def flush(self) -> None:
    pass  # W&B uploads in its own process.

  def close(self) -> None:
    self.run.finish()
