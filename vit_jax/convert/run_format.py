"""A vit_jax run as a checkpoint to read: its workdir (`config.json` + `checkpoints/<step>/`
written by orbax) -> the parameters of a step, on the host or straight onto a mesh.
Only the parameters are read, never the optimizer state. (Writing and resuming training
state is the trainer's: `vit_jax.trainer.checkpointer`.)"""
from __future__ import annotations

from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from vit_jax import storage
from vit_jax.errors import UserError
from vit_jax.models import params as params_lib
from vit_jax.runtime import workdir

STATE = "state"          # the TrainState item of a checkpoint step.


def checkpoint_dir(path) -> epath.Path:
  """A run's workdir or its checkpoints/ folder (local or in a bucket) -> the checkpoints
  folder."""
  path = storage.path(path)
  candidate = workdir.checkpoints(path)
  return candidate if candidate.is_dir() else path


def complete_steps(directory) -> list[int]:
  """The finished steps in a checkpoints folder (orbax's own listing: partial saves,
  `<step>.orbax-checkpoint-tmp`, and steps set aside as damaged are not steps)."""
  directory = storage.path(directory)
  return sorted(ocp.utils.checkpoint_steps(directory)) if directory.is_dir() else []


def latest_complete_step(path) -> tuple[epath.Path, int]:
  """(checkpoints directory, newest complete step) of a run's workdir or checkpoints dir."""
  directory = checkpoint_dir(path)
  steps = complete_steps(directory)
  if not steps:
    raise UserError(f"No complete checkpoint in {directory}.")
  return directory, steps[-1]


def _state_item(path, step: Optional[int], key: str = "params") -> tuple[epath.Path, int]:
  """(state item directory, step); `step` None is the newest."""
  if step is None:
    directory, step = latest_complete_step(path)
  else:  # a given step needs no listing of the folder.
    directory = checkpoint_dir(path)
  item = directory / str(step) / STATE
  if not item.is_dir():
    raise UserError(f"{directory} has no complete checkpoint of step {step}.")
  if key != "params" and key not in _handler().metadata(item).tree:
    raise UserError(f"The checkpoint of step {step} in {directory} has no {key} (train with "
                    f"ema_decay > 0 for a moving average).")
  return item, step


def _handler() -> ocp.PyTreeCheckpointHandler:
  # The item's own handler: a Checkpointer would look for the step's metadata file in the
  # item directory and log a warning that it is missing.
  return ocp.PyTreeCheckpointHandler()


def saved_param_shapes(path, step: Optional[int] = None) -> dict[str, tuple[int, ...]]:
  """'/'-joined parameter name -> shape, from a step's metadata (no array is read)."""
  item, _ = _state_item(path, step)
  tree = _handler().metadata(item).tree["params"]
  return {k: tuple(v.shape) for k, v in params_lib.flatten(tree).items()}


def restore_params(path: str, abstract_params: Any, step: Optional[int] = None, *,
                   key: str = "params") -> tuple[Any, int]:
  """The params of a run (`key` 'ema_params': their moving average), laid out as
  `abstract_params` (ShapeDtypeStructs with shardings: any mesh, FSDP included), read
  straight onto the devices."""
  item, step = _state_item(path, step, key)
  target = {key: abstract_params}
  restored = _handler().restore(item, args=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))
  return restored[key], step


def restore_as_numpy(path: str, step: Optional[int] = None, *, whole_state: bool = False,
                     key: str = "params") -> tuple[dict, int]:
  """The params of a run (`key` 'ema_params': their moving average; `whole_state`: the
  whole TrainState) as host numpy arrays; no mesh or model needed."""
  item, step = _state_item(path, step, key)
  handler = _handler()
  metadata = handler.metadata(item).tree
  if not whole_state:
    metadata = {key: metadata[key]}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  restored = handler.restore(item, args=ocp.args.PyTreeRestore(
      item=metadata, restore_args=restore_args, partial_restore=not whole_state))
  return (restored if whole_state else restored[key]), step
