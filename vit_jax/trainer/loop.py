"""The trainer: `train_and_evaluate(config, workdir)`, one story from top to bottom.

Checks (config, storage, data, pretrained fit: nothing is written before they pass) ->
setup (mesh, input, model, optimizer, sharded state: `setup.prepare`) -> lock -> state
(resumed, fine-tuned or fresh: `resume`) -> compile -> loop (train, log, evaluate,
checkpoint, stop on request, roll back after a divergence) -> final evaluation, which is
what makes a run finished. The same program runs on one CPU, many simulated CPU devices,
a GPU and a multi-host pod.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Optional

import jax
import ml_collections
import numpy as np
from clu import parameter_overview

from vit_jax import console, storage
from vit_jax.data import device_feed, pipeline
from vit_jax.evaluators import common as evaluators_lib
from vit_jax.models import flops
from vit_jax.runtime import accelerators, preemption, workdir_lock
from vit_jax.runtime import workdir as workdir_lib
from vit_jax.trainer import build as build_lib
from vit_jax.trainer import checkpointer as checkpointer_lib
from vit_jax.trainer import finished, flexi
from vit_jax.trainer import health as health_lib
from vit_jax.trainer import (metric_writers, param_groups, preflight, progress, resume, setup,
                             step_history)
from vit_jax.trainer.state import TrainState

NonFiniteStepError = step_history.NonFiniteStepError  # what a diverging run raises.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (or resumes) as configured; returns the final TrainState."""
  with preemption.StopWatcher(process_count=jax.process_count()) as stop:
    preflight.check_config(config)
    workdir = preflight.check_workdir(workdir)
    run = setup.prepare(config)
    setup.check_data(run)
    evaluators = evaluators_lib.build_evaluators(  # their datasets are opened (checked).
        run.config.evals, evaluators_lib.EvalContext(run.config, run.built))
    preflight.check_storage(workdir, state_bytes=run.built.state.num_bytes)
    stop.check_before_start()
    with workdir_lock.held(workdir) as lock:
      return _run(run, evaluators, workdir, lock, stop)


def _run(run: setup.Setup, evaluators, workdir: str, lock, stop) -> TrainState:
  """Resume or start, then the loop: everything that writes in the workdir."""
  config, built, source, shards = run.config, run.built, run.source, run.shards
  settings = _input_settings(config, shards)
  start = resume.initial_state(config, built, workdir, settings, run.pretrained)
  state, start_step = start.state, int(start.state.step)
  console.line(_header(config, built, source, shards, workdir))
  if jax.process_count() > 1:
    console.line(f"process {jax.process_index()} reads data shard(s) "
                 f"{list(shards.local_shards)} of {shards.num_shards}", every_process=True)
  if start_step >= config.total_steps:
    _write_run_files(config, built, workdir, source)
    writer = metric_writers.create_writer(workdir, start_step=start_step, config=config)
    return _finish_or_nothing(config, workdir, start, evaluators, writer)
  spec = pipeline.example_spec(source, split=config.train_split, pp=built.host_pp_train,
                               pp_modules=config.pp_modules)
  try:  # a stop while compiling ends the run now, leaving nothing behind.
    train_step = _compile_train_step(built, spec, stop)
  except preemption.StopRequested:
    start.checkpointer.discard_if_empty()
    raise
  _write_run_files(config, built, workdir, source)
  loop = _Loop(run, start, train_step, spec, evaluators, workdir, lock, stop)
  try:
    return loop.run(state, start)
  finally:
    loop.close()


# --- Setup ------------------------------------------------------------------------------
def _input_settings(config, shards: pipeline.DataShards) -> dict:
  """What the input stream needs to resume exactly; saved with every checkpoint."""
  return {"dataset": config.dataset, "seed": config.seed, "batch_size": config.batch_size,
          "num_shards": shards.num_shards}


def _write_run_files(config, built: build_lib.Built, workdir: str, source=None) -> None:
  """config.json (what `configs/run.py` and the inference tools read back), the class
  names (labels.txt: a run predicts with them without its dataset) and the parameter
  table, beside the checkpoints."""
  if jax.process_index() != 0:
    return
  storage.write_text(workdir_lib.path(workdir, workdir_lib.CONFIG),
                     config.to_json_best_effort(indent=2))
  names = getattr(source, "label_names", None)
  if names:
    storage.write_text(workdir_lib.path(workdir, workdir_lib.LABELS),
                       "".join(f"{name}\n" for name in names))
  storage.write_text(workdir_lib.path(workdir, workdir_lib.PARAMETERS),
                     parameter_overview.get_parameter_overview(
      built.state.abstract.params, include_stats=False) + "\n")


