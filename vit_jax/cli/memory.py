r"""Memory planning without the hardware: compiles the train step ahead of time on a
simulated mesh of CPU devices and prints per-device bytes next to each chip's HBM.

    python -m vit_jax.tools.memory --config=configs/pretrain.py:h14,imagenet2012 \
        --mesh=data:8,fsdp:8 --batch=4096

Parameters and optimizer state are counted exactly from their shardings (bytes / shards);
activations and temporaries come from XLA's `memory_analysis()` of the compiled step on
the CPU backend, a close estimate of what an accelerator backend allocates (fusion and
layout choices differ). The batch is global.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys

# Device memory per JAX device (TPU v3: 16 GiB per core; others per chip).
HBM_BYTES = {
    "TPU v3": 16 * 2**30, "TPU v4": 32 * 2**30, "TPU v5e": 16 * 2**30, "TPU v5p": 95 * 2**30,
    "A100-80G": 80 * 2**30, "H100": 80 * 2**30, "H200": 141 * 2**30,
}


def parse_mesh(text: str) -> dict[str, int]:
  mesh = {}
  for part in text.split(","):
    name, _, size = part.partition(":")
    if not size.isdigit():
      raise ValueError(f"--mesh={text!r}: write axis:size pairs, e.g. data:8,fsdp:8.")
    mesh[name.strip()] = int(size)
  return mesh


def load_config(spec: str):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("vit_jax_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def plan(config, mesh_shape: dict[str, int], *, resolution: int, num_classes: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import optim, sharding as sharding_lib, state as state_lib, steps  # pylint: disable=g-import-not-at-top
  from vit_jax.models import create_model  # pylint: disable=g-import-not-at-top

  mesh = sharding_lib.make_mesh(mesh_shape)
  model = create_model(config.model_name, num_classes=num_classes, **config.model)
  tx, schedule = optim.make_optimizer(config)
  image_shape = (resolution, resolution, 3)
  spec = state_lib.make_state_spec(model, tx, mesh, image_shape, jax.random.key(0))
  train_step = steps.make_train_step(model, tx, schedule, loss=config.loss,
                                     label_smoothing=config.label_smoothing,
                                     accum_steps=config.accum_steps,
                                     mixup_alpha=config.mixup_alpha)
  batch = state_lib.abstract_batch(config.batch_size, image_shape, mesh)
  compiled = state_lib.jit_train_step(train_step, spec, mesh).lower(spec.abstract,
                                                                    batch).compile()
  analysis = compiled.memory_analysis()

  def per_device(tree):
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
               for x in jax.tree.leaves(tree))

  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(spec.abstract.params))
  result = {
      "model": config.model_name, "mesh": dict(mesh.shape), "batch": config.batch_size,
      "resolution": resolution, "num_params": num_params,
      "params_bytes": per_device(spec.abstract.params),
      "optimizer_bytes": per_device(spec.abstract.opt_state),
      "batch_bytes": per_device(batch),
      "temp_bytes": int(analysis.temp_size_in_bytes),
      "argument_bytes": int(analysis.argument_size_in_bytes),
      "output_bytes": int(analysis.output_size_in_bytes),
      "alias_bytes": int(analysis.alias_size_in_bytes),
  }
  result["total_bytes"] = (result["argument_bytes"] + result["output_bytes"]
                           - result["alias_bytes"] + result["temp_bytes"])
  return result


def print_plan(result: dict) -> None:
  gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
  print(f"\n{result['model']} ({result['num_params']:,} params), global batch "
        f"{result['batch']} at {result['resolution']} px, mesh {result['mesh']}")
  print("\n| per device | bytes |\n|---|---|")
  for key, name in (("params_bytes", "parameters"), ("optimizer_bytes", "optimizer state"),
                    ("batch_bytes", "input batch"),
                    ("temp_bytes", "activations and temporaries (XLA)"),
                    ("total_bytes", "total (arguments + outputs - donated + temporaries)")):
    print(f"| {name} | {gib(result[key])} |")
  print("\n| chip | HBM | fits |\n|---|---|---|")
  for chip, hbm in HBM_BYTES.items():
    print(f"| {chip} | {hbm / 2**30:.0f} GiB | "
          f"{'yes' if result['total_bytes'] < 0.9 * hbm else 'no'} |")


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="config file[:args]")
  parser.add_argument("--mesh", required=True, help="axis:size,... e.g. data:8,fsdp:8")
  parser.add_argument("--batch", type=int, default=None, help="global batch (default: config)")
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--num_classes", type=int, default=1000)
  parser.add_argument("--json", default=None, help="also write the figures here")
  parser.add_argument("--set", action="append", default=[],
                      help="config overrides, e.g. --set=model.remat_policy=full")
  args = parser.parse_args(argv)
  mesh_shape = parse_mesh(args.mesh)
  num_devices = math.prod(mesh_shape.values())
  import jax  # pylint: disable=g-import-not-at-top
  # Simulated CPU devices: honoured as long as no backend has started in this process.
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", num_devices)
  if jax.device_count() != num_devices:
    raise RuntimeError(f"jax already started with {jax.device_count()} devices in this "
                       f"process; run the memory tool in a fresh process for a "
                       f"{num_devices}-device mesh.")
  config = load_config(args.config).unlock()
  if args.batch:
    config.batch_size = args.batch
  for assignment in args.set:
    key, _, value = assignment.partition("=")
    target = config
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = type(target[leaf])(value) if target[leaf] is not None else value
  result = plan(config, mesh_shape, resolution=args.resolution, num_classes=args.num_classes)
  print_plan(result)
  if args.json:
    import json  # pylint: disable=g-import-not-at-top
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
