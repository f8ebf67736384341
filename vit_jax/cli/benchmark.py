r"""Speed and memory of the train step, on synthetic data already on the device.

    python -m vit_jax.cli.benchmark --config=configs/benchmark.py:b16 \
        --config.batch_size=256 --config.model.attention_implementation=cudnn \
        --compare --host_input --json=/tmp/bench.json

Builds the step through the trainer's own build path (`vit_jax.trainer.build`: the config's model,
optimizer, sharded state, jit with donation and the non-finite guard) on one device and reports training images/s, inference images/s, model TFLOP/s
and MFU (forward FLOPs counted analytically, cross-checked with XLA's cost analysis;
training = 3 x forward), compile time and peak device memory. Timing: warm-up steps, then
min / median / max of per-step wall times, each step blocked until ready.

--compare also times a minimal hand-written JAX ViT (same params and optimizer: the
framework overhead) and timm (torch.compile, bf16 autocast, SDPA attention, fused AdamW) in
the same process. --host_input times the trainer's loop with batches coming from host
memory (transfers and metric fetches included). --profile prints where the device time
goes, per kernel class and for the top kernels. Prints tables and writes JSON; see
BENCHMARKS.md.
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags
from ml_collections import config_flags

from vit_jax import sharding as sharding_lib
from vit_jax import storage
from vit_jax.bench import minimal_vit, profile_summary, step_timing
from vit_jax.bench.benchmark_timm import bench_timm
from vit_jax.cli import common
from vit_jax.data import device_feed
from vit_jax.models import create_model, flops
from vit_jax.runtime import accelerators
from vit_jax.trainer import build as build_lib

config_flags.DEFINE_config_file("config", "configs/benchmark.py", "Config of the step to "
                                "time, e.g. configs/benchmark.py:l16", lock_config=True)
flags.DEFINE_integer("resolution", 224, "Image side in pixels.")
flags.DEFINE_integer("steps", 20, "Timed steps.")
flags.DEFINE_integer("warmup", 3, "Untimed steps first.")
flags.DEFINE_integer("log_every", 10, "Host-fed loop: fetch metrics every N steps, as the "
                     "trainer does.")
flags.DEFINE_bool("compare", False, "Also time the minimal JAX step and timm (if installed).")
flags.DEFINE_bool("host_input", False, "Also time the trainer's loop fed from host memory.")
flags.DEFINE_string("profile", None, "Trace 5 steps into this directory, print the top "
                    "device kernels and write the compiled step's HLO there.")
flags.DEFINE_string("json", None, "Write the results here.")
FLAGS = flags.FLAGS


def _peak_memory(device):
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def build_ours(config, args, mesh):
  """(built, compiled train step, compile seconds), exactly as the trainer builds them."""
  built = build_lib.build(config, mesh, num_classes=NUM_CLASSES,
                          image_shape=(args.resolution, args.resolution, 3))
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


NUM_CLASSES = 1000


def run_settings(config) -> types.SimpleNamespace:
  """The flags and the config's knobs that the tables print, in one place."""
  return types.SimpleNamespace(
      model=config.model_name, batch=config.batch_size, resolution=FLAGS.resolution,
      dtype=config.model.dtype, attention=config.model.attention_implementation,
      remat=config.model.remat_policy, opt_dtype=config.optimizer_dtype, steps=FLAGS.steps,
      warmup=FLAGS.warmup, log_every=FLAGS.log_every, profile=FLAGS.profile)


def _row(name: str, result: dict, args, train_flops: float, peak) -> str:
  timing = result["train_step_s"]
  seconds = step_timing.typical_seconds(timing)
  tflops = train_flops / seconds / 1e12
  mfu = f"{tflops * 1e12 / peak:.1%}" if peak else "n/a"
  spread = (f"{timing['min'] * 1e3:.1f} / {timing['median'] * 1e3:.1f} / "
            f"{timing['max'] * 1e3:.1f}" if "median" in timing else
            f"mean {timing['mean'] * 1e3:.1f}")
  infer = (f"{args.batch / result['infer_step_s']['median']:,.0f}"
           if "infer_step_s" in result else "-")
  compile_s = f"{result['compile_s']:.1f}" if "compile_s" in result else "-"
  memory = result.get("peak_memory_bytes")
  memory = f"{memory / 2**30:.2f} GiB" if memory else "-"
  return (f"| {name} | {args.batch / seconds:,.0f} | {spread} | {tflops:.1f} | {mfu} | "
          f"{infer} | {compile_s} | {memory} |")


def main(argv) -> None:
  del argv
  run_benchmark(FLAGS.config)


def run_benchmark(config) -> dict:
  args = run_settings(config)
  # timm first: JAX reserves most of the GPU's memory when it first touches it.
  timm_result = bench_timm(create_model(args.model, num_classes=NUM_CLASSES),
                           batch=args.batch, resolution=args.resolution, dtype=args.dtype,
                           steps=args.steps, warmup=args.warmup) if FLAGS.compare else None
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
  if FLAGS.host_input:
    results["host_fed"] = bench_host_fed(built, compiled, init_state(), args)
    rows.append(("vit_jax, host-fed loop", results["host_fed"]))
  if FLAGS.compare:
    results["minimal_jax"] = bench_minimal(model, built.tx, initial_params, model_batch, args)
    rows.append(("minimal JAX", results["minimal_jax"]))
    results["overhead_ratio"] = (ours["train_step_s"]["median"]
                                 / results["minimal_jax"]["train_step_s"]["median"])
    if timm_result and "error" in timm_result:
      results["timm"] = timm_result
      print(f"timm: {timm_result['error']}")
    elif timm_result:
      results["timm"] = timm_result
      rows.append((f"timm ({'torch.compile' if timm_result['compiled'] else 'eager'}"
                   f"{', SDPA' if timm_result['fused_attention'] else ''})", timm_result))
      results["speedup_vs_timm"] = (timm_result["train_step_s"]["median"]
                                    / ours["train_step_s"]["median"])
  print_report(results, rows, args, train_flops, peak)
  if FLAGS.json:
    storage.write_text(FLAGS.json, json.dumps(results, indent=2))
  return results


def print_report(results, rows, args, train_flops, peak) -> None:
  print(f"\n{args.model} batch {args.batch} at {args.resolution}px, {args.dtype}, attention "
        f"{args.attention}, remat {args.remat}, Adam mu {args.opt_dtype}, on "
        f"{results['device']} (jax {jax.__version__}); peak "
        f"{'%.0f TFLOP/s' % (peak / 1e12) if peak else 'unknown (MFU n/a)'}")
  print(f"forward GFLOPs/image: analytical {results['forward_gflops_per_image']:.4g}, XLA "
        f"{results['xla_forward_gflops_per_image']:.4g}\n")
  print("| implementation | train img/s | step ms min / median / max | train TFLOP/s | MFU | "
        "infer img/s | compile s | peak memory |")
  print("|---|---|---|---|---|---|---|---|")
  for name, result in rows:
    print(_row(name, result, args, train_flops, peak))
  if "overhead_ratio" in results:
    print(f"\nvit_jax step time / minimal JAX step time: {results['overhead_ratio']:.3f}")
  if "speedup_vs_timm" in results:
    print(f"vit_jax speed-up over timm: {results['speedup_vs_timm']:.2f}x "
          f"({results['timm']['version']})")
  if "profile" in results["ours"]:
    print(profile_summary.format_summary(results["ours"]["profile"],
                                         results["ours"]["train_step_s"]["median"]))


if __name__ == "__main__":
  common.run(main)