def _header(config, built: build_lib.Built, source, shards, workdir: str) -> str:
  num_params = built.state.num_params
  trained, _ = param_groups.count_trained(config, built.state.abstract.params)
  params = (f"{num_params:,} parameters" if trained == num_params else
            f"{num_params:,} parameters, {trained:,} trained ({100 * trained / num_params:.1f}%)")
  examples = source.split_size(config.train_split)
  mesh = ", ".join(f"{axis} {size}" for axis, size in built.mesh.shape.items())
  processes = (f"{jax.process_count()} processes ({shards.num_shards} data shards), "
               if jax.process_count() > 1 else "")
  base = config.train_split.split("[")[0]
  held_out = (f" (test: {config.test_split}, held out of {base})"
              if config.test_split.startswith(f"{base}[") else "")
  if "flip_lr" in config.pp_train:
    held_out += ", flipped left-right (pp_train's flip_lr)"
  mfu = ("" if accelerators.peak_flops() else
         f" | MFU n/a (no peak FLOP/s known for {jax.devices()[0].device_kind})")
  objective = built.objective
  trains = "" if objective.classifies else f" | objective {objective.name} (labels unused)"
  if config.get("max_num_patches") is not None:
    held_out += (f", NaFlex: aspect ratios kept, <= {config.max_num_patches} patches of "
                 f"{built.model.token_patch_size} px")
  return (f"{config.model_name}, {params}{trains} | {source.name} "
          f"{config.train_split}: {examples:,} images{held_out}, global batch "
          f"{config.batch_size} | "
          f"{processes}{jax.device_count()} {jax.devices()[0].device_kind} device(s), mesh "
          f"{mesh}{mfu}\nworkdir {workdir} (config.json, labels.txt, parameters.txt, "
          f"metrics.jsonl, figures/; tensorboard --logdir={workdir})")


def _compile_train_step(built: build_lib.Built, example_spec: dict,
                        stop=None) -> flexi.Programs:
  """`example_spec`: {'image', 'label'} -> (shape, dtype) of one example's fields. The
  compiler runs on a thread of its own, so a signal stops the run at once (`stop`
  raises StopRequested), not minutes later when a large model's compile is done. With
  FlexiViT, one program per patch size."""
  start = time.perf_counter()
  shape, dtype = example_spec["label"]
  sizes = flexi.patch_sizes(built.config) or (None,)
  compiled = {size: _while_watching(lambda size=size: built.compile_train_step(
      label_shape=tuple(shape), integer_labels=np.issubdtype(dtype, np.integer),
      image_dtype=example_spec["image"][1], patch_size=size), stop) for size in sizes}
  which = "" if sizes == (None,) else f" for patch sizes {', '.join(map(str, sizes))}"
  console.line(f"Compiled the train step{which} in {time.perf_counter() - start:.1f}s")
  return flexi.Programs(built.config, compiled)


def _while_watching(work, stop):
  """work() on a daemon thread while the main thread, free to run signal handlers,
  checks `stop` every 0.1 s."""
  if stop is None:
    return work()
  outcome = {}

  def target():
    try:
      outcome["value"] = work()
    except BaseException as e:  # pylint: disable=broad-except  (re-raised below)
      outcome["error"] = e
  thread = threading.Thread(target=target, name="compile", daemon=True)
  thread.start()
  while thread.is_alive():
    thread.join(0.1)
    stop.check_before_start()
  if "error" in outcome:
    raise outcome["error"]
  return outcome["value"]


def _progress(config, built: build_lib.Built, compiled, start_step: int) -> progress.Progress:
  try:
    step_flops = 3 * built.forward_flops()
    step_flops *= config.batch_size
  except ValueError:  # hybrids and other families: XLA's own count.
    step_flops = flops.xla_flops(compiled)
  peak = accelerators.peak_flops()
  return progress.Progress(total_steps=config.total_steps, start_step=start_step,
                           batch_size=config.batch_size, flops_per_step=step_flops,
                           peak_flops=peak * jax.device_count() if peak else None)


