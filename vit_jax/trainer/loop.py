"""The trainer: `train_and_evaluate(config, workdir)`, one story from top to bottom.

Setup (config resolved, mesh, input, model, optimizer, sharded state: `setup.prepare`) ->
state (fresh, resumed or fine-tuned) -> evaluators -> loop (train, log, evaluate,
checkpoint, preemption). The same program runs on one CPU, many simulated CPU devices, a GPU and a
multi-host pod.
"""
from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np
from clu import parameter_overview

from vit_jax import console
from vit_jax.data import device_feed, pipeline
from vit_jax.evaluators import common as evaluators_lib
from vit_jax.models import flops
from vit_jax.runtime import accelerators, preemption, workdir_lock
from vit_jax.trainer import build as build_lib
from vit_jax.trainer import checkpointer as checkpointer_lib
from vit_jax.trainer import finetune, metric_writers, preflight, progress, setup, step_history
from vit_jax.trainer.state import TrainState

NonFiniteStepError = step_history.NonFiniteStepError  # what a diverging run raises.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (or resumes) as configured; returns the final TrainState."""
  preflight.check_config(config)
  workdir = preflight.check_workdir(workdir)
  run = setup.prepare(config)
  with workdir_lock.held(workdir):
    return _run(run, workdir)


def _run(run: setup.Setup, workdir: str) -> TrainState:
  """Resume or start, then the loop: everything that writes in the workdir."""
  config, built, source, shards = run.config, run.built, run.source, run.shards
  mesh = built.mesh
  data_state = _data_state(config, shards)
  checkpointer, state, input_state = _initial_state(config, built, workdir, data_state,
                                                    run.pretrained)
  _write_run_files(config, built, workdir)
  console.line(_header(config, built, source, shards, workdir))
  if jax.process_count() > 1:
    console.line(f"process {jax.process_index()} reads data shard(s) "
                 f"{list(shards.local_shards)} of {shards.num_shards}", every_process=True)
  start_step = int(state.step)
  if start_step >= config.total_steps:
    checkpointer.close()
    console.line(f"Nothing to do: this run already finished (step {start_step} of "
                     f"{config.total_steps}). Raise --config.total_steps to train on, or use "
                     f"a new --workdir.")
    return state

  spec = pipeline.example_spec(source, split=config.train_split, pp=built.host_pp_train,
                               pp_modules=config.pp_modules)
  train_step = _compile_train_step(built, spec)
  train_data = pipeline.TrainStream(
      source, split=config.train_split, global_batch_size=config.batch_size,
      pp=built.host_pp_train, seed=config.seed, start_step=start_step, shards=shards,
      num_batches=config.total_steps - start_step,
      positions=input_state and input_state.get("positions"),
      workers=pipeline.num_workers(config.input_workers, source),
      pp_modules=config.pp_modules, spec=spec)
  evaluators = evaluators_lib.build_evaluators(
      config.evals, evaluators_lib.EvalContext(config, built))

  loop = _Loop(config, built, train_step, evaluators, checkpointer,
               metric_writers.create_writer(workdir, start_step=start_step), data_state,
               train_data)
  batches = device_feed.prefetch_to_mesh(train_data, mesh)
  try:
    return loop.run(state, batches)
  finally:
    batches.close()
    train_data.close()  # ends the input workers now, not at garbage collection.
    loop.close()


# --- Setup ------------------------------------------------------------------------------
def _data_state(config, shards: pipeline.DataShards) -> dict:
  """What the input stream needs to resume exactly; saved with every checkpoint."""
  return {"dataset": config.dataset, "seed": config.seed, "batch_size": config.batch_size,
          "num_shards": shards.num_shards}


def _initial_state(config, built: build_lib.Built, workdir: str, data_state: dict,
                   pretrained):
  """(checkpointer, state, input stream state or None): the newest intact checkpoint if
  there is one; else fresh, or fine-tuned from the `pretrained` checkpoint. Nothing is
  written before this has succeeded."""
  directory = os.path.join(workdir, "checkpoints")
  checkpointer = None  # created only once nothing can fail: it makes the directory.
  if os.path.isdir(directory):
    checkpointer = checkpointer_lib.TrainCheckpointer(directory, keep=config.keep_checkpoints)
    restored = checkpointer.restore_newest_intact(built.state.abstract)
    if restored is not None:
      state, saved_data_state, step = restored
      if saved_data_state != data_state:
        console.warn(f"input settings changed since the checkpoint ({saved_data_state} -> "
                     f"{data_state}): the data stream will not continue exactly.")
      console.line(f"Resumed from step {step} in {directory}")
      return checkpointer, state, checkpointer.restore_input(step)
  state = built.init_state(jax.random.key(config.seed))
  if pretrained is not None:
    params = finetune.init_params(config, pretrained, built, state.params)
    opt_state = jax.jit(built.tx.init, out_shardings=built.state.shardings.opt_state)(params)
    state = state.replace(params=params, opt_state=opt_state)
  return checkpointer or checkpointer_lib.TrainCheckpointer(
      directory, keep=config.keep_checkpoints), state, None


def _write_run_files(config, built: build_lib.Built, workdir: str) -> None:
  """config.json (what `configs/run.py` and the inference tools read back) and the
  parameter table, beside the checkpoints."""
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  with open(os.path.join(workdir, "parameters.txt"), "w") as f:
    f.write(parameter_overview.get_parameter_overview(built.state.abstract.params,
                                                      include_stats=False) + "\n")


