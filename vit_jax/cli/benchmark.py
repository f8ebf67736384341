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

import json
import types

import jax
from absl import flags
from ml_collections import config_flags

from vit_jax import storage
from vit_jax.bench import profile_summary, step_timing, train_step
from vit_jax.cli import common

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


def run_settings(config) -> types.SimpleNamespace:
  """The flags and the config's knobs that the tables print, in one place."""
  return types.SimpleNamespace(
      model=config.model_name, batch=config.batch_size, resolution=FLAGS.resolution,
      dtype=config.model.dtype, attention=config.model.attention_implementation,
      remat=config.model.remat_policy, opt_dtype=config.optimizer_dtype, steps=FLAGS.steps,
      warmup=FLAGS.warmup, log_every=FLAGS.log_every, profile=FLAGS.profile,
      compare=FLAGS.compare, host_input=FLAGS.host_input)


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
  results, rows, train_flops, peak = train_step.run(config, args)
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
