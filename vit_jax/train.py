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
from absl import logging
from clu import parameter_overview

from vit_jax import build as build_lib
from vit_jax import checkpoints, finetune, flops, metrics, preemption, step_history
from vit_jax import evaluators as evaluators_lib
from vit_jax import sharding as sharding_lib
from vit_jax.data import device_feed, pipeline, preprocess, sources
from vit_jax.state import TrainState

NonFiniteStepError = step_history.NonFiniteStepError  # what a diverging run raises.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (or resumes) as configured; returns the final TrainState."""
  workdir = _start_workdir(config, workdir)
  mesh = sharding_lib.make_mesh(dict(config.mesh))
  shards = pipeline.DataShards.create(config.data_shards)
  build_lib.check_batch_size(config, mesh, num_data_shards=shards.num_shards)
  metrics.log_line(f"Mesh {dict(mesh.shape)}; process {jax.process_index()} reads data "
                   f"shard(s) {list(shards.local_shards)} of {shards.num_shards}",
                   every_process=True)

  preprocess.import_modules(config.pp_modules)
  source = sources.from_config(config)
  built = build_lib.build(config, mesh, num_classes=source.num_classes,
                          image_shape=pipeline.image_shape(source, split=config.test_split,
                                                           pp=config.pp_eval))
  metrics.log_line(parameter_overview.get_parameter_overview(built.state.abstract.params,
                                                             include_stats=False))

  checkpointer = checkpoints.TrainCheckpointer(os.path.join(workdir, "checkpoints"),
                                               keep=config.keep_checkpoints)
  state = _initial_state(config, built, checkpointer, _data_state(config, shards))
  train_data = pipeline.train_dataset(
      source, split=config.train_split, global_batch_size=config.batch_size,
      pp=config.pp_train, seed=config.seed, start_step=int(state.step),
      shuffle_buffer=config.shuffle_buffer, shards=shards)
  train_step = _compile_train_step(built, train_data.element_spec["label"])
  evaluators = evaluators_lib.build_evaluators(
      config.evals, evaluators_lib.EvalContext(config, built))

  loop = _Loop(config, built, train_step, evaluators, checkpointer,
               metrics.create_writer(workdir), _data_state(config, shards))
  try:
    return loop.run(state, device_feed.prefetch_to_mesh(train_data.as_numpy_iterator(), mesh))
  finally:
    loop.close()


# --- Setup ------------------------------------------------------------------------------
def _start_workdir(config, workdir: str) -> str:
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  metrics.log_line(f"Config:\n{config}")
  metrics.log_line(f"{jax.process_count()} process(es), {jax.device_count()} device(s) "
                   f"({jax.devices()[0].device_kind}), workdir {workdir}")
  return workdir


def _data_state(config, shards: pipeline.DataShards) -> dict:
  """What the input stream needs to resume exactly; saved with every checkpoint."""
  return {"dataset": config.dataset, "seed": config.seed, "batch_size": config.batch_size,
          "num_shards": shards.num_shards}


def _initial_state(config, built: build_lib.Built, checkpointer, data_state: dict):
  """The newest checkpoint if there is one; else fresh, or fine-tuned from `pretrained`."""
  latest = checkpointer.latest_step()
  if latest is not None:
    state, saved_data_state = checkpointer.restore(latest, built.state.abstract)
    if saved_data_state != data_state:
      logging.warning("Input settings changed since the checkpoint (%s -> %s): the data "
                      "stream will not continue exactly.", saved_data_state, data_state)
    metrics.log_line(f"Resumed from step {latest} in {checkpointer.directory}")
    return state
  state = built.init_state(jax.random.key(config.seed))
  if not config.pretrained:
    return state
  grid = built.model.patch_grid(*built.image_shape[:2])
  params = finetune.place(finetune.load_pretrained(config, state.params, grid),
                         built.state.param_shardings)
  opt_state = jax.jit(built.tx.init, out_shardings=built.state.shardings.opt_state)(params)
  return state.replace(params=params, opt_state=opt_state)


def _compile_train_step(built: build_lib.Built, label_spec):
  start = time.perf_counter()
  compiled = built.compile_train_step(label_shape=tuple(label_spec.shape[1:]),
                                      integer_labels=label_spec.dtype.is_integer)
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
               data_state: dict):
    self.config, self.built, self.train_step = config, built, train_step
    self.evaluators, self.checkpointer, self.writer = evaluators, checkpointer, writer
    self.data_state = data_state
    self.preemption = preemption.PreemptionWatcher()
    self.history: list[tuple[int, dict]] = []

  def run(self, state, batches) -> TrainState:
    c, step = self.config, int(state.step)
    progress = _progress(c, self.built, self.train_step, step)
    metrics.log_line(f"Training steps {step} -> {c.total_steps}, global batch {c.batch_size}")
    first = step + 1
    while step < c.total_steps:
      state, step_metrics = self.train_step(state, next(batches))
      step += 1
      self.history.append((step, step_metrics))
      should_save = step % c.checkpoint_every == 0 or step == c.total_steps
      preempted = self.preemption.reached(step)
      if step % c.log_every == 0 or should_save or preempted or step == first:
        self.log(step, progress)
      if should_save or preempted:
        self.checkpointer.save(step, state, self.data_state, force=preempted)
        metrics.log_line(f"Saving checkpoint at step {step}")
      if preempted:
        self.checkpointer.wait()
        metrics.log_line(f"Preempted (SIGTERM): stopped at step {step} with a checkpoint; "
                         f"run the same command to resume.")
        return state
      self.evaluate(step, state.params, final=step == c.total_steps)
    return state

  def log(self, step: int, progress: metrics.Progress) -> None:
    """Fetches the pending per-step metrics (one device sync), checks them and logs."""
    history = jax.device_get(self.history)
    self.history.clear()
    skip = self.config.skip_nonfinite_steps
    step_history.check_finite(history, skip_nonfinite=skip)
    scalars = {**step_history.mean_metrics(history, skip_nonfinite=skip), **progress.measure(step)}
    self.writer.write_scalars(step, scalars)
    metrics.log_line(metrics.Progress.line(step, self.config.total_steps, scalars))

  def evaluate(self, step: int, params, *, final: bool) -> dict:
    """Runs the due evaluators; their scalars go out in one line."""
    scalars, images = {}, {}
    for scheduled in self.evaluators:
      if scheduled.due(step, final=final):
        more_scalars, more_images = evaluators_lib.split_results(
            scheduled.name, scheduled.evaluator.run(params))
        scalars.update(more_scalars)
        images.update(more_images)
    if scalars:
      self.writer.write_scalars(step, scalars)
      metrics.log_line(metrics.eval_line(step, scalars))
    if images:
      self.writer.write_images(step, images)
    return scalars

  def close(self) -> None:
    self.preemption.close()
    self.checkpointer.close()
    self.writer.flush()
