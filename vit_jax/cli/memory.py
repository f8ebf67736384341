r"""Memory planning without the hardware: compiles the train step ahead of time on a
simulated mesh of CPU devices and prints per-device bytes next to each chip's HBM.

    python -m vit_jax.cli.memory --config=configs/pretrain.py:h14,imagenet2012 \
        --num_devices=64 --config.mesh.data=8 --config.mesh.fsdp=8 --config.batch_size=4096

Parameters and optimizer state are counted exactly from their shardings (bytes / shards);
activations and temporaries come from XLA's `memory_analysis()` of the compiled step on
the CPU backend, a close estimate of what an accelerator backend allocates (fusion and
layout choices differ). The batch is global.
"""
from __future__ import annotations

import json
import math

from absl import flags
from ml_collections import config_flags

from vit_jax.cli import common

config_flags.DEFINE_config_file("config", None, "Training config, e.g. "
                                "configs/pretrain.py:h14,imagenet2012", lock_config=True)
flags.DEFINE_integer("num_devices", None, "Devices to plan for (simulated on the CPU); the "
                     "config's mesh must fit them (-1 on one axis takes the rest).",
                     required=True)
flags.DEFINE_integer("resolution", 224, "Image side in pixels.")
flags.DEFINE_integer("num_classes", 1000, "Classes of the head.")
flags.DEFINE_string("json", None, "Also write the figures here.")
FLAGS = flags.FLAGS

def plan(config, *, resolution: int, num_classes: int) -> dict:
  """Per-device bytes of the trainer's compiled step for `config` on all JAX devices."""
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.trainer import build as build_lib, setup  # pylint: disable=g-import-not-at-top

  mesh = sharding_lib.make_mesh(dict(config.mesh))
  setup.check_batch_size(config, mesh, num_data_shards=1)
  built = build_lib.build(config, mesh, num_classes=num_classes,
                          image_shape=(resolution, resolution, 3))
  analysis = built.compile_train_step().memory_analysis()

  def per_device(tree):
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
               for x in jax.tree.leaves(tree))

  abstract = built.state.abstract
  result = {
      "model": config.model_name, "mesh": dict(mesh.shape), "batch": config.batch_size,
      "resolution": resolution,
      "num_params": built.state.num_params,
      "num_param_arrays": len(jax.tree.leaves(abstract.params)),
      "params_bytes": per_device(abstract.params),
      "optimizer_bytes": per_device(abstract.opt_state),
      "batch_bytes": per_device(built.abstract_batch(config.batch_size)),
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
  from vit_jax.runtime.accelerators import CHIPS  # pylint: disable=g-import-not-at-top
  for chip in CHIPS:
    print(f"| {chip.name} | {chip.memory_bytes / 2**30:.0f} GiB | "
          f"{'yes' if result['total_bytes'] < 0.9 * chip.memory_bytes else 'no'} |")


def main(argv) -> None:
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  # Simulated CPU devices: honoured as long as no backend has started in this process.
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", FLAGS.num_devices)
  result = plan(FLAGS.config, resolution=FLAGS.resolution, num_classes=FLAGS.num_classes)
  print_plan(result)
  if FLAGS.json:
    from vit_jax import storage  # pylint: disable=g-import-not-at-top
    storage.write_text(FLAGS.json, json.dumps(result, indent=2))


if __name__ == "__main__":
  common.run(main)
