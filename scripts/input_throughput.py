"""Measures the input pipeline's images/s for decode + inception crop + flip at 224 px.

    python scripts/input_throughput.py [--images=512] [--seconds=20] [--resolution=224]

JPEGs of ImageNet's typical size (500x375) are decoded exactly as TfdsSource decodes
them, then run through the training preprocessing ops. Prints images/s in total and per
host core, beside the rate the trainer needs for the throughputs in BENCHMARKS.md.
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from vit_jax.data import preprocess  # noqa: E402

# Train-step rates a pipeline must sustain (images/s), from the trainer's targets.
NEEDED = {"ViT-B/16 on H100 (target 4,000 img/s)": 4000,
          "ViT-S/16 on H100 (target 10,000 img/s)": 10000}


def synthetic_jpegs(count: int, seed: int = 0) -> list[bytes]:
  """Smooth random images (compress like photos, unlike white noise)."""
  rng = np.random.default_rng(seed)
  images = []
  for _ in range(count):
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    image = tf.image.resize(small[None], (375, 500), method="bicubic")[0]
    image = tf.cast(tf.clip_by_value(image + rng.normal(0, 8, (375, 500, 3)), 0, 255), tf.uint8)
    images.append(tf.io.encode_jpeg(image, quality=90).numpy())
  return images


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--images", type=int, default=256)
  parser.add_argument("--seconds", type=float, default=20)
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--batch", type=int, default=128)
  args = parser.parse_args()

  feature = tfds.features.Image(encoding_format="jpeg")
  pp = preprocess.parse(f"inception_crop({args.resolution})|flip_lr|value_range(-1, 1)")
  jpegs = synthetic_jpegs(args.images)
  ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat().enumerate()
  ds = ds.map(lambda i, jpeg: pp({"image": feature.decode_example(jpeg),
                                  "seed": tf.stack([tf.constant(0, tf.int64), i])}),
              tf.data.AUTOTUNE)
  ds = ds.batch(args.batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  it = iter(ds)
  for _ in range(3):  # warm-up: thread pools, autotuning.
    next(it)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < args.seconds:
    batch = next(it)
    count += batch["image"].shape[0]
  rate = count / (time.perf_counter() - start)
  cores = os.cpu_count()
  print("\n| measure | value |\n|---|---|")
  print(f"| host cores | {cores} |")
  print(f"| images/s (decode + inception_crop({args.resolution}) + flip) | {rate:,.0f} |")
  print(f"| images/s per core | {rate / cores:,.0f} |")
  for what, needed in NEEDED.items():
    print(f"| cores needed for {what} | {needed / (rate / cores):,.0f} |")


if __name__ == "__main__":
  main()
