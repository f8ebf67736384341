"""The trainer: `train_and_evaluate(config, workdir)`, one story from top to bottom.

Mesh -> input -> model and optimizer -> sharded state (fresh, resumed or fine-tuned) ->
compiled steps -> loop (train, log, evaluate, checkpoint, preemption). The same program
runs on one CPU, many simulated CPU devices, a GPU and a multi-host pod.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import parameter_overview

from vit_jax import checkpoint as npz_checkpoint
from vit_jax import fewshot, flops, metrics, optim, steps
from vit_jax import sharding as sharding_lib
from vit_jax import state as state_lib
from vit_jax import train_checkpoint
from vit_jax.data import device_feed, pipeline, sources
from vit_jax.models import create_model, patch_grid


class NonFiniteStepError(FloatingPointError):
  pass


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


# --- Helpers ----------------------------------------------------------------------------
def _place(tree: Any, shardings: Any) -> Any:
  """Host numpy (the same on every process) or jax arrays -> arrays with `shardings`."""
  def put(x, sharding):
    if isinstance(x, jax.Array):
      return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree, shardings)


def _load_pretrained(config, init_params: Any, grid: tuple[int, int]) -> Any:
  path = os.path.expanduser(config.pretrained)
  if path.endswith(".npz"):
    restored = npz_checkpoint.load_npz(path)
  elif os.path.isdir(path):
    restored, _ = train_checkpoint.restore_params_as_numpy(path)
  else:
    raise FileNotFoundError(f"pretrained={config.pretrained!r} is neither a .npz file nor a "
                            f"run's workdir / checkpoint directory.")
  metrics.log_line(f"Fine-tuning from {path}")
  return npz_checkpoint.adapt_for_finetuning(restored, init_params, target_grid=grid,
                                             reset_head=config.reset_head)


def _summarize_steps(history: list[tuple[int, dict]], *, skip_nonfinite: bool) -> dict:
  """Fetches pending per-step metrics (one device sync) and averages them over the finite
  steps. Runs before every checkpoint: a non-finite step stops the run here (unless such
  steps are skipped), so its state is never saved."""
  host = jax.device_get(history)
  bad = [(step, values) for step, values in host if values["nonfinite"]]
  if bad and not skip_nonfinite:
    step, values = bad[0]
    raise NonFiniteStepError(
        f"Non-finite training step {step} (loss {float(values['train_loss']):.4g}, grad norm "
        f"{float(values['grad_norm']):.4g}, or the updated parameters): it was not "
        f"checkpointed; the newest checkpoint is the last finite state. Lower the learning "
        f"rate, enable grad_clip_norm, check the input data or set skip_nonfinite_steps=True.")
  good = [values for _, values in host if not values["nonfinite"]] or [host[-1][1]]
  means = {key: float(np.mean([v[key] for v in good])) for key in good[0]
           if key not in ("nonfinite", "learning_rate")}
  means["learning_rate"] = float(host[-1][1]["learning_rate"])  # current, not a window mean.
  if skip_nonfinite:
    means["skipped_steps"] = float(len(bad))
  return means


def _data_state(config, data_sharding: pipeline.Sharding) -> dict:
  return {"dataset": config.dataset, "seed": config.seed, "batch_size": config.batch_size,
          "num_shards": data_sharding.num_shards}


def evaluate(eval_step, params, data: pipeline.EvalData, mesh) -> dict[str, float]:
  totals = None
  for batch in device_feed.prefetch_to_mesh(data, mesh):
    out = eval_step(params, batch)
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.0)
  return {"test_loss": float(totals["loss_sum"]) / count,
          "test_accuracy": float(totals["correct_sum"]) / count,
          "test_examples": float(totals["count"])}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> steps.TrainState:
  """Trains (or resumes) as configured; returns the final TrainState."""
  # --- Setup ----------------------------------------------------------------------------
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  writer = metrics.create_writer(workdir)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  metrics.log_line(f"Config:\n{config}")
  metrics.log_line(f"{jax.process_count()} process(es), {jax.device_count()} device(s) "
                   f"({jax.devices()[0].device_kind}), workdir {workdir}")

  # --- Mesh -----------------------------------------------------------------------------
  mesh = sharding_lib.make_mesh(dict(config.mesh))
  metrics.log_line(f"Mesh {dict(mesh.shape)}")
  if config.batch_size % config.accum_steps:
    raise ValueError(f"batch_size={config.batch_size} is not divisible by accum_steps="
                     f"{config.accum_steps}.")
  data_sharding = pipeline.Sharding.create(config.data_shards)
  metrics.log_line(f"Process {jax.process_index()} reads data shard(s) "
                   f"{list(data_sharding.local_shards)} of {data_sharding.num_shards}", every_process=True)
  pipeline.check_batch_size(config.batch_size // config.accum_steps,
                            num_devices=sharding_lib.batch_divisor(mesh),
                            num_shards=data_sharding.num_shards)

  # --- Input ----------------------------------------------------------------------------
  source = sources.from_config(config)
  test_data = pipeline.eval_dataset(source, split=config.test_split, pp=config.pp_eval,
                                    global_batch_size=config.eval_batch_size)
  image_shape = tuple(test_data.dataset.element_spec["image"].shape[1:])

  # --- Model and optimizer --------------------------------------------------------------
  model = create_model(config.model_name, num_classes=source.num_classes, **config.model)
  tx, schedule = optim.make_optimizer(config)
  rng = jax.random.key(config.seed)
  spec = state_lib.make_state_spec(model, tx, mesh, image_shape, rng)
  param_shardings, opt_shardings = spec.param_shardings, spec.opt_shardings
  replicated = sharding_lib.replicated(mesh)
  metrics.log_line(parameter_overview.get_parameter_overview(spec.abstract.params,
                                                             include_stats=False))

  # --- State: resume, fine-tune, or start fresh ----------------------------------------
  checkpointer = train_checkpoint.TrainCheckpointer(
      os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
  latest = checkpointer.latest_step()
  if latest is not None:
    state, data_state = checkpointer.restore(latest, spec.abstract)
    expected = _data_state(config, data_sharding)
    if data_state != expected:
      logging.warning("Input settings changed since the checkpoint (%s -> %s): the data "
                      "stream will not continue exactly.", data_state, expected)
    metrics.log_line(f"Resumed from step {latest} in {checkpointer.directory}")
  else:
    state = jax.jit(spec.init, out_shardings=spec.shardings)(rng)
    if config.pretrained:
      grid = patch_grid(model, *image_shape[:2])
      params = _place(_load_pretrained(config, state.params, grid), param_shardings)
      opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
      state = state.replace(params=params, opt_state=opt_state)
  start_step = int(state.step)

  # --- Compiled steps -------------------------------------------------------------------
  batch_sharding = sharding_lib.batch_sharding(mesh)
  train_step = steps.with_nonfinite_guard(
      steps.make_train_step(model, tx, schedule, loss=config.loss,
                            label_smoothing=config.label_smoothing,
                            accum_steps=config.accum_steps, mixup_alpha=config.mixup_alpha),
      skip_nonfinite=config.skip_nonfinite_steps)

  def jit_on_params_and_batch(fn):
    """Params as trained, a sharded batch in, results replicated to every process."""
    return jax.jit(sharding_lib.with_activation_sharding(fn, mesh),
                   in_shardings=(param_shardings, batch_sharding), out_shardings=replicated)

  eval_step = jit_on_params_and_batch(steps.make_eval_step(model, loss=config.loss))
  represent = steps.make_representation_fn(model)
  represent_jit = jit_on_params_and_batch(
      lambda p, b: (represent(p, b["image"]), b["label"], b["mask"]))

  train_data = pipeline.train_dataset(
      source, split=config.train_split, global_batch_size=config.batch_size, pp=config.pp_train,
      seed=config.seed, start_step=start_step, shuffle_buffer=config.shuffle_buffer,
      sharding=data_sharding)
  label_spec = train_data.element_spec["label"]
  batch_spec = state_lib.abstract_batch(config.batch_size, image_shape, mesh,
                                        label_shape=tuple(label_spec.shape[1:]),
                                        integer_labels=label_spec.dtype.is_integer)
  compile_start = time.perf_counter()
  compiled_train_step = state_lib.jit_train_step(train_step, spec, mesh).lower(
      spec.abstract, batch_spec).compile()
  metrics.log_line(f"Compiled the train step in {time.perf_counter() - compile_start:.1f}s")
  try:
    step_flops = 3 * flops.vit_forward_flops(model, image_shape[:2]) * config.batch_size
  except ValueError:  # hybrid models: XLA's own count.
    step_flops = flops.xla_flops(compiled_train_step)
  peak = flops.peak_flops()
  progress = metrics.Progress(total_steps=config.total_steps, start_step=start_step,
                              batch_size=config.batch_size, flops_per_step=step_flops,
                              peak_flops=peak * jax.device_count() if peak else None)

  fewshot_data = None
  if config.fewshot.shots:
    fewshot_source = sources.from_config(config, config.fewshot.dataset or None)
    fewshot_data = [pipeline.eval_dataset(fewshot_source, split=split,
                                          global_batch_size=config.eval_batch_size,
                                          pp=config.fewshot.pp or config.pp_eval)
                    for split in (config.fewshot.train_split, config.fewshot.test_split)]

  def run_evals(step: int, state, *, final: bool = False):
    results = evaluate(eval_step, state.params, test_data, mesh)
    if fewshot_data and (final or (config.fewshot.every and step % config.fewshot.every == 0)):
      features = [fewshot.collect_features(lambda b: represent_jit(state.params, b),
                                           device_feed.prefetch_to_mesh(data, mesh))
                  for data in fewshot_data]
      results.update(fewshot.evaluate(*features[0], *features[1], shots=config.fewshot.shots,
                                      num_classes=fewshot_source.num_classes,
                                      l2_reg=config.fewshot.l2_reg))
    writer.write_scalars(step, results)
    metrics.log_line(f"eval step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in
                                                        sorted(results.items())))
    return results

  viz_images = next(iter(test_data))["image"][:4] if config.viz_every else None

  def write_figures(step: int, state):
    """The paper's analysis figures (attention rollout, ...) to TensorBoard."""
    from vit_jax import visualize  # pylint: disable=g-import-not-at-top  (matplotlib)
    params = sharding_lib.to_host(state.params)
    if jax.process_index() == 0:
      figures = visualize.make_figures(model, params, viz_images)
      writer.write_images(step, {name: visualize.figure_to_array(fig)[None]
                                 for name, fig in figures.items()})

  # --- Loop -----------------------------------------------------------------------------
  preemption = PreemptionWatcher()
  batches = device_feed.prefetch_to_mesh(train_data.as_numpy_iterator(), mesh)
  history: list[tuple[int, dict]] = []
  step = start_step
  metrics.log_line(f"Training steps {start_step} -> {config.total_steps}, global batch "
                   f"{config.batch_size}")
  try:
    while step < config.total_steps:
      state, step_metrics = compiled_train_step(state, next(batches))
      step += 1
      history.append((step, step_metrics))
      should_save = step % config.checkpoint_every == 0 or step == config.total_steps
      preempted = preemption.reached(step)
      if step % config.log_every == 0 or should_save or preempted or step == start_step + 1:
        scalars = {**_summarize_steps(history, skip_nonfinite=config.skip_nonfinite_steps),
                   **progress.measure(step)}
        history.clear()
        writer.write_scalars(step, scalars)
        metrics.log_line(metrics.Progress.line(step, config.total_steps, scalars))
      if should_save or preempted:
        checkpointer.save(step, state, _data_state(config, data_sharding), force=preempted)
        metrics.log_line(f"Saving checkpoint at step {step}")
      if preempted:
        checkpointer.wait()
        metrics.log_line(f"Preempted (SIGTERM): stopped at step {step} with a checkpoint; "
                         f"run the same command to resume.")
        return state
      if config.eval_every and step % config.eval_every == 0 and step < config.total_steps:
        run_evals(step, state)
      if config.viz_every and step % config.viz_every == 0:
        write_figures(step, state)
    if step == config.total_steps:
      run_evals(step, state, final=True)
    return state
  finally:
    preemption.close()
    checkpointer.close()
    writer.flush()
