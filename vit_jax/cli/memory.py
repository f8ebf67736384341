r"""Memory and compute planning without the hardware: the train step compiled ahead of time
for a TPU topology by the TPU compiler (libtpu, on any machine) or for simulated CPU
devices, printing per-device bytes next to each chip's HBM.

    python -m vit_jax.cli.memory --config=configs/pretrain.py:b16,imagenet2012 \
        --topology=v5e:16x16 --config.batch_size=4096
    python -m vit_jax.cli.memory --config=configs/pretrain_large.py:h14,imagenet2012 \
        --num_devices=64 --config.mesh.data=8 --config.mesh.fsdp=8 --config.batch_size=4096

With --topology (pip install 'jax[tpu]' brings libtpu; no TPU needed) every figure is the
TPU compiler's: HBM per chip (arguments, outputs, donated, temporaries, code), FLOPs and
bytes accessed per step, the matmuls' operand dtypes, the attention kernel, the
collectives per step (count, bytes, largest single one), and a roofline (FLOPs at the
chip's peak bf16 rate, bytes at its HBM bandwidth: a ceiling, not a measurement). For
scanned blocks (XLA's cost analysis counts a loop body once) the whole step's costs come
from two and three unrolled blocks, compiled beside it.
With --num_devices the activations are XLA:CPU's view, a close estimate of what an
accelerator backend allocates. Parameters and optimizer state are counted exactly from
their shardings. The batch is global.
"""
from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from vit_jax.cli import common

config_flags.DEFINE_config_file("config", None, "Training config, e.g. "
                                "configs/pretrain.py:h14,imagenet2012", lock_config=True)
flags.DEFINE_string("topology", None, "A TPU topology to compile for with the TPU compiler, "
                    "e.g. v5e:2x4 (v5e-8), v5e:16x16, v4:2x2x4, v5p:8x8x4, v6e:16x16.")
flags.DEFINE_integer("num_slices", 1, "Slices of --topology (multi-slice, over DCN).")
flags.DEFINE_integer("num_devices", None, "Devices to plan for, simulated on the CPU "
                     "(without --topology); the config's mesh must fit them (-1 on one "
                     "axis takes the rest).")
flags.DEFINE_bool("max_batch", False, "Also find the largest global batch that fits the "
                  "chip (a compile per try).")
flags.DEFINE_integer("resolution", 224, "Image side in pixels.")
flags.DEFINE_integer("num_classes", 1000, "Classes of the head.")
flags.DEFINE_string("json", None, "Also write the figures here.")
FLAGS = flags.FLAGS


