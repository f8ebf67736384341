"""Speed and memory of the train step on synthetic data already on the device: the
trainer's own build path timed (`run`), beside a minimal hand-written JAX step and timm
(`--compare`) and the host-fed loop (`--host_input`). The command and its tables are
`vit_jax.cli.benchmark`'s."""
from __future__ import annotations

import itertools
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax import console, storage
from vit_jax import sharding as sharding_lib
from vit_jax.bench import minimal_vit, profile_summary, step_timing
from vit_jax.bench.benchmark_timm import bench_timm
from vit_jax.data import device_feed
from vit_jax.models import create_model, flops
from vit_jax.runtime import accelerators
from vit_jax.trainer import build as build_lib, resolve


NUM_CLASSES = 1000


def _peak_memory(device):
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def build_ours(config, args, mesh):
  """(built, compiled train step, compile seconds), exactly as the trainer builds them."""
  resolved = resolve.resolve(config)  # uint8 input, normalised in the step, as trained.
  built = build_lib.build(resolved.config, mesh, num_classes=NUM_CLASSES,
                          image_shape=(args.resolution, args.resolution, 3),
                          host_pp_train=resolved.host_pp_train,
                          input_affine=resolved.input_affine)
  start = time.perf_counter()
  compiled = built.compile_train_step()
  return built, compiled, time.perf_counter() - start


def bench_ours(model, state, compiled, compile_seconds, batch, model_images, args) -> dict:
  """The compiled train step on `batch`, and the forward pass on `model_images`."""
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], batch)
    return metrics["train_loss"]

  result = {"train_step_s": step_timing.time_steps(run, steps=args.steps, warmup=args.warmup),
            "compile_s": compile_seconds, "xla_train_flops": flops.xla_flops(compiled)}
  if args.profile:
    result["profile"] = profile_summary.trace_top_kernels(run, log_dir=args.profile)
    # The HLO names the fusions of the kernel table.
    storage.write_text(storage.path(args.profile) / "train_step.hlo.txt", compiled.as_text())
  forward = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(
      holder["state"].params, model_images).compile()
  result["infer_step_s"] = step_timing.time_steps(
      lambda: forward(holder["state"].params, model_images), steps=args.steps,
      warmup=args.warmup)
  result["xla_forward_flops"] = flops.xla_flops(forward)
  result["peak_memory_bytes"] = _peak_memory(jax.devices()[0])
  return result


def synthetic_batch(built, args, rng: np.random.Generator) -> dict:
  """A host batch as the trainer's input stream gives it: uint8 images when the train
  step normalises them (`built.input_affine`), else float32 in [-1, 1]."""
  shape = (args.batch, args.resolution, args.resolution, 3)
  images = (rng.integers(0, 256, shape, dtype=np.uint8) if built.input_affine is not None
            else rng.uniform(-1, 1, shape).astype(np.float32))
  return {"image": images, "label": rng.integers(0, NUM_CLASSES, args.batch).astype(np.int32)}


def bench_host_fed(built, compiled, state, args) -> dict:
  """The trainer's loop: host numpy batches -> prefetch_to_mesh -> step; per-step metrics
  fetched every `log_every` steps. Measures transfers and loop overhead with the step."""
  rng, mesh = np.random.default_rng(1), built.mesh
  host_batches = [synthetic_batch(built, args, rng) for _ in range(4)]
  total = args.warmup + args.steps
  feed = device_feed.prefetch_to_mesh(itertools.islice(itertools.cycle(host_batches), total),
                                      mesh)
  for _ in range(args.warmup):
    state, metrics = compiled(state, next(feed))
  jax.block_until_ready(metrics)
  history, start = [], time.perf_counter()
  for step in range(args.steps):
    state, metrics = compiled(state, next(feed))
    history.append(metrics)
    if (step + 1) % args.log_every == 0:
      jax.device_get(history)
      history.clear()
  jax.block_until_ready((state, history))
  return {"train_step_s": {"mean": (time.perf_counter() - start) / args.steps}}


