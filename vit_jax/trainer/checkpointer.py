"""Training-state checkpoints (orbax): asynchronous, atomic, verified, resumable,
reshardable, local or in a bucket.

A checkpoint at step s holds the TrainState after s updates (params, optimizer state,
step, RNG), a JSON record (the input settings, the fingerprint of every array, whether
the run was healthy when it was saved, the loss history and the metrics not yet logged)
and, per process, the input stream's position after step s (Grain's orbax handler), so a
resume reads no data it does not use. Orbax writes into `<step>.orbax-checkpoint-tmp`
and renames when complete (in a bucket: a commit marker), so a process killed mid-save
leaves the previous checkpoints intact and restore ignores the partial one.

Failures are loud and leave the disk clean: a save that fails (disk full, permissions)
stops the run with one line and removes its partial files; a checkpoint that does not
read back, or whose arrays no longer match their fingerprints, is set aside as
`<step>.damaged` with one line and the next older one is used. Each checkpoint is judged
once the next step has computed its loss (`health.py`, the verdicts in `health.json`):
the newest healthy one is never deleted while newer ones are suspect or not yet judged,
and after a divergence the run resumes from it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import time
from typing import Any, Optional

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint._src.checkpoint_managers import preservation_policy as preservation

from vit_jax import console, storage
from vit_jax.convert import run_format
from vit_jax.data.pipeline import InputState
from vit_jax.errors import UserError, first_line, os_cause
from vit_jax.models import params as params_lib
from vit_jax.runtime import workdir
from vit_jax.trainer import checksums
from vit_jax.trainer.health import Health

STATE, DATA, INPUT = run_format.STATE, "data", "input"
DAMAGED, SUSPECT, SUPERSEDED = ".damaged", ".suspect", ".superseded"


class CheckpointSaveError(UserError):
  pass


class DamagedCheckpointError(Exception):
  """A step's files read back but its arrays are not what was saved."""


@dataclasses.dataclass
class Restored:
  state: Any
  record: dict            # the JSON record saved with the step (see `save`).
  step: int


def input_settings(record: dict) -> dict:
  """The input settings of a step's record (older checkpoints hold only those)."""
  return record.get("input", record) if isinstance(record, dict) else {}


@dataclasses.dataclass
class _KeepNewestHealthy(preservation.PreservationPolicy):
  """Orbax preservation: the newest healthy step is kept while newer ones are suspect or
  not judged yet."""
  checkpointer: "TrainCheckpointer"

  def should_preserve(self, checkpoints, *, context) -> list[bool]:
    del context
    keep = self.checkpointer.newest_healthy_before_suspect([c.step for c in checkpoints])
    return [c.step == keep for c in checkpoints]


