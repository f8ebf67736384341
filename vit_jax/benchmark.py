r"""Speed and memory of the train step, on synthetic data already on the device.

    python -m vit_jax.benchmark --model=ViT-B_16 --batch=256 --resolution=224 \
        --dtype=bfloat16 --attention=cudnn --compare --json=/tmp/bench.json

Measures training images/s, inference images/s, model TFLOP/s and MFU (forward FLOPs
counted analytically, cross-checked with XLA's cost analysis; training = 3 x forward),
compile time and peak device memory, on one device. Timing: warm-up steps, then the median
of per-step wall times, each step blocked until ready. With --compare, the same step is
also timed for a minimal hand-written JAX ViT (same params, same optimizer: the framework
overhead ratio) and, when torch and timm are installed, for timm's ViT (bf16 autocast and
torch.compile on GPU). Prints a table and writes JSON. See BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax import flops, minimal_vit, sharding as sharding_lib, steps
from vit_jax.models import create_model


def _median_step_seconds(run: Callable[[], object], *, steps_: int, warmup: int) -> float:
  for _ in range(warmup):
    jax.block_until_ready(run())
  times = []
  for _ in range(steps_):
    start = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _peak_memory(device) -> Optional[int]:
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def _optimizer():
  # The pre-training optimizer: clipping + AdamW on weight matrices.
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, weight_decay=0.1))


def bench_ours(model, params, images, labels, args) -> dict:
  device = jax.devices()[0]
  mesh = sharding_lib.make_mesh({"data": 1}, devices=[device])
  tx = _optimizer()
  params = jax.tree.map(jnp.copy, params)  # the step donates its state.
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(0)))
  train_step = steps.make_train_step(model, tx, optax.constant_schedule(1e-3), loss="softmax",
                                     label_smoothing=0.0, accum_steps=1)

  batch = {"image": images, "label": labels}
  start = time.perf_counter()
  compiled = jax.jit(sharding_lib.with_activation_sharding(train_step, mesh), donate_argnums=(0,)).lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], batch)
    return metrics["train_loss"]

  train_seconds = _median_step_seconds(run, steps_=args.steps, warmup=args.warmup)
  forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
  forward_compiled = forward.lower(holder["state"].params, images).compile()
  infer_seconds = _median_step_seconds(lambda: forward_compiled(holder["state"].params, images),
                                       steps_=args.steps, warmup=args.warmup)
  return {"train_step_s": train_seconds, "infer_step_s": infer_seconds,
          "compile_s": compile_seconds, "peak_memory_bytes": _peak_memory(device),
          "xla_train_flops": flops.xla_flops(compiled),
          "xla_forward_flops": flops.xla_flops(forward_compiled)}


def bench_minimal(model, params, images, labels, args) -> dict:
  """The same model, loss and optimizer written as plain JAX functions."""
  tx = _optimizer()
  dtype = model.dtype
  params = jax.tree.map(jnp.copy, params)  # the step donates its params.

  def loss_fn(p, x, y):
    p = jax.tree.map(lambda v: v.astype(dtype), p)
    logits = minimal_vit.forward(p, x.astype(dtype), patch_size=model.patch_size,
                                 classifier=model.classifier, xp=jnp).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def train_step(p, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss

  start = time.perf_counter()
  compiled = jax.jit(train_step, donate_argnums=(0, 1)).lower(
      params, tx.init(params), images, labels).compile()
  compile_seconds = time.perf_counter() - start
  holder = {"p": params, "o": tx.init(params)}

  def run():
    holder["p"], holder["o"], loss = compiled(holder["p"], holder["o"], images, labels)
    return loss

  return {"train_step_s": _median_step_seconds(run, steps_=args.steps, warmup=args.warmup),
          "compile_s": compile_seconds}


def bench_timm(model, args) -> Optional[dict]:
  try:
    import timm  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  cuda = torch.cuda.is_available()
  device = "cuda" if cuda else "cpu"
  net = timm.models.vision_transformer.VisionTransformer(
      img_size=args.resolution, patch_size=model.patch_size, embed_dim=model.hidden_size,
      depth=model.num_layers, num_heads=model.num_heads,
      mlp_ratio=model.mlp_dim / model.hidden_size, num_classes=1000).to(device)
  optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.1)
  images = torch.randn(args.batch, 3, args.resolution, args.resolution, device=device)
  labels = torch.randint(0, 1000, (args.batch,), device=device)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
  compiled = torch.compile(net) if cuda and hasattr(torch, "compile") else net

  def step():
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      loss = torch.nn.functional.cross_entropy(compiled(images), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    optimizer.step()
    if cuda:
      torch.cuda.synchronize()
    return None

  seconds = _median_step_seconds(step, steps_=args.steps, warmup=args.warmup)
  return {"train_step_s": seconds, "compiled": compiled is not net,
          "version": f"timm {timm.__version__}, torch {torch.__version__}"}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="ViT-B_16")
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
  parser.add_argument("--attention", default="einsum", choices=["einsum", "xla", "cudnn"])
  parser.add_argument("--remat", default="none")
  parser.add_argument("--steps", type=int, default=20, help="timed steps (median)")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--compare", action="store_true",
                      help="also time the minimal JAX step and timm (if installed)")
  parser.add_argument("--json", default=None, help="write the results here")
  args = parser.parse_args(argv)

  model = create_model(args.model, num_classes=1000, dtype=args.dtype,
                       attention_implementation=args.attention, remat_policy=args.remat)
  rng = np.random.default_rng(0)
  images = jax.device_put(jnp.asarray(
      rng.uniform(-1, 1, (args.batch, args.resolution, args.resolution, 3)), jnp.float32))
  labels = jax.device_put(jnp.asarray(rng.integers(0, 1000, args.batch), jnp.int32))
  params = jax.jit(lambda: __import__("flax").linen.unbox(
      model.init(jax.random.key(0), images[:1])["params"]))()
  # Random heads: a zero head makes the first steps' gradients unrealistically sparse.
  params["head"]["kernel"] = jax.random.normal(jax.random.key(1), params["head"]["kernel"].shape) \
      * 0.01

  forward_flops = flops.vit_forward_flops(model, (args.resolution, args.resolution))
  train_flops = 3 * forward_flops * args.batch
  device = jax.devices()[0]
  peak = flops.peak_flops(device)
  results = {"model": args.model, "batch": args.batch, "resolution": args.resolution,
             "dtype": args.dtype, "attention": args.attention, "remat": args.remat,
             "device": device.device_kind, "platform": device.platform,
             "peak_flops": peak, "jax": jax.__version__, "python": platform.python_version(),
             "forward_gflops_per_image": forward_flops / 1e9}
  ours = bench_ours(model, params, images, labels, args)
  results["ours"] = ours
  results["xla_forward_gflops_per_image"] = (ours["xla_forward_flops"] or 0) / args.batch / 1e9
  rows = [("vit_jax", ours)]
  if args.compare:
    results["minimal_jax"] = bench_minimal(model, params, images, labels, args)
    rows.append(("minimal JAX", results["minimal_jax"]))
    results["overhead_ratio"] = ours["train_step_s"] / results["minimal_jax"]["train_step_s"]
    timm_result = bench_timm(model, args)
    if timm_result:
      results["timm"] = timm_result
      rows.append((f"timm{' (compiled)' if timm_result['compiled'] else ' (eager)'}",
                   timm_result))
      results["speedup_vs_timm"] = timm_result["train_step_s"] / ours["train_step_s"]

  print(f"\n{args.model} batch {args.batch} at {args.resolution}px, {args.dtype}, attention "
        f"{args.attention}, on {device.device_kind} ({jax.device_count()} device(s) present, "
        f"1 used); peak {'%.0f TFLOP/s' % (peak / 1e12) if peak else 'unknown (MFU n/a)'}")
  print(f"forward GFLOPs/image: analytical {forward_flops / 1e9:.4g}, XLA "
        f"{results['xla_forward_gflops_per_image']:.4g}\n")
  print("| implementation | train img/s | train TFLOP/s | MFU | infer img/s | compile s | "
        "peak memory |")
  print("|---|---|---|---|---|---|---|")
  for name, r in rows:
    rate = args.batch / r["train_step_s"]
    tflops = train_flops / r["train_step_s"] / 1e12
    mfu = f"{tflops * 1e12 / peak:.1%}" if peak else "n/a"
    infer = f"{args.batch / r['infer_step_s']:,.1f}" if "infer_step_s" in r else "-"
    compile_s = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
    memory = r.get("peak_memory_bytes")
    memory = f"{memory / 2**30:.2f} GiB" if memory else "n/a"
    print(f"| {name} | {rate:,.1f} | {tflops:.3f} | {mfu} | {infer} | {compile_s} | {memory} |")
  if "overhead_ratio" in results:
    print(f"\nvit_jax step time / minimal JAX step time: {results['overhead_ratio']:.3f}")
  if "speedup_vs_timm" in results:
    print(f"vit_jax speed-up over timm: {results['speedup_vs_timm']:.2f}x")
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
