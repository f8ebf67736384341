"""The trainer: `train_and_evaluate(config, workdir)`, one story from top to bottom.

Mesh -> input -> build (model, optimizer, sharded state, compiled step) -> state (fresh,
resumed or fine-tuned) -> evaluators -> loop (train, log, evaluate, checkpoint,
preemption). The same program runs on one CPU, many simulated CPU devices, a GPU and a
multi-host pod.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import parameter_overview

from vit_jax import build as build_lib
from vit_jax import checkpoints, flops, metrics, npz_format
from vit_jax import evaluators as evaluators_lib
from vit_jax import sharding as sharding_lib
from vit_jax.data import device_feed, pipeline, preprocess, sources
from vit_jax.errors import UserError
from vit_jax.state import TrainState


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


class NonFiniteStepError(UserError, FloatingPointError):
  pass


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
  params = _place(_load_pretrained(config, state.params, grid), built.state.param_shardings)
  opt_state = jax.jit(built.tx.init, out_shardings=built.state.shardings.opt_state)(params)
  return state.replace(params=params, opt_state=opt_state)


def _load_pretrained(config, init_params: Any, grid: tuple[int, int]) -> Any:
  path = os.path.expanduser(config.pretrained)
  if path.endswith(".npz"):
    restored = npz_format.load_npz(path)
  elif os.path.isdir(path):
    restored, _ = checkpoints.restore_params_as_numpy(path)
  else:
    raise UserError(f"pretrained={config.pretrained!r} is neither a .npz file nor a "
                    f"run's workdir / checkpoint directory.")
  metrics.log_line(f"Fine-tuning from {path}")
  return npz_format.adapt_for_finetuning(restored, init_params, target_grid=grid,
                                         reset_head=config.reset_head)


def _place(tree: Any, shardings: Any) -> Any:
  """Host numpy (the same on every process) -> arrays with `shardings`."""
  def put(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree, shardings)


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


# --- Preemption -------------------------------------------------------------------------
class PreemptionWatcher:
  """SIGTERM (Cloud TPU maintenance, SLURM preemption) -> stop at the next step boundary.

  One process: our own SIGTERM handler. Several: JAX's preemption sync point, so that all
  processes agree on the step at which they stop and save.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._flag.set())

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # no preemption service (e.g. not a managed cluster).
        return False
    return self._flag.is_set()

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


# --- Loop -------------------------------------------------------------------------------
def check_finite(history: list[tuple[int, dict]], *, skip_nonfinite: bool) -> None:
  """Stops the run at the first non-finite step (unless such steps are skipped). Runs
  before every checkpoint, so a poisoned state is never saved."""
  bad = [(step, values) for step, values in history if values["nonfinite"]]
  if bad and not skip_nonfinite:
    step, values = bad[0]
    raise NonFiniteStepError(
        f"Non-finite training step {step} (loss {float(values['train_loss']):.4g}, grad norm "
        f"{float(values['grad_norm']):.4g}, or the updated parameters): it was not "
        f"checkpointed; the newest checkpoint is the last finite state. Lower the learning "
        f"rate, enable grad_clip_norm, check the input data or set skip_nonfinite_steps=True.")


def mean_metrics(history: list[tuple[int, dict]], *, skip_nonfinite: bool) -> dict:
  """Per-step metrics averaged over the finite steps; the learning rate is the current
  one, not a window mean."""
  good = [values for _, values in history if not values["nonfinite"]] or [history[-1][1]]
  means = {key: float(np.mean([v[key] for v in good])) for key in good[0]
           if key not in ("nonfinite", "learning_rate")}
  means["learning_rate"] = float(history[-1][1]["learning_rate"])
  if skip_nonfinite:
    means["skipped_steps"] = float(sum(bool(values["nonfinite"]) for _, values in history))
  return means


class _Loop:
  """The training loop's parts: each step, its log line, evaluations and checkpoints."""

  def __init__(self, config, built, train_step, evaluators, checkpointer, writer,
               data_state: dict):
    self.config, self.built, self.train_step = config, built, train_step
    self.evaluators, self.checkpointer, self.writer = evaluators, checkpointer, writer
    self.data_state = data_state
    self.preemption = PreemptionWatcher()
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
    check_finite(history, skip_nonfinite=skip)
    scalars = {**mean_metrics(history, skip_nonfinite=skip), **progress.measure(step)}
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
