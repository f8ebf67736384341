"""Training-state checkpoints (orbax): asynchronous, atomic, resumable, reshardable.

A checkpoint at step s holds the TrainState after s updates (params, optimizer state,
step, RNG) and a JSON record of what the input stream needs to resume at step s (seed,
global batch size, data shards). Orbax writes into `<step>.orbax-checkpoint-tmp` and
renames when complete, so a process killed mid-save leaves the previous checkpoints
intact and restore ignores the partial one.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from vit_jax.errors import UserError

STATE, DATA = "state", "data"


class TrainCheckpointer:
  def __init__(self, directory: str, *, keep: int, asynchronous: bool = True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous,
            cleanup_tmp_directories=True))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict, *, force: bool = False) -> bool:
    if step in self.manager.all_steps():
      return False
    return self.manager.save(
        step, args=ocp.args.Composite(**{STATE: ocp.args.StandardSave(state),
                                         DATA: ocp.args.JsonSave(data_state)}), force=force)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores onto the shardings of `abstract_state` (any mesh, any device count)."""
    restored = self.manager.restore(
        step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state),
                                         DATA: ocp.args.JsonRestore()}))
    return restored[STATE], restored[DATA]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def find_checkpoint_dir(path: str) -> str:
  """A run's workdir or its checkpoints/ folder -> the checkpoints folder."""
  candidate = os.path.join(path, "checkpoints")
  return candidate if os.path.isdir(candidate) else path


def latest_complete_step(path: str) -> tuple[str, int]:
  """(checkpoints directory, newest complete step) of a run's workdir or checkpoints dir."""
  directory = find_checkpoint_dir(os.path.abspath(os.path.expanduser(path)))
  steps = ocp.utils.checkpoint_steps(directory) if os.path.isdir(directory) else []
  if not steps:
    raise UserError(f"No complete checkpoint in {directory}.")
  return directory, max(steps)


def restore_params(path: str, abstract_params: Any, step: Optional[int] = None) -> tuple[Any, int]:
  """Only the params of a run, laid out as `abstract_params` (ShapeDtypeStructs with
  shardings: any mesh, FSDP included) - the optimizer state is never read."""
  directory, latest = latest_complete_step(path)
  step = latest if step is None else step
  item = os.path.join(directory, str(step), STATE)
  target = {"params": abstract_params}
  restored = ocp.PyTreeCheckpointer().restore(item, args=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))
  return restored["params"], step


def restore_params_as_numpy(path: str, step: Optional[int] = None) -> tuple[dict, int]:
  """The params of another run (workdir or checkpoints dir) as host numpy arrays, for
  fine-tuning or inference; no mesh or model needed."""
  directory, latest = latest_complete_step(path)
  step = latest if step is None else step
  item = os.path.join(directory, str(step), STATE)
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(item).item_metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  restored = checkpointer.restore(item, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  logging.info("Restored params of step %d from %s", step, directory)
  return restored["params"], step
