"""Training-state checkpoints (orbax): asynchronous, atomic, resumable, reshardable.

A checkpoint at step s holds the TrainState after s updates (params, optimizer state,
step, RNG), a JSON record of the input settings (seed, global batch size, data shards)
and, per process, the input stream's position after step s (Grain's orbax handler), so a
resume reads no data it does not use. Orbax writes into `<step>.orbax-checkpoint-tmp` and
renames when complete, so a process killed mid-save leaves the previous checkpoints
intact and restore ignores the partial one.

Failures are loud and leave the disk clean: a save that fails (disk full, permissions)
stops the run with one line and removes its partial files; a newest checkpoint that
cannot be read back is set aside as `<step>.damaged` with one line, and the run resumes
from the newest intact one.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import time
from typing import Any, Optional

import grain
import jax
import orbax.checkpoint as ocp

from vit_jax import console
from vit_jax.convert import run_format
from vit_jax.data.pipeline import InputState
from vit_jax.errors import UserError

STATE, DATA, INPUT = run_format.STATE, "data", "input"
DAMAGED_SUFFIX = ".damaged"


class CheckpointSaveError(UserError):
  pass


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return f"{type(error).__name__}: {text.splitlines()[0][:300]}" if text else type(error).__name__


class TrainCheckpointer:
  def __init__(self, directory: str, *, keep: int, asynchronous: bool = True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous,
            cleanup_tmp_directories=True))
    self._pending_step: Optional[int] = None
    self._failed = False

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict,
           input_state: Optional[InputState] = None, *, force: bool = False) -> bool:
    """Starts an asynchronous save; raises CheckpointSaveError if this or the previous
    background save failed."""
    self.check()
    if step in self.manager.all_steps():
      return False
    self._pending_step = step
    items = {STATE: ocp.args.StandardSave(state), DATA: ocp.args.JsonSave(data_state)}
    if input_state is not None:
      items[INPUT] = grain.checkpoint.CheckpointSave(input_state)
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:  # pylint: disable=broad-except  (OSError, tensorstore errors)
      self._stop(step, e)
    self.check()
    return saved

  def check(self) -> None:
    """Raises CheckpointSaveError (partial files removed) if a background save failed;
    cheap enough to call every step."""
    try:
      self.manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      self._stop(self._pending_step, e)

  def _stop(self, step: Optional[int], error: BaseException) -> None:
    self._failed = True
    try:  # let the save's other writer threads end before their files are removed.
      self.manager.wait_until_finished()
    except Exception:  # pylint: disable=broad-except  (the same failure again)
      pass
    self._remove_partial_files()
    self.manager.reload()
    latest = self.manager.latest_step()
    raise CheckpointSaveError(
        f"Saving the checkpoint of step {step} in {self.directory} failed ({_first_line(error)}); "
        f"the run stopped and the partial files were removed. The newest complete checkpoint "
        f"is {'step ' + str(latest) if latest is not None else 'none'}: fix the cause (disk "
        f"space, permissions) and run the same command to resume.") from None

  def _remove_partial_files(self, settle_seconds: float = 1.0, limit_seconds: float = 30.0):
    """Removes `<step>.orbax-checkpoint-tmp` directories. Writer threads of a failed save
    that orbax no longer tracks may still be writing: removal repeats until nothing has
    reappeared for `settle_seconds`."""
    deadline, quiet_since = time.time() + limit_seconds, time.time()
    while time.time() < deadline:
      partial = glob.glob(os.path.join(self.directory, "*.orbax-checkpoint-tmp*"))
      if partial:
        for path in partial:
          shutil.rmtree(path, ignore_errors=True)
        quiet_since = time.time()
      elif time.time() - quiet_since >= settle_seconds:
        return
      time.sleep(0.1)

  def restore_newest_intact(self, abstract_state: Any) -> Optional[tuple[Any, dict, int]]:
    """(state, data state, step) of the newest checkpoint that reads back; a damaged one
    is set aside as `<step>.damaged` with one line, and the next older one tried. A
    checkpoint that reads back but does not fit the model is a UserError (config changed),
    never set aside. None when there is no checkpoint."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state, data_state = self.restore(step, abstract_state)
        return state, data_state, step
      except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore/json errors)
        if _reads_back(self.directory, step):
          raise UserError(f"The checkpoint of step {step} in {self.directory} does not fit "
                          f"this config's model/optimizer ({_first_line(e)}): was the config "
                          f"changed? Use a new --workdir, or fine-tune from this run with "
                          f"--config.pretrained={os.path.dirname(self.directory)}.") from None
        self._set_aside(step, e)
    return None

  def _set_aside(self, step: int, error: BaseException) -> None:
    path = os.path.join(self.directory, str(step))
    target = path + DAMAGED_SUFFIX
    if jax.process_index() == 0:
      suffix = 1
      while os.path.exists(target):
        target, suffix = f"{path}{DAMAGED_SUFFIX}{suffix}", suffix + 1
      os.rename(path, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"set aside damaged checkpoint {step}")
    self.manager.reload()
    then = ("resuming from the previous one" if self.manager.all_steps()
            else "no earlier checkpoint: starting from step 0")
    console.warn(f"the checkpoint of step {step} is damaged ({_first_line(error)}); moved "
                 f"to {target}, {then}.")

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores onto the shardings of `abstract_state` (any mesh, any device count)."""
    restored = self.manager.restore(
        step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state),
                                         DATA: ocp.args.JsonRestore()}))
    return restored[STATE], restored[DATA]

  def restore_input(self, step: int) -> Optional[dict]:
    """This process's input stream state saved at `step`; None when the checkpoint has
    none for it (an older version, or another number of processes)."""
    if not os.path.isdir(os.path.join(self.directory, str(step), INPUT)):
      return None
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          **{INPUT: grain.checkpoint.CheckpointRestore(InputState())}))
    except (ValueError, OSError) as e:
      logging.info("No input state for this process at step %d: %s", step, e)
      return None
    return restored[INPUT].state

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    if not self._failed:
      self.manager.wait_until_finished()
      self.check()
    self.manager.close()


def _reads_back(directory: str, step: int) -> bool:
  """Whether every array and the data record of a step read back (no target structure:
  checks the files, not the fit)."""
  try:
    run_format.restore_as_numpy(directory, step, whole_state=True)
    with open(os.path.join(directory, str(step), DATA, "metadata")) as f:
      json.load(f)
    return True
  except Exception:  # pylint: disable=broad-except
    return False