class TrainCheckpointer:
  def __init__(self, directory, *, keep: int, asynchronous: bool = True):
    self.directory = storage.path(directory)  # local or in a bucket.
    self._health = self._read_health()
    policy = preservation.AnyPreservationPolicy(
        [preservation.LatestN(n=keep), _KeepNewestHealthy(self)])
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            create=True, enable_async_checkpointing=asynchronous,
            cleanup_tmp_directories=True, preservation_policy=policy))
    self._pending_step: Optional[int] = None
    self._failed = False

  # --- What is on disk -------------------------------------------------------------------
  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def record(self, step: int) -> dict:
    """The JSON record of a step ({} when unreadable)."""
    try:
      return json.loads((self.directory / str(step) / DATA / "metadata").read_text())
    except (OSError, ValueError):
      return {}

  def _read_health(self) -> dict[int, Health]:
    path = self.directory / workdir.HEALTH
    try:
      verdicts = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
      verdicts = {}
    return {int(step): Health.from_json(v) for step, v in verdicts.items()}

  def health(self, step: int) -> Optional[Health]:
    """The verdict on a step (None: not judged yet, e.g. the newest one)."""
    return self._health.get(step)

  def is_healthy(self, step: int) -> bool:
    verdict = self._health.get(step)
    return verdict is not None and verdict.healthy

  def judge(self, step: int, verdict: Health) -> None:
    """Records the verdict on a saved step (process 0 writes it)."""
    self._health[step] = verdict
    if jax.process_index() == 0:
      existing = set(self.steps()) | {step}
      storage.write_text(self.directory / workdir.HEALTH, json.dumps(
          {str(s): v.to_json() for s, v in sorted(self._health.items()) if s in existing},
          indent=1))

  def newest_healthy_before_suspect(self, steps: list[int]) -> Optional[int]:
    """The newest healthy step, when a newer step is suspect or not judged (else None)."""
    steps = sorted(steps)
    healthy = [s for s in steps if self.is_healthy(s)]
    if not healthy or healthy[-1] == steps[-1]:
      return None
    return healthy[-1]

  # --- Saving ----------------------------------------------------------------------------
  def save(self, step: int, state: Any, record: dict,
           input_state: Optional[InputState] = None, *, force: bool = False) -> bool:
    """Starts an asynchronous save of `state` with `record` (input settings and whatever
    a resume needs) and the state's fingerprints; raises CheckpointSaveError if this or
    the previous background save failed (naming the step whose save failed)."""
    self.check(step)
    try:  # orbax waits for the previous save first: its failure is that step's.
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._stop(self._pending_step, e, at_step=step)
    if step in self.manager.all_steps():
      return False
    self._pending_step = step
    self._health.pop(step, None)
    record = {**record, "checksums": checksums.fingerprints(state)}
    items = {STATE: ocp.args.StandardSave(state), DATA: ocp.args.JsonSave(record)}
    if input_state is not None:
      items[INPUT] = grain.checkpoint.CheckpointSave(input_state)
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:  # pylint: disable=broad-except  (OSError, tensorstore errors)
      self._stop(step, e, at_step=step)
    self.check(step)  # a write that failed at once (a full disk) is seen here.
    return saved

  def check(self, step: Optional[int] = None) -> None:
    """Raises CheckpointSaveError (partial files removed) if a background save failed;
    cheap enough to call at every step boundary (`step`, for the message). Orbax hands
    a failed write to its finalize thread, which keeps it until someone waits: a save
    that is no longer in progress is waited for here, so its failure is seen at once."""
    try:
      self.manager.check_for_errors()
      if self._pending_step is not None and not self.manager.is_saving_in_progress():
        self.manager.wait_until_finished()  # returns at once; raises a failed save's error.
        self._pending_step = None
    except Exception as e:  # pylint: disable=broad-except
      self._stop(self._pending_step, e, at_step=step)

  def _stop(self, step: Optional[int], error: BaseException, *,
            at_step: Optional[int] = None) -> None:
    self._failed = True
    with contextlib.suppress(Exception):  # the same failure again, from other threads.
      self.manager.wait_until_finished()
    self._remove_partial_files()
    latest = None
    with contextlib.suppress(Exception):  # orbax may raise the failed save's error again.
      self.manager.reload()
      latest = self.manager.latest_step()
    if latest is None:  # the finished step folders, as orbax names them.
      with contextlib.suppress(OSError):
        latest = max((int(p.name) for p in self.directory.iterdir() if p.name.isdigit()),
                     default=None)
    cause = os_cause(error) or storage.describe_error(self.directory, error)[:120]
    stopped = f" at step {at_step}" if at_step is not None else ""
    raise CheckpointSaveError(
        f"saving checkpoint {step} in {self.directory} failed ({cause}); stopped{stopped}, "
        f"partial files removed, newest complete checkpoint: "
        f"{'step ' + str(latest) if latest is not None else 'none'}. Fix the cause and run "
        f"the same command to resume.") from None

  def _partial_saves(self) -> list:
    """Unfinished saves: `<step>.orbax-checkpoint-tmp*` folders (local disks, where orbax
    renames a finished save into place) or, in a bucket (no renames: orbax marks a
    finished step with a commit file instead), step folders orbax does not list."""
    finished = {str(s) for s in self.manager.all_steps()}
    return [p for p in self.directory.iterdir()
            if ".orbax-checkpoint-tmp" in p.name
            or (storage.is_remote(self.directory) and p.name.isdigit() and p.name not in finished)]

  def _remove_partial_files(self, settle_seconds: float = 1.0, limit_seconds: float = 30.0):
    """Removes unfinished saves. Writer threads of a failed save that orbax no longer
    tracks may still be writing: removal repeats until nothing has reappeared for
    `settle_seconds`."""
    deadline, quiet_since = time.time() + limit_seconds, time.time()
    while time.time() < deadline:
      partial = self._partial_saves()
      if partial:
        for path in partial:
          with contextlib.suppress(OSError, FileNotFoundError):
            path.rmtree()
        quiet_since = time.time()
      elif time.time() - quiet_since >= settle_seconds:
        return
      time.sleep(0.1)

  # --- Restoring -------------------------------------------------------------------------
  def restore_newest(self, abstract_state: Any, *, step: Optional[int] = None,
                     healthy_only: bool = False) -> Optional[Restored]:
    """The newest checkpoint that reads back and matches its fingerprints (or exactly
    `step`); with `healthy_only`, suspect ones are skipped while a healthy one exists. A
    damaged one is set aside as `<step>.damaged` with one line and the next older one is
    tried. One that reads back but does not fit the model is a UserError (the config
    changed), never set aside. None when there is none."""
    steps = self.steps()
    if step is not None:
      if step not in steps:
        raise UserError(f"resume_step={step}: {self.directory} has no complete checkpoint "
                        f"of that step; it has {steps or 'none'}.")
      steps = [step]
    elif healthy_only and any(self.is_healthy(s) for s in steps):
      steps = [s for s in steps if self.is_healthy(s)]
    for candidate in sorted(steps, reverse=True):
      try:
        return self.restore(candidate, abstract_state)
      except DamagedCheckpointError as e:
        self.set_aside(candidate, DAMAGED, f"damaged ({e})")
      except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore/json errors)
        if _reads_back(self.directory, candidate):
          raise UserError(f"The checkpoint of step {candidate} in {self.directory} does not "
                          f"fit this config's {_misfit(self.directory, candidate, abstract_state, e)}"
                          f": was the config changed? Use a new --workdir, or fine-tune from "
                          f"this run with --config.pretrained={self.directory.parent}.") from None
        self.set_aside(candidate, DAMAGED, f"damaged ({first_line(e)})")
      if step is not None:
        raise UserError(f"resume_step={step}: that checkpoint is damaged; choose another.")
    return None

  def restore_setting_aside_newer(self, abstract_state: Any, *, step: Optional[int] = None,
                                  healthy_only: bool = False,
                                  why_newer=lambda step: (SUSPECT, "suspect")
                                  ) -> Optional[Restored]:
    """The one rule of resuming and rolling back: the newest usable checkpoint (as
    `restore_newest`), and every newer step set aside as `why_newer(step)` -> (suffix,
    why), never deleted, so the run can save those steps again."""
    restored = self.restore_newest(abstract_state, step=step, healthy_only=healthy_only)
    if restored is not None:
      for newer in [s for s in self.steps() if s > restored.step]:
        self.set_aside(newer, *why_newer(newer))
    return restored

  def restore(self, step: int, abstract_state: Any) -> Restored:
    """Restores onto the shardings of `abstract_state` (any mesh, any device count) and
    checks every array against its saved fingerprint."""
    restored = self.manager.restore(
        step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state),
                                         DATA: ocp.args.JsonRestore()}))
    state, record = restored[STATE], restored[DATA]
    expected = record.get("checksums") if isinstance(record, dict) else None
    if expected:  # checkpoints from before fingerprints were recorded are not checked.
      changed = checksums.mismatches(state, expected)
      if changed:
        raise DamagedCheckpointError(
            f"{len(changed)} array(s) differ from what was saved, e.g. {changed[0]}")
    return Restored(state, record, step)

  def set_aside(self, step: int, suffix: str, why: str) -> str:
    """Moves a step to `<step><suffix>` (never deleted: a person may want it), says so
    in one line and returns the new name."""
    path = self.directory / str(step)
    target = self.directory / f"{step}{suffix}"
    if jax.process_index() == 0:
      count = 1
      while target.exists():
        target, count = self.directory / f"{step}{suffix}{count}", count + 1
      storage.move(path, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    self.manager.reload()
    self._health.pop(step, None)
    console.warn(f"the checkpoint of step {step} is {why}; moved to {target}.")
    return str(target)

  def restore_input(self, step: int) -> Optional[dict]:
    """This process's input stream state saved at `step`; None when the checkpoint has
    none for it (an older version, or another number of processes)."""
    if not (self.directory / str(step) / INPUT).is_dir():
      return None
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          **{INPUT: grain.checkpoint.CheckpointRestore(InputState())}))
    except (ValueError, OSError) as e:
      logging.info("No input state for this process at step %d: %s", step, e)
      return None
    return restored[INPUT].state

  # --- A divergence, remembered across restarts ------------------------------------------
  def mark_divergence(self, step: int, why: str) -> None:
    if jax.process_index() == 0:
      storage.write_text(self.directory / workdir.DIVERGENCE,
                         json.dumps({"step": step, "why": why}))

  def divergence(self) -> Optional[dict]:
    path = self.directory / workdir.DIVERGENCE
    try:
      return json.loads(path.read_text()) if path.exists() else None
    except ValueError:
      return {"step": None, "why": "unknown"}

  def clear_divergence(self) -> None:
    clear_divergence(self.directory)

  def discard_if_empty(self) -> None:
    """Closes, and removes the folder if this run created it and saved nothing."""
    self.manager.close()
    if jax.process_index() == 0 and not storage.is_remote(self.directory):
      with contextlib.suppress(OSError):
        if self.directory.is_dir() and not any(self.directory.iterdir()):
          self.directory.rmdir()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    if not self._failed:
      self.manager.wait_until_finished()
      self.check()
    self.manager.close()