def _header(config, built: build_lib.Built, source, shards, workdir: str) -> str:
  num_params = built.state.num_params
  examples = source.split_size(config.train_split)
  mesh = ", ".join(f"{axis} {size}" for axis, size in built.mesh.shape.items())
  processes = (f"{jax.process_count()} processes ({shards.num_shards} data shards), "
               if jax.process_count() > 1 else "")
  return (f"{config.model_name}, {num_params:,} parameters | {source.name} "
          f"{config.train_split}: {examples:,} images, global batch {config.batch_size} | "
          f"{processes}{jax.device_count()} {jax.devices()[0].device_kind} device(s), mesh "
          f"{mesh}\nworkdir {workdir} (config.json, parameters.txt, metrics.jsonl; "
          f"tensorboard --logdir={workdir})")


def _compile_train_step(built: build_lib.Built, example_spec: dict):
  """`example_spec`: {'image', 'label'} -> (shape, dtype) of one example's fields."""
  start = time.perf_counter()
  shape, dtype = example_spec["label"]
  compiled = built.compile_train_step(label_shape=tuple(shape),
                                      integer_labels=np.issubdtype(dtype, np.integer),
                                      image_dtype=example_spec["image"][1])
  console.line(f"Compiled the train step in {time.perf_counter() - start:.1f}s")
  return compiled


def _progress(config, built: build_lib.Built, compiled, start_step: int) -> progress.Progress:
  try:
    step_flops = 3 * flops.vit_forward_flops(built.model, built.image_shape[:2])
    step_flops *= config.batch_size
  except ValueError:  # hybrids and other families: XLA's own count.
    step_flops = flops.xla_flops(compiled)
  peak = accelerators.peak_flops()
  return progress.Progress(total_steps=config.total_steps, start_step=start_step,
                          batch_size=config.batch_size, flops_per_step=step_flops,
                          peak_flops=peak * jax.device_count() if peak else None)


# --- Loop -------------------------------------------------------------------------------
class _Loop:
  """The training loop's parts: each step, its log line, evaluations and checkpoints."""

  def __init__(self, config, built, train_step, evaluators, checkpointer, writer,
               data_state: dict, train_data: pipeline.TrainStream):
    self.config, self.built, self.train_step = config, built, train_step
    self.evaluators, self.checkpointer, self.writer = evaluators, checkpointer, writer
    self.data_state, self.train_data = data_state, train_data
    self.preemption = preemption.PreemptionWatcher()
    self.history: list[tuple[int, dict]] = []
    self.skipped_images = 0  # reported so far.
    self.last_eval: dict[str, float] = {}

  def run(self, state, batches) -> TrainState:
    c, step = self.config, int(state.step)
    meter = _progress(c, self.built, self.train_step, step)
    console.line(f"Training steps {step} -> {c.total_steps}")
    first, start_time = step + 1, time.perf_counter()
    while step < c.total_steps:
      state, step_metrics = self.train_step(state, next(batches))
      step += 1
      self.history.append((step, step_metrics))
      self.checkpointer.check()  # a failed background save stops the run at once.
      should_save = step % c.checkpoint_every == 0 or step == c.total_steps
      preempted = self.preemption.reached(step)
      if step % c.log_every == 0 or should_save or preempted or step == first:
        self.log(step, meter)
      if should_save or preempted:
        self.checkpointer.save(step, state, self.data_state, self.train_data.state(step),
                               force=preempted)
        console.line(f"Saving checkpoint at step {step}")
      if preempted:
        self.checkpointer.wait()
        console.line(f"Preempted (SIGTERM): stopped at step {step} with a checkpoint; "
                         f"run the same command to resume.")
        return state
      self.evaluate(step, state.params, final=step == c.total_steps)
    console.line(progress.summary_line(
        steps=step - first + 1, seconds=time.perf_counter() - start_time,
        batch_size=c.batch_size, final_eval=self.last_eval,
        checkpoint_dir=self.checkpointer.directory))
    return state

  def log(self, step: int, meter: progress.Progress) -> None:
    """Fetches the pending per-step metrics (one device sync), checks them and logs."""
    history = jax.device_get(self.history)
    self.history.clear()
    skip = self.config.skip_nonfinite_steps
    step_history.check_finite(history, skip_nonfinite=skip)
    scalars = {**step_history.mean_metrics(history, skip_nonfinite=skip),
               **meter.measure(step)}
    skipped = self.train_data.skips.count - self.skipped_images
    self.skipped_images += skipped
    if skipped:
      scalars["skipped_images"] = float(skipped)  # since the last log line.
    self.writer.write_scalars(step, scalars)
    console.line(progress.Progress.line(step, self.config.total_steps, scalars))

  def evaluate(self, step: int, params, *, final: bool) -> dict:
    """Runs the due evaluators; their scalars go out in one line."""
    scalars, images = {}, {}
    for scheduled in self.evaluators:
      if scheduled.due(step, final=final):
        more_scalars, more_images = scheduled.run(params)
        scalars.update(more_scalars)
        images.update(more_images)
    if scalars:
      self.writer.write_scalars(step, scalars)
      console.line(progress.eval_line(step, scalars))
      self.last_eval = scalars
    if images:
      self.writer.write_images(step, images)
    return scalars

  def close(self) -> None:
    self.preemption.close()
    self.checkpointer.close()
    self.writer.close()
