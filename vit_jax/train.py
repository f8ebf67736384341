"""The trainer: `train_and_evaluate(config, workdir)`, one story from top to bottom.

Mesh -> input -> build (model, optimizer, sharded state, compiled step) -> state (fresh,
resumed or fine-tuned) -> evaluators -> loop (train, log, evaluate, checkpoint,
preemption). The same program runs on one CPU, many simulated CPU devices, a GPU and a
multi-host pod.
"""
from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np
from clu import parameter_overview

from vit_jax import build as build_lib
from vit_jax import config as config_lib
from vit_jax import checkpoints, finetune, flops, metrics, preemption, preflight, step_history
from vit_jax import workdir_lock
from vit_jax import evaluators as evaluators_lib
from vit_jax import sharding as sharding_lib
from vit_jax.data import device_feed, pipeline, preprocess, sources
from vit_jax.state import TrainState

NonFiniteStepError = step_history.NonFiniteStepError  # what a diverging run raises.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (or resumes) as configured; returns the final TrainState."""
  preflight.check_config(config)
  workdir = preflight.check_workdir(workdir)
  config = finetune.adopt_pretrained(config_lib.with_resolution(config))
  mesh = sharding_lib.make_mesh(dict(config.mesh))
  shards = pipeline.DataShards.create(config.data_shards)
  build_lib.check_batch_size(config, mesh, num_data_shards=shards.num_shards)
  preprocess.import_modules(config.pp_modules)
  source = sources.from_config(config)
  built = build_lib.build(config, mesh, num_classes=source.num_classes,
                          image_shape=pipeline.image_shape(source, split=config.test_split,
                                                           pp=config.pp_eval,
                                                           pp_modules=config.pp_modules))
  with workdir_lock.held(workdir):
    return _run(config, workdir, built, source, shards)


def _run(config, workdir: str, built: build_lib.Built, source, shards) -> TrainState:
  """Resume or start, then the loop: everything that writes in the workdir."""
  mesh = built.mesh
  data_state = _data_state(config, shards)
  checkpointer, state, input_state = _initial_state(config, built, workdir, data_state)
  _write_run_files(config, built, workdir)
  metrics.log_line(_header(config, built, source, shards, workdir))
  if jax.process_count() > 1:
    metrics.log_line(f"process {jax.process_index()} reads data shard(s) "
                     f"{list(shards.local_shards)} of {shards.num_shards}", every_process=True)
  start_step = int(state.step)
  if start_step >= config.total_steps:
    checkpointer.close()
    metrics.log_line(f"Nothing to do: this run already finished (step {start_step} of "
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
               metrics.create_writer(workdir, start_step=start_step), data_state, train_data)
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


def _initial_state(config, built: build_lib.Built, workdir: str, data_state: dict):
  """(checkpointer, state, input stream state or None): the newest intact checkpoint if
  there is one; else fresh, or fine-tuned from `pretrained`. Nothing is written before
  this has succeeded."""
  directory = os.path.join(workdir, "checkpoints")
  checkpointer = None  # created only once nothing can fail: it makes the directory.
  if os.path.isdir(directory):
    checkpointer = checkpoints.TrainCheckpointer(directory, keep=config.keep_checkpoints)
    restored = checkpointer.restore_newest_intact(built.state.abstract)
    if restored is not None:
      state, saved_data_state, step = restored
      if saved_data_state != data_state:
        metrics.log_line(f"warning: input settings changed since the checkpoint "
                         f"({saved_data_state} -> {data_state}): the data stream will not "
                         f"continue exactly.")
      metrics.log_line(f"Resumed from step {step} in {directory}")
      return checkpointer, state, checkpointer.restore_input(step)
  state = built.init_state(jax.random.key(config.seed))
  if config.pretrained:
    grid = built.model.patch_grid(*built.image_shape[:2])
    params = finetune.place(finetune.load_pretrained(config, built.model, state.params, grid),
                            built.state.param_shardings)
    opt_state = jax.jit(built.tx.init, out_shardings=built.state.shardings.opt_state)(params)
    state = state.replace(params=params, opt_state=opt_state)
  return checkpointer or checkpoints.TrainCheckpointer(
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
  metrics.log_line(f"Compiled the train step in {time.perf_counter() - start:.1f}s")
  return compiled


def _progress(config, built: build_lib.Built, compiled, start_step: int) -> metrics.Progress:
  try:
    step_flops = 3 * flops.vit_forward_flops(built.model, built.image_shape[:2])
    step_flops *= config.batch_size
  except ValueError:  # hybrids and other families: XLA's own count.
    step_flops = flops.xla_flops(compiled)
  peak = flops.peak_flops()
  return metrics.Progress(total_steps=config.total_steps, start_step=start_step,
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
    self.skipped_images = len(pipeline.SKIPPED_IMAGES)
    self.last_eval: dict[str, float] = {}

  def run(self, state, batches) -> TrainState:
    c, step = self.config, int(state.step)
    progress = _progress(c, self.built, self.train_step, step)
    metrics.log_line(f"Training steps {step} -> {c.total_steps}")
    first, start_time = step + 1, time.perf_counter()
    while step < c.total_steps:
      state, step_metrics = self.train_step(state, next(batches))
      step += 1
      self.history.append((step, step_metrics))
      self.checkpointer.check()  # a failed background save stops the run at once.
      should_save = step % c.checkpoint_every == 0 or step == c.total_steps
      preempted = self.preemption.reached(step)
      if step % c.log_every == 0 or should_save or preempted or step == first:
        self.log(step, progress)
      if should_save or preempted:
        self.checkpointer.save(step, state, self.data_state, self.train_data.state(step),
                               force=preempted)
        metrics.log_line(f"Saving checkpoint at step {step}")
      if preempted:
        self.checkpointer.wait()
        metrics.log_line(f"Preempted (SIGTERM): stopped at step {step} with a checkpoint; "
                         f"run the same command to resume.")
        return state
      self.evaluate(step, state.params, final=step == c.total_steps)
    metrics.log_line(metrics.summary_line(
        steps=step - first + 1, seconds=time.perf_counter() - start_time,
        batch_size=c.batch_size, final_eval=self.last_eval,
        checkpoint_dir=self.checkpointer.directory))
    return state

  def log(self, step: int, progress: metrics.Progress) -> None:
    """Fetches the pending per-step metrics (one device sync), checks them and logs."""
    history = jax.device_get(self.history)
    self.history.clear()
    skip = self.config.skip_nonfinite_steps
    step_history.check_finite(history, skip_nonfinite=skip)
    scalars = {**step_history.mean_metrics(history, skip_nonfinite=skip),
               **progress.measure(step)}
    skipped = len(pipeline.SKIPPED_IMAGES) - self.skipped_images
    self.skipped_images += skipped
    if skipped:
      scalars["skipped_images"] = float(skipped)  # since the last log line.
    self.writer.write_scalars(step, scalars)
    metrics.log_line(metrics.Progress.line(step, self.config.total_steps, scalars))

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
      metrics.log_line(metrics.eval_line(step, scalars))
      self.last_eval = scalars
    if images:
      self.writer.write_images(step, images)
    return scalars

  def close(self) -> None:
    self.preemption.close()
    self.checkpointer.close()
    self.writer.close()
