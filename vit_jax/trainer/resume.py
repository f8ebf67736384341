"""Where a run starts: its newest intact checkpoint (after a divergence, the newest
healthy one; with `resume_step`, exactly that one), else fresh or fine-tuned from the
`pretrained` checkpoint. Newer checkpoints than the one resumed from are set aside
(`<step>.suspect` / `<step>.superseded`, never deleted), so the run can save those steps
again. Each choice is one console line saying which step and why."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp

from vit_jax import console
from vit_jax.runtime import workdir as workdir_lib
from vit_jax.errors import UserError
from vit_jax.trainer import checkpointer as checkpointer_lib
from vit_jax.trainer import finetune


@dataclasses.dataclass
class Start:
  checkpointer: checkpointer_lib.TrainCheckpointer
  state: Any
  input_state: Optional[dict] = None   # the stream's positions at the resumed step.
  record: Optional[dict] = None        # the resumed step's JSON record.


def _resume(config, built, directory, input_settings: dict) -> Optional[Start]:
  saver = checkpointer_lib.TrainCheckpointer(directory, keep=config.keep_checkpoints)
  divergence = saver.divergence()
  if divergence is not None and _is_stale(divergence, saver.steps()):
    saver.clear_divergence()  # a later run trained past it: it describes nothing here.
    divergence = None
  resume_step = config.get("resume_step")

  def why_newer(step):
    if resume_step is not None:
      return checkpointer_lib.SUPERSEDED, f"newer than resume_step={resume_step}"
    verdict = saver.health(step)
    return checkpointer_lib.SUSPECT, "suspect (" + (
        verdict.why if verdict else "saved as the run diverged, never judged healthy") + ")"
  restored = saver.restore_setting_aside_newer(
      built.state.abstract, step=resume_step, healthy_only=divergence is not None,
      why_newer=why_newer)
  if restored is None:
    return None
  why = ""
  if resume_step is not None:
    why = f" (resume_step={restored.step})"
  elif divergence is not None:
    why = (f", the newest healthy checkpoint: the run had stopped at step "
           f"{divergence.get('step')} ({divergence.get('why')})")
  console.line(f"Resumed from step {restored.step} in {directory}{why}")
  saver.clear_divergence()
  saved_settings = checkpointer_lib.input_settings(restored.record)
  if saved_settings != input_settings:
    console.warn(f"input settings changed since the checkpoint ({saved_settings} -> "
                 f"{input_settings}): the data stream will not continue exactly.")
  return Start(saver, restored.state, saver.restore_input(restored.step), restored.record)


def _is_stale(divergence: dict, steps: list[int]) -> bool:
  """A non-finite step is never saved, so a checkpoint at or after the marked step was
  made by a later run."""
  step = divergence.get("step")
  return isinstance(step, int) and bool(steps) and max(steps) >= step


def _check_nothing_lost(config, directory) -> None:
  """Before a fresh start in a checkpoints folder with no intact step: a folder whose
  every checkpoint is damaged is an error (training would silently start over), unless
  `start_over`; a divergence marker of a run that never saved describes nothing left."""
  damaged = checkpointer_lib.set_aside_steps(directory, checkpointer_lib.DAMAGED)
  if damaged and not config.get("start_over"):
    raise UserError(
        f"every checkpoint in {directory} is damaged (step(s) {damaged}, set aside as "
        f"<step>.damaged): nothing to resume. To train again from step 0 here, add "
        f"--config.start_over=True; or use a new --workdir.")
  if damaged:
    console.warn(f"start_over=True: training from step 0; the damaged checkpoints "
                 f"{damaged} stay set aside in {directory}.")
  checkpointer_lib.clear_divergence(directory)


def initial_state(config, built, workdir: str, input_settings: dict, pretrained) -> Start:
  """Nothing is written before this has succeeded (the checkpointer creates its folder)."""
  directory = workdir_lib.checkpoints(workdir)
  if directory.is_dir():
    resumed = _resume(config, built, directory, input_settings)
    if resumed is not None:
      return resumed
    _check_nothing_lost(config, directory)
  elif config.get("resume_step") is not None:
    raise UserError(f"resume_step={config.resume_step}: {workdir} has no checkpoints yet.")
  state = built.init_state(jax.random.key(config.seed))
  if pretrained is not None:
    params = finetune.init_params(config, pretrained, built, state.params)
    opt_state = jax.jit(built.tx.init, out_shardings=built.state.shardings.opt_state)(params)
    ema = None if state.ema_params is None else jax.tree.map(jnp.copy, params)
    state = state.replace(params=params, opt_state=opt_state, ema_params=ema)
  return Start(checkpointer_lib.TrainCheckpointer(directory, keep=config.keep_checkpoints),
               state)
