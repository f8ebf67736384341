r"""Does saving a checkpoint stall training? Step times while the trainer's asynchronous
orbax save runs, against the steady state, and the time to restore; for a local disk and
a bucket (a real GCS-protocol server on loopback, or your own bucket).

    python scripts/checkpoint_stall.py --model=ViT-S_16 --batch=8            # local + emulator
    python scripts/checkpoint_stall.py --bucket=gs://my-bucket/stall_test    # a real bucket

Prints one markdown table row per storage (BENCHMARKS.md has the measured table).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure(directory: str, *, model: str, batch: int, steps: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vit_jax import config as config_lib, sharding  # pylint: disable=import-outside-toplevel
  from vit_jax.trainer import build, checkpointer  # pylint: disable=import-outside-toplevel

  config = config_lib.base_config()
  config.model_name, config.batch_size, config.optimizer = model, batch, "adam"
  config.total_steps, config.warmup_steps = 1000, 10
  mesh = sharding.make_mesh({"data": -1})
  built = build.build(config, mesh, num_classes=1000, image_shape=(224, 224, 3))
  step_fn = built.compile_train_step()
  state = built.init_state(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch_data = jax.device_put(
      {"image": rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8),
       "label": rng.integers(0, 1000, batch).astype(np.int32)},
      sharding.batch_sharding(mesh))

  def timed_step(state):
    start = time.perf_counter()
    state, metrics = step_fn(state, batch_data)
    jax.block_until_ready(metrics)
    return state, time.perf_counter() - start

  for _ in range(3):  # warm-up
    state, _ = timed_step(state)
  steady = []
  for _ in range(steps):
    state, seconds = timed_step(state)
    steady.append(seconds)
  saver = checkpointer.TrainCheckpointer(directory, keep=2)
  start = time.perf_counter()
  saver.save(int(state.step), state, {"dataset": "synthetic"})
  save_call = time.perf_counter() - start
  during = []
  while saver.manager.is_saving_in_progress() if hasattr(saver.manager, "is_saving_in_progress") \
      else len(during) < steps:
    state, seconds = timed_step(state)
    during.append(seconds)
    if len(during) >= 200:
      break
  saver.wait()
  saved_total = time.perf_counter() - start
  saved_step = saver.latest_step()
  start = time.perf_counter()
  restored, _ = saver.restore(saved_step, built.state.abstract)
  jax.block_until_ready(restored)
  restore = time.perf_counter() - start
  saver.close()
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  return {"state_mb": state_bytes / 2**20, "steady_ms": 1000 * statistics.median(steady),
          "during_ms": 1000 * statistics.median(during or [float("nan")]),
          "during_max_ms": 1000 * max(during or [float("nan")]), "steps_during": len(during),
          "save_call_s": save_call, "save_total_s": saved_total, "restore_s": restore}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="ViT-S_16")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=8, help="steady-state steps timed")
  parser.add_argument("--bucket", default=None, help="a gs:// folder (default: the emulator)")
  args = parser.parse_args()
  rows = []
  with tempfile.TemporaryDirectory() as local:
    rows.append(("local disk", measure(os.path.join(local, "ckpt"), model=args.model,
                                       batch=args.batch, steps=args.steps)))
  if args.bucket:
    rows.append((args.bucket, measure(f"{args.bucket.rstrip('/')}/ckpt", model=args.model,
                                      batch=args.batch, steps=args.steps)))
  else:
    from tests import gcs_server  # pylint: disable=import-outside-toplevel
    with gcs_server.running() as url:
      os.environ.update(gcs_server.environment(url))
      gcs_server.create_bucket(url, "stall-bench")
      rows.append(("bucket (fake-gcs-server, loopback)",
                   measure("gs://stall-bench/ckpt", model=args.model, batch=args.batch,
                           steps=args.steps)))
  print(f"\n{args.model}, batch {args.batch}, Adam state; step times in ms (median)\n")
  print("| storage | state MB | steady step | step during save (median / max) | steps "
        "during save | save() returns | save complete | restore |")
  print("|---|---|---|---|---|---|---|---|")
  for name, r in rows:
    print(f"| {name} | {r['state_mb']:.0f} | {r['steady_ms']:.0f} | {r['during_ms']:.0f} / "
          f"{r['during_max_ms']:.0f} | {r['steps_during']} | {r['save_call_s']:.2f} s | "
          f"{r['save_total_s']:.2f} s | {r['restore_s']:.2f} s |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