def clear_divergence(directory) -> None:
  """Removes a checkpoints folder's divergence marker (process 0), if there is one."""
  if jax.process_index() == 0:
    with contextlib.suppress(FileNotFoundError, OSError):
      (storage.path(directory) / workdir.DIVERGENCE).unlink()


def set_aside_steps(directory, suffix: str) -> list[int]:
  """The steps `set_aside` moved to `<step><suffix>` (or `<step><suffix>N`)."""
  pattern = re.compile(rf"(\d+){re.escape(suffix)}\d*")
  return sorted({int(m.group(1)) for p in storage.path(directory).iterdir()
                 if (m := pattern.fullmatch(p.name))})


def _misfit(directory, step: int, abstract_state: Any, error: Exception) -> str:
  """What differs, named: the first few parameters whose shapes differ (and a count), or
  the optimizer state when the parameters all fit."""
  try:
    saved = run_format.saved_param_shapes(directory, step)
  except Exception:  # pylint: disable=broad-except
    return f"model/optimizer ({first_line(error)})"
  wanted = {k: tuple(v.shape) for k, v in params_lib.flatten(abstract_state.params).items()}
  problems = ([f"missing {k} {wanted[k]}" for k in wanted.keys() - saved.keys()]
              + [f"unexpected {k} {saved[k]}" for k in saved.keys() - wanted.keys()]
              + [f"shape mismatch {k}: saved {saved[k]}, model {wanted[k]}"
                 for k in wanted.keys() & saved.keys() if saved[k] != wanted[k]])
  if not problems:
    return f"optimizer (its state differs: {first_line(error)[:200]})"
  return params_lib.summarise_problems(f"model ({len(problems)} difference(s))", problems)


def _reads_back(directory, step: int) -> bool:
  """Whether every array and the data record of a step read back (no target structure:
  checks the files, not the fit)."""
  try:
    run_format.restore_as_numpy(directory, step, whole_state=True)
    json.loads((directory / str(step) / DATA / "metadata").read_text())
    return True
  except Exception:  # pylint: disable=broad-except
    return False
