r"""The TPU plan table of README.md / BENCHMARKS.md: each row the planner's compile of the
trainer's step (`vit_jax.bench.memory_plan.plan`, what `python -m vit_jax.cli.memory
--topology=...` prints) for a config users run, on the topology named, in one process
(libtpu loaded once). Rows already in --out are kept (a rerun resumes).

    python scripts/tpu_plan_table.py --out=/tmp/tpu_plan [--only=b16]

Rows: pretrain.py B/16 and L/16 at batch 4096 on v4-32, v5e-256, v5p-128, v6e-256;
pretrain_large.py H/14, g/14, G/14 (FSDP 16 x model 16, remat, scan) on v5p-512 and on
two slices of v5e-256; finetune.py b16,cifar10 at 384 px on v5e-8 and v4-8; and the
attention kernels (einsum against Pallas flash) for B/16 at 224 and 384 px on v5e-256.
Each row's compile time is this machine's; rows run one after another.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

# (name, config file, config argument, topology, slices, resolution, classes, overrides)
LARGE_MESH = {"mesh.data": 1, "mesh.fsdp": 16, "mesh.model": 16}
ROWS = []
_PODS = (("v4:2x2x4", "v4-32"), ("v5e:16x16", "v5e-256"), ("v5p:4x4x4", "v5p-128"),
         ("v6e:16x16", "v6e-256"))
for _topology, _label in _PODS:
  ROWS.append((f"pretrain_b16_{_label}", "pretrain.py", "b16,imagenet2012", _topology, 1,
               224, 1000, {"batch_size": 4096}))
for _topology, _label in (("v5e:2x4", "v5e-8"), ("v4:2x2x1", "v4-8")):
  ROWS.append((f"finetune_b16_cifar10_384_{_label}", "finetune.py", "b16,cifar10", _topology,
               1, 384, 10, {"batch_size": 512}))
# What fits a v5e-8 with room to spare (the docstring of configs/finetune.py says it).
ROWS.append(("finetune_b16_cifar10_384_v5e-8_einsum", "finetune.py", "b16,cifar10", "v5e:2x4",
             1, 384, 10, {"batch_size": 512, "model.attention_implementation": "einsum"}))
ROWS.append(("finetune_b16_cifar10_384_v5e-8_batch256", "finetune.py", "b16,cifar10",
             "v5e:2x4", 1, 384, 10, {"batch_size": 256}))
# (The einsum row at 224 px is pretrain_b16_v5e-256: 'auto' is einsum below 512 tokens.)
for _resolution, _attention in ((224, "pallas"), (384, "einsum"), (384, "pallas")):
  ROWS.append((f"attention_b16_{_resolution}px_{_attention}_v5e-256", "pretrain.py",
               "b16,imagenet2012", "v5e:16x16", 1, _resolution, 1000,
               {"batch_size": 4096, "model.attention_implementation": _attention}))
for _model in ("g14", "h14", "G14"):
  ROWS.append((f"pretrain_large_{_model}_v5p-512", "pretrain_large.py",
               f"{_model},imagenet2012", "v5p:8x8x4", 1, 224, 1000,
               {"batch_size": 4096, **LARGE_MESH}))
  ROWS.append((f"pretrain_large_{_model}_2x_v5e-256", "pretrain_large.py",
               f"{_model},imagenet2012", "v5e:16x16", 2, 224, 1000,
               {"batch_size": 4096, "mesh.data": 2, "mesh.fsdp": 16, "mesh.model": 16}))
for _topology, _label in _PODS:
  ROWS.append((f"pretrain_l16_{_label}", "pretrain.py", "l16,imagenet2012", _topology, 1,
               224, 1000, {"batch_size": 4096}))


def _config(path: str, argument: str, overrides: dict):
  import importlib.util  # pylint: disable=import-outside-toplevel
  from vit_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(
      "plan_config", pathlib.Path(__file__).parent.parent / "configs" / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return config_lib.with_overrides(module.get_config(argument), overrides)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  parser.add_argument("--only", default="", help="Rows whose name contains this.")
  args = parser.parse_args()
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_platforms", "cpu")
  from vit_jax.bench import memory_plan  # pylint: disable=import-outside-toplevel
  from vit_jax.runtime import accelerators  # pylint: disable=import-outside-toplevel
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  for name, path, argument, topology, slices, resolution, classes, overrides in ROWS:
    target = out / f"{name}.json"
    if args.only not in name or target.exists():
      continue
    start = time.perf_counter()
    devices = memory_plan.topology_devices(topology, num_slices=slices)
    result = memory_plan.plan(_config(path, argument, overrides), devices,
                              resolution=resolution, num_classes=classes)
    chip = accelerators.chip_of_device(devices[0])
    result.update(config=f"{path}:{argument}", topology=topology, slices=slices,
                  overrides=overrides, wall_seconds=time.perf_counter() - start,
                  date=time.strftime("%Y-%m-%d"), roofline=memory_plan.roofline(result, chip),
                  chip_memory_bytes=chip.memory_bytes)
    target.write_text(json.dumps(result, indent=1))
    print(name, f"{result['wall_seconds']:.0f} s", flush=True)
  print(table(out))


def table(out: pathlib.Path) -> str:
  lines = ["| row | topology | mesh | HBM per chip | fits | TFLOP/chip/step (x 3x analytical) "
           "| GB accessed/chip | roofline img/s | attention | compile |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for name, *_ in ROWS:
    target = out / f"{name}.json"
    if not target.exists():
      continue
    r = json.loads(target.read_text())
    topology = r["topology"] + (f" x {r['slices']}" if r["slices"] > 1 else "")
    mesh = ", ".join(f"{k}:{v}" for k, v in r["mesh"].items() if v > 1)
    if "compiler_error" in r:
      lines.append(f"| {name} | {topology} | {mesh} | - | no: {r['compiler_error'][:120]} "
                   f"| - | - | - | - | {r['compile_seconds']:.0f} s |")
      continue
    fits = r["total_bytes"] < 0.9 * r["chip_memory_bytes"]
    flops = r.get("flops_per_device")
    ratio = (f"{flops / 1e12:.2f} ({flops / r['analytical_flops_per_device']:.3f}x)"
             if flops and r["analytical_flops_per_device"] else "-")
    accessed = f"{r['bytes_accessed_per_device'] / 1e9:.1f}" if flops else "-"
    line = r.get("roofline")
    roof = (f"{line['images_per_second']:,.0f} ({line['bound'].split()[0]}, MFU "
            f"{line.get('mfu', 0):.0%})" if line else "-")
    extra = (f" + {r['cost_compile_seconds']:.0f} s" if r.get("costs_from_unrolled_blocks")
             else "")
    lines.append(f"| {name} | {topology} | {mesh} | {r['total_bytes'] / 2**30:.2f} of "
                 f"{r['chip_memory_bytes'] / 2**30:.0f} GiB | {'yes' if fits else 'no'} | "
                 f"{ratio} | {accessed} | {roof} | {r['attention_implementation']} | "
                 f"{r['compile_seconds']:.0f} s{extra} |")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