def _finish_or_nothing(config, workdir, start: resume.Start, evaluators, writer) -> TrainState:
  """A run at its last step: done when its final evaluations are recorded; else (killed
  during them) they run now."""
  try:
    if workdir_lib.path(workdir, workdir_lib.FINAL).exists():
      console.line(finished.nothing_to_do(int(start.state.step), config.total_steps))
      return start.state
    console.line(f"The run reached step {int(start.state.step)} but its final evaluation "
                 f"was not recorded: running it now.")
    scalars = _evaluate(evaluators, writer, int(start.state.step), start.state,
                        final=True, workdir=workdir)
    _write_final(workdir, int(start.state.step), scalars)
    return start.state
  finally:
    start.checkpointer.close()
    writer.close()


def _evaluate(evaluators, writer, step: int, state: TrainState, *, final: bool,
              workdir, shown: Optional[dict] = None) -> dict:
  """Runs the due evaluators; their scalars go out in one line (and are flushed), their
  tables (a confusion matrix) to `<name>_<key>.csv` in the workdir."""
  scalars, images = {}, {}
  for scheduled in evaluators:
    if scheduled.due(step, final=final):
      results = scheduled.run(state.params, state.ema_params)
      scalars.update(results.scalars)
      images.update(results.images)
      if jax.process_index() == 0:
        for name, table in results.tables.items():
          storage.write_text(workdir_lib.path(workdir, f"{name}.csv"), evaluators_lib.table_csv(
              table, getattr(scheduled.evaluator, "label_names", None)))
  if scalars:
    writer.write_scalars(step, scalars)
    console.line(progress.eval_line(step, scalars, shown))
  if images:
    writer.write_images(step, images)
    console.line(f"figures: {', '.join(sorted(images))} as PNGs in "
                 f"{workdir_lib.path(workdir, workdir_lib.FIGURES)}/ "
                 f"(and TensorBoard)")
  if scalars or images:
    writer.flush()
  return scalars


def _write_final(workdir, step: int, scalars: dict) -> None:
  if jax.process_index() == 0:
    storage.write_text(workdir_lib.path(workdir, workdir_lib.FINAL),
                       json.dumps({"step": step, **scalars}, indent=2))


# --- Loop -------------------------------------------------------------------------------
class _Diverged(Exception):
  def __init__(self, error: NonFiniteStepError):
    super().__init__(str(error))
    self.error = error