def print_plan(result: dict, chip=None) -> None:
  from vit_jax.bench import memory_plan  # pylint: disable=g-import-not-at-top
  from vit_jax.runtime.accelerators import CHIPS  # pylint: disable=g-import-not-at-top
  gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
  print(f"\n{result['model']} ({result['num_params']:,} params), global batch "
        f"{result['batch']} at {result['resolution']} px, {result['devices']} x "
        f"{result['device_kind']}, mesh {result['mesh']}")
  if "compiler_error" in result:
    print(f"\ndoes not fit: the compiler says {result['compiler_error']}")
    return
  print("\n| per device | bytes |\n|---|---|")
  for key, name in (("params_bytes", "parameters"), ("optimizer_bytes", "optimizer state"),
                    ("batch_bytes", "input batch"),
                    ("argument_bytes", "arguments (state + batch, as compiled)"),
                    ("output_bytes", "outputs"), ("alias_bytes", "donated (outputs reuse)"),
                    ("temp_bytes", "activations and temporaries"),
                    ("code_bytes", "generated code"),
                    ("total_bytes", "total (arguments + outputs - donated + temporaries + code)")):
    print(f"| {name} | {gib(result[key])} |")
  if result["mesh"].get("fsdp", 1) > 1:
    print(f"\nnot split over fsdp (a copy on every device): "
          f"{result['unsharded_state_fraction']:.1%} of the state")
  chips = [chip] if chip is not None else CHIPS
  print("\n| chip | HBM | fits |\n|---|---|---|")
  for c in chips:
    print(f"| {c.name} | {c.memory_bytes / 2**30:.0f} GiB | "
          f"{'yes' if result['total_bytes'] < 0.9 * c.memory_bytes else 'no'} |")
  if chip is None or not result.get("flops_per_device"):
    return
  flops, analytical = result["flops_per_device"], result["analytical_flops_per_device"]
  ratio = f" ({flops / analytical:.2f}x of 3x the analytical forward)" if analytical else ""
  scanned = (f"; the scanned blocks' costs from 2 and 3 unrolled blocks, compiled in "
             f"{result['cost_compile_seconds']:.0f} s"
             if result.get("costs_from_unrolled_blocks") else "")
  print(f"\ncompiled per device and step: {flops / 1e12:.3f} TFLOP{ratio}, "
        f"{result['bytes_accessed_per_device'] / 1e9:.2f} GB accessed; per image "
        f"{flops * result['devices'] / result['batch'] / 1e9:.2f} GFLOP; compiled in "
        f"{result['compile_seconds']:.0f} s{scanned}")
  dtypes = ", ".join(f"{n} {dtype}" for dtype, n in sorted(result["matmul_operand_dtypes"].items()))
  kernels = (f" ({result['tpu_kernels']} Pallas kernels: XLA counts the forward kernel's own "
             f"FLOP estimate, not the backward kernels')" if result.get("tpu_kernels") else "")
  print(f"attention: {result['attention_implementation']}{kernels}; matmuls by operand "
        f"dtype: {dtypes or 'none'}")
  line = memory_plan.roofline(result, chip)
  if line:
    mfu = f", MFU ceiling {line['mfu']:.0%}" if "mfu" in line else ""
    print(f"roofline ({chip.name}: {chip.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16, "
          f"{chip.hbm_bandwidth / 1e9:.0f} GB/s HBM): {line['step_seconds'] * 1e3:.1f} ms per "
          f"step ({line['bound']}-bound), {line['images_per_second']:,.0f} img/s{mfu}")
  if result["collectives"]:
    print("\n| collective (per device and step) | ops | bytes | largest one |\n|---|---|---|---|")
    for kind, found in result["collectives"].items():
      print(f"| {kind} | {found['count']} | {gib(found['bytes'])} | "
            f"{found['largest'] / 2**20:.2f} MiB |")


def main(argv) -> None:
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax.bench import memory_plan  # pylint: disable=g-import-not-at-top
  from vit_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  from vit_jax.runtime import accelerators  # pylint: disable=g-import-not-at-top
  if (FLAGS.topology is None) == (FLAGS.num_devices is None):
    raise UserError("give --topology=NAME (the TPU compiler, e.g. v5e:16x16) or "
                    "--num_devices=N (simulated CPU devices), not both or neither.")
  # Simulated CPU devices (or the CPU beside the TPU compiler): honoured as long as no
  # backend has started in this process.
  jax.config.update("jax_platforms", "cpu")
  if FLAGS.topology:
    with common.stderr_quiet():  # libtpu's warnings about the TPU VM it is not on.
      devices = memory_plan.topology_devices(FLAGS.topology, num_slices=FLAGS.num_slices)
  else:
    jax.config.update("jax_num_cpu_devices", FLAGS.num_devices)
    devices = jax.devices()
  chip = accelerators.chip_of_device(devices[0]) if FLAGS.topology else None
  result = memory_plan.plan(FLAGS.config, devices, resolution=FLAGS.resolution,
                            num_classes=FLAGS.num_classes)
  print_plan(result, chip)
  if FLAGS.max_batch:
    if chip is None:
      raise UserError("--max_batch needs --topology (the chip whose HBM is the limit).")
    result["max_batch"] = memory_plan.max_batch(
        FLAGS.config, devices, resolution=FLAGS.resolution, num_classes=FLAGS.num_classes,
        chip=chip)
    print(f"\nlargest global batch that fits {chip.name}'s {chip.memory_bytes / 2**30:.0f} "
          f"GiB: {result['max_batch']}")
  if FLAGS.json:
    from vit_jax import storage  # pylint: disable=g-import-not-at-top
    storage.write_text(FLAGS.json, json.dumps(result, indent=2))


if __name__ == "__main__":
  common.run(main)
