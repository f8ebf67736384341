r"""vit_jax's ViT-B/16 pre-training step next to big_vision's, compiled by the same TPU
compiler for the same topology and batch: FLOPs, bytes accessed and HBM per chip.

big_vision's own model code (`big_vision/models/vit.py`) is used from a checkout given
with --big_vision, or cloned into a temporary folder (needs the network); nothing of it
is kept. Its step is what big_vision's trainer does for this model: optax AdamW (bf16 first
moment, as big_vision's configs set `mu_dtype`), clipping at global norm 1, softmax
cross-entropy, parameters replicated and the batch split over every chip.

    python scripts/big_vision_side_by_side.py --topology=v5e:16x16 --batch_size=4096 \
        [--big_vision=PATH_TO_CHECKOUT] [--json=OUT]

The same architecture on both sides: B/16, [class] token, learned position embeddings,
dropout 0.1, bfloat16 matmuls, 1000 classes at 224 px (vit_jax: configs/pretrain.py
b16,imagenet2012).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def _big_vision_checkout(path: str | None) -> str:
  if path:
    return path
  target = tempfile.mkdtemp(prefix="big_vision_")
  subprocess.run(["git", "clone", "--depth", "1",
                  "https://github.com/google-research/big_vision", target], check=True)
  return target


def loader_mismatches(expected: dict, loaded: dict, what: str, atol: float = 0.0) -> float:
  """Prints how many of `expected`'s flat arrays big_vision's loader gave back otherwise
  (`what`: which loader and layout); 1.0 if any differ, else 0.0."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  mismatched = [k for k in expected if not np.allclose(np.asarray(loaded[k]),
                                                      np.asarray(expected[k]), atol=atol,
                                                      rtol=0.0)]
  print(f"big_vision's {what}: {len(expected)} arrays, {len(mismatched)} differ"
        f"{' ' + str(mismatched[:3]) if mismatched else ''}")
  return float(bool(mismatched))


def big_vision_step(devices, *, batch_size: int, resolution: int):
  """big_vision's B/16 train step compiled for `devices`: (compiled, compile seconds)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel
  from big_vision.models import vit as bv_vit  # pylint: disable=import-outside-toplevel

  model = bv_vit.Model(num_classes=1000, variant="B/16", pool_type="tok", posemb="learn",
                       dropout=0.1, dtype_mm="bfloat16")
  schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 10_000, 93_750)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(schedule, b1=0.9, b2=0.999, weight_decay=0.3,
                               mu_dtype=jnp.bfloat16))
  image = jax.ShapeDtypeStruct((batch_size, resolution, resolution, 3), jnp.float32)
  params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, resolution, resolution, 3)))["params"])
  opt_state = jax.eval_shape(tx.init, params)

  def train_step(params, opt_state, images, labels, rng):
    def loss_fn(p):
      logits, _ = model.apply({"params": p}, images, train=True, rngs={"dropout": rng})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  mesh = Mesh(np.asarray(devices), ("data",))
  replicated, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
  on = lambda tree, sharding: jax.tree.map(  # noqa: E731
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
  key = jax.eval_shape(lambda: jax.random.key(0))
  step = jax.jit(train_step, donate_argnums=(0, 1),
                 out_shardings=(replicated, replicated, replicated))
  start = time.perf_counter()
  compiled = step.lower(on(params, replicated), on(opt_state, replicated),
                        on(image, split),
                        on(jax.ShapeDtypeStruct((batch_size,), jnp.int32), split),
                        on(key, replicated)).compile()
  return compiled, time.perf_counter() - start


def figures(compiled, seconds: float) -> dict:
  from vit_jax.bench import memory_plan  # pylint: disable=import-outside-toplevel
  analysis = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
           - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes
           + (getattr(analysis, "generated_code_size_in_bytes", 0) or 0))
  return {"flops_per_device": float(cost["flops"]),
          "bytes_accessed_per_device": float(cost["bytes accessed"]),
          "total_bytes": int(total), "temp_bytes": int(analysis.temp_size_in_bytes),
          "compile_seconds": seconds,
          "matmul_operand_dtypes": memory_plan.matmul_dtypes(compiled.as_text())}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--topology", default="v5e:16x16")
  parser.add_argument("--batch_size", type=int, default=4096)
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--big_vision", default=None, help="A big_vision checkout.")
  parser.add_argument("--json", default=None)
  args = parser.parse_args()
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_platforms", "cpu")
  sys.path.insert(0, _big_vision_checkout(args.big_vision))
  from vit_jax.bench import memory_plan  # pylint: disable=import-outside-toplevel
  import importlib.util  # pylint: disable=import-outside-toplevel
  devices = memory_plan.topology_devices(args.topology)

  spec = importlib.util.spec_from_file_location(
      "pretrain", os.path.join(os.path.dirname(__file__), "..", "configs", "pretrain.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("b16,imagenet2012")
  with config.unlocked():
    config.batch_size = args.batch_size
  ours = memory_plan.plan(config, devices, resolution=args.resolution, num_classes=1000)
  theirs = figures(*big_vision_step(devices, batch_size=args.batch_size,
                                    resolution=args.resolution))
  rows = [("TFLOP per chip and step", lambda r: f"{r['flops_per_device'] / 1e12:.3f}"),
          ("GB accessed per chip and step", lambda r: f"{r['bytes_accessed_per_device'] / 1e9:.2f}"),
          ("HBM per chip (GiB)", lambda r: f"{r['total_bytes'] / 2**30:.2f}"),
          ("temporaries per chip (GiB)", lambda r: f"{r['temp_bytes'] / 2**30:.2f}"),
          ("matmuls by operand dtype", lambda r: str(r["matmul_operand_dtypes"])),
          ("compile (s, this machine)", lambda r: f"{r['compile_seconds']:.0f}")]
  print(f"\nViT-B/16 train step, global batch {args.batch_size} at {args.resolution} px, "
        f"{len(devices)} x {devices[0].device_kind} ({args.topology}), "
        f"{time.strftime('%Y-%m-%d')}\n")
  print("| per chip | vit_jax | big_vision |\n|---|---|---|")
  for name, show in rows:
    print(f"| {name} | {show(ours)} | {show(theirs)} |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"vit_jax": ours, "big_vision": theirs}, f, indent=1)


if __name__ == "__main__":
  main()