class _Loop:
  """The training loop's parts: each step, its log line, evaluations, checkpoints,
  stopping on request and rolling back after a divergence."""

  def __init__(self, run: setup.Setup, start: resume.Start, train_step, spec: dict,
               evaluators, workdir: str, lock, stop):
    self.run_setup, self.config, self.built = run, run.config, run.built
    self.train_step, self.spec, self.evaluators = train_step, spec, evaluators
    self.checkpointer, self.workdir, self.lock, self.stop = start.checkpointer, workdir, lock, stop
    self.settings = _input_settings(run.config, run.shards)
    self.writer = metric_writers.create_writer(workdir, start_step=int(start.state.step),
                                               config=run.config)
    # The loss of a uniform guess: a loss far above it is a sign of divergence.
    self.chance = run.built.objective.chance_loss(run.source.num_classes)
    self.history: list[tuple[int, dict]] = []
    self.monitor = health_lib.LossMonitor(chance=self.chance)
    self.unjudged: Optional[int] = None  # the step saved last, until its next step is seen.
    self.train_data = self.batches = None
    self.skipped_images = 0  # reported so far.
    self.skipped_steps = 0   # non-finite updates dropped (skip_nonfinite_steps).
    self.rollbacks = 0
    self.shown_examples: dict = {}  # eval lines give example counts once (eval_line).
    self.suspects: list[int] = []  # the suspect checkpoints since the last healthy one.
    self.last_eval: dict[str, float] = {}

  def stream(self, step: int, positions=None) -> pipeline.TrainStream:
    """The training batches from `step` on (at `positions` where a checkpoint kept them)."""
    c, source = self.config, self.run_setup.source
    return pipeline.TrainStream(
        source, split=c.train_split, global_batch_size=c.batch_size,
        pp=self.built.host_pp_train, seed=c.seed, start_step=step,
        shards=self.run_setup.shards, num_batches=c.total_steps - step, positions=positions,
        workers=pipeline.num_workers(c.input_workers, source), pp_modules=c.pp_modules,
        spec=self.spec)

  def _open_stream(self, step: int, input_state, record) -> None:
    """The input from `step` on, and what the checkpoint kept of the metric history."""
    if self.train_data is not None:
      self.batches.close()
      self.train_data.close()
    self.train_data = self.stream(step, input_state and input_state.get("positions"))
    self.batches = device_feed.prefetch_to_mesh(self.train_data, self.built.mesh)
    self.skipped_images = 0
    record = record or {}
    # A stop's window not yet logged comes back with its checkpoint: the next log line
    # averages the same steps as an uninterrupted run's.
    self.history = step_history.from_record(record.get("pending_metrics"))
    # A resumed step never judged (a run's last checkpoint): its first step judges it.
    self.unjudged = step if step and self.checkpointer.health(step) is None else None
    self.monitor = health_lib.LossMonitor(record.get("recent_losses", []),
                                          record.get("loss_anchor"), chance=self.chance)

  def run(self, state, start: resume.Start) -> TrainState:
    c = self.config
    self._open_stream(int(state.step), start.input_state, start.record)
    first, start_time = int(state.step) + 1, time.perf_counter()
    console.line(f"Training steps {int(state.step)} -> {c.total_steps}")
    meter = _progress(c, self.built, self.train_step.base, int(state.step))
    while True:
      try:
        state = self._train(state, meter, first)
        break
      except _Diverged as diverged:
        state = self._roll_back(diverged.error)
        meter = _progress(c, self.built, self.train_step.base, int(state.step))
    if self.stop.signal is not None and int(state.step) < c.total_steps:
      return state
    _write_final(self.workdir, int(state.step), self.last_eval)
    console.line(progress.summary_line(
        steps=int(state.step) - first + 1, seconds=time.perf_counter() - start_time,
        batch_size=c.batch_size, final_eval=self.last_eval,
        checkpoint_dir=self.checkpointer.directory, skipped_steps=self.skipped_steps))
    return state

  def _train(self, state, meter: progress.Progress, first: int) -> TrainState:
    c, step = self.config, int(state.step)
    while step < c.total_steps:
      state, step_metrics = self.train_step.at(step)(state, next(self.batches))
      step += 1
      self.history.append((step, step_metrics))
      self.checkpointer.check(step)  # a failed background save stops the run here.
      should_save = step % c.checkpoint_every == 0 or step == c.total_steps
      stopping = self.stop.reached(step)
      pending = []
      if step % c.log_every == 0 or should_save:
        self.log(step, meter)
      elif stopping:  # shown, and kept with the checkpoint for the resumed run to log.
        pending = self.peek(step)
      elif step == first:  # a first sign of life; a resumed run records what an
        self.log(step, meter) if first == 1 else self.peek(step)  # uninterrupted one does.
      other_work = time.perf_counter()
      if should_save or stopping:
        self.save(step, state, force=stopping, pending=pending)
      if stopping:
        self.checkpointer.wait()
        console.line(f"Stopped by {self.stop.name} at step {step} with a checkpoint; run "
                     f"the same command to resume.")
        return state
      last = _evaluate(self.evaluators, self.writer, step, state,
                       final=step == c.total_steps, workdir=self.workdir,
                       shown=self.shown_examples)
      self.last_eval = last or self.last_eval
      meter.exclude(time.perf_counter() - other_work)  # img/s is the training rate.
    return state

  def save(self, step: int, state, *, force: bool, pending=()) -> None:
    self.writer.flush()  # metrics up to a checkpoint are kept with it (buckets).
    # Saves follow a log line, or (a stop between log lines) keep the `pending` window:
    # a resume records the same windows as an uninterrupted run.
    record = {"input": self.settings, "recent_losses": self.monitor.losses,
              "loss_anchor": self.monitor.anchor,
              "pending_metrics": step_history.to_record(list(pending))}
    self.checkpointer.save(step, state, record, self.train_data.state(step), force=force)
    self.unjudged = step
    console.line(f"Saving checkpoint at step {step}")

  def _judge(self, history) -> None:
    """The verdict on the checkpoint saved last: the loss its state gave at the next
    step (the rest of the window teaches the monitor the loss's normal range)."""
    for step, values in history:
      if step == (self.unjudged or -1) + 1:
        verdict = self.monitor.assess(float(values["train_loss"]),
                                      nonfinite=bool(values["nonfinite"]))
        self.checkpointer.judge(self.unjudged, verdict)
        self._say_verdict(self.unjudged, verdict)
        self.unjudged = None
      else:
        self.monitor.assess(float(values["train_loss"]), nonfinite=bool(values["nonfinite"]))

  def _say_verdict(self, step: int, verdict) -> None:
    """The first suspect checkpoint in a row in full, then one line every 10th."""
    self.suspects = [] if verdict.healthy else [*self.suspects, step]
    if len(self.suspects) == 1:
      console.warn(f"the checkpoint of step {step} is suspect: {verdict.why}.")
    elif self.suspects and len(self.suspects) % 10 == 0:
      kept = self.checkpointer.newest_healthy_before_suspect(self.checkpointer.steps())
      console.warn(f"{len(self.suspects)} checkpoints in a row are suspect (steps "
                   f"{self.suspects[0]}-{step}; now: {verdict.why}); "
                   + (f"the newest healthy one, step {kept}, is kept." if kept is not None
                      else "none older is healthy."))

  def _window(self):
    """The pending per-step metrics (one device sync), checked: a non-finite step stops
    the run (or rolls it back) before anything is saved."""
    history = jax.device_get(self.history)
    bad = step_history.first_nonfinite(history)
    if bad is not None and not self.config.skip_nonfinite_steps:
      self._judge(history)
      error = step_history.nonfinite_error(*bad, self.config)
      if (self.config.on_divergence == "rollback"
          and self.rollbacks < self.config.max_rollbacks):
        raise _Diverged(error)
      self.checkpointer.mark_divergence(error.step, "a non-finite loss, gradient or "
                                                    "parameter")
      raise error
    return history

  def log(self, step: int, meter: progress.Progress) -> None:
    """Checks, averages and records the window's metrics; judges the run's health."""
    self.lock.check()  # a bucket workdir's lock taken over by another run stops this one.
    history = self._window()
    self.history.clear()
    self._judge(history)
    skip = self.config.skip_nonfinite_steps
    scalars = {**step_history.mean_metrics(history, skip_nonfinite=skip),
               **meter.measure(step)}
    self.skipped_steps += int(scalars.get("skipped_steps", 0))
    skipped = self.train_data.skips.count - self.skipped_images
    self.skipped_images += skipped
    if skipped:
      scalars["skipped_images"] = float(skipped)  # since the last log line.
    self.writer.write_scalars(step, scalars)
    console.line(progress.Progress.line(step, self.config.total_steps, scalars))

  def peek(self, step: int) -> list:
    """The progress line of the steps so far, checked but not recorded (a resumed run
    then records the same windows as an uninterrupted one)."""
    history = self._window()
    scalars = step_history.mean_metrics(history, skip_nonfinite=self.config.skip_nonfinite_steps)
    console.line(progress.Progress.line(step, self.config.total_steps, scalars))
    return history

  def _roll_back(self, error: NonFiniteStepError) -> TrainState:
    """After a non-finite step (on_divergence='rollback'): the newest healthy checkpoint,
    and the stream moved on past what the earlier tries read: rollback k skips the next
    k x `rollback_skip_batches` batches, so no retry replays another's batches."""
    self.rollbacks += 1
    self.checkpointer.wait()
    restored = self.checkpointer.restore_setting_aside_newer(
        self.built.state.abstract, healthy_only=True,
        why_newer=lambda _: (checkpointer_lib.SUSPECT, "suspect (saved before the "
                                                        "divergence)"))
    if restored is None:
      raise error  # nothing to roll back to: stop as without rollback.
    input_state = self.checkpointer.restore_input(restored.step)
    skip = self.config.rollback_skip_batches * self.rollbacks
    shard_batch = self.train_data.shard_batch
    positions = (input_state or {}).get("positions") or {
        shard: restored.step * shard_batch for shard in self.train_data.positions}
    input_state = {"positions": {k: v + skip * shard_batch for k, v in positions.items()}}
    self.writer.close()
    metric_writers.forget_after(self.workdir, restored.step)
    self.writer = metric_writers.create_writer(self.workdir, start_step=restored.step,
                                               config=self.config)
    self._open_stream(restored.step, input_state, restored.record)
    console.warn(f"non-finite step {error.step}: rolled back to step {restored.step}, the "
                 f"newest healthy checkpoint, skipping the next {skip} batches (the "
                 f"batches of steps {restored.step + 1}-{restored.step + skip} are not "
                 f"used; rollback {self.rollbacks} of {self.config.max_rollbacks}).")
    return restored.state

  def close(self) -> None:
    try:
      if self.train_data is not None:
        self.batches.close()
        self.train_data.close()  # ends the input workers now, not at garbage collection.
    finally:
      self.checkpointer.close()
      self.writer.close()