def bench_minimal(model, tx, params, batch, args) -> dict:
  """The same model, loss and optimizer written as plain JAX functions."""
  dtype = model.dtype

  def loss_fn(p, x, y):
    p = jax.tree.map(lambda v: v.astype(dtype), p)
    logits = minimal_vit.forward(p, x.astype(dtype), patch_size=model.patch_size,
                                 classifier=model.classifier, xp=jnp).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def train_step(p, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss

  holder = {"p": params, "o": tx.init(params)}
  start = time.perf_counter()
  compiled = jax.jit(train_step, donate_argnums=(0, 1)).lower(
      holder["p"], holder["o"], batch["image"], batch["label"]).compile()
  compile_seconds = time.perf_counter() - start

  def run():
    holder["p"], holder["o"], loss = compiled(holder["p"], holder["o"], batch["image"],
                                              batch["label"])
    return loss

  return {"train_step_s": step_timing.time_steps(run, steps=args.steps, warmup=args.warmup),
          "compile_s": compile_seconds}


def run(config, args) -> tuple[dict, list, float, float]:
  """(results, table rows, train FLOPs per step, peak FLOP/s) of timing the config's step
  as `args` says (`vit_jax.cli.benchmark.run_settings`)."""
  # timm first: JAX reserves most of the GPU's memory when it first touches it.
  timm_result = bench_timm(create_model(args.model, num_classes=NUM_CLASSES),
                           batch=args.batch, resolution=args.resolution, dtype=args.dtype,
                           steps=args.steps, warmup=args.warmup) if args.compare else None
  device = jax.devices()[0]
  mesh = sharding_lib.make_mesh({"data": 1}, devices=[device])
  built, compiled, compile_seconds = build_ours(config, args, mesh)
  model = built.model
  rng = np.random.default_rng(0)
  batch = device_feed.to_global_arrays(synthetic_batch(built, args, rng), mesh)
  model_batch = {**batch, "image": built.model_input(batch["image"])}  # forward, minimal.

  forward_flops = flops.vit_forward_flops(model, (args.resolution, args.resolution))
  train_flops = 3 * forward_flops * args.batch
  peak = accelerators.peak_flops(device)
  results = {"model": args.model, "batch": args.batch, "resolution": args.resolution,
             "dtype": args.dtype, "attention": args.attention, "remat": args.remat,
             "opt_dtype": args.opt_dtype, "device": device.device_kind,
             "platform": device.platform, "peak_flops": peak, "jax": jax.__version__,
             "python": platform.python_version(),
             "xla_flags": os.environ.get("XLA_FLAGS", ""),
             "forward_gflops_per_image": forward_flops / 1e9}

  init_state = lambda: built.init_state(jax.random.key(config.seed))  # noqa: E731
  state = init_state()
  initial_params = jax.tree.map(jnp.copy, state.params)  # the step donates its state.
  ours = bench_ours(model, state, compiled, compile_seconds, batch, model_batch["image"], args)
  results["ours"] = ours
  results["xla_forward_gflops_per_image"] = (ours["xla_forward_flops"] or 0) / args.batch / 1e9
  rows = [("vit_jax", ours)]
  if args.host_input:
    results["host_fed"] = bench_host_fed(built, compiled, init_state(), args)
    rows.append(("vit_jax, host-fed loop", results["host_fed"]))
  if args.compare:
    results["minimal_jax"] = bench_minimal(model, built.tx, initial_params, model_batch, args)
    rows.append(("minimal JAX", results["minimal_jax"]))
    results["overhead_ratio"] = (ours["train_step_s"]["median"]
                                 / results["minimal_jax"]["train_step_s"]["median"])
    if timm_result and "error" in timm_result:
      results["timm"] = timm_result
      console.line(f"timm: {timm_result['error']}")
    elif timm_result:
      results["timm"] = timm_result
      rows.append((f"timm ({'torch.compile' if timm_result['compiled'] else 'eager'}"
                   f"{', SDPA' if timm_result['fused_attention'] else ''})", timm_result))
      results["speedup_vs_timm"] = (timm_result["train_step_s"]["median"]
                                    / ours["train_step_s"]["median"])
  return results, rows, train_flops, peak
