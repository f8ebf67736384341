"""Measures the host's images/s for decode + inception crop + flip at 224 px.

    python scripts/input_throughput.py [--backend=tf|pil] [--images=256] [--seconds=20]

JPEGs of ImageNet's typical size (500x375) go through the training preprocessing:
  --backend=tf   tf.data, decoded exactly as TfdsSource decodes them, then the pp ops;
  --backend=pil  no TensorFlow: PIL in one worker process per core (JPEG draft mode
                 decodes at the smallest scale that still covers the crop).
Prints images/s in total and per host core, and the cores needed for the GPU goals.
"""
import argparse
import io
import multiprocessing
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

# Train-step rates a host must feed (images/s): the H100 goals of BENCHMARKS.md.
NEEDED = {"ViT-B/16 on H100 (goal 4,700 img/s)": 4700,
          "ViT-S/16 on H100 (goal 10,000 img/s)": 10000}


def synthetic_jpegs(count: int, seed: int = 0) -> list[bytes]:
  """Smooth random images (compress like photos, unlike white noise)."""
  rng = np.random.default_rng(seed)
  images = []
  for _ in range(count):
    small = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    image = np.asarray(small.resize((500, 375), Image.BICUBIC), np.float32)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    images.append(buffer.getvalue())
  return images


def pil_inception_crop(jpeg: bytes, size: int, rng: np.random.Generator) -> np.ndarray:
  """Random-area (5%-100%), aspect 3/4-4/3 crop resized to size x size, random flip."""
  image = Image.open(io.BytesIO(jpeg))
  width, height = image.size
  for _ in range(10):
    area = width * height * rng.uniform(0.05, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    w, h = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      break
  else:
    w, h = min(width, height), min(width, height)
  left, top = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
  scale = max(1, min(w, h) // size)  # JPEG draft: decode at 1/2, 1/4, 1/8 when enough.
  image.draft("RGB", (width // scale, height // scale))
  factor = image.size[0] / width
  box = tuple(int(v * factor) for v in (left, top, left + w, top + h))
  crop = image.convert("RGB").resize((size, size), Image.BILINEAR, box=box)
  array = np.asarray(crop, np.float32) / 127.5 - 1.0
  return array[:, ::-1] if rng.random() < 0.5 else array


def _pil_worker(args):
  jpegs, size, seconds, seed = args
  rng = np.random.default_rng(seed)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    pil_inception_crop(jpegs[count % len(jpegs)], size, rng)
    count += 1
  return count / (time.perf_counter() - start)


def pil_rate(jpegs, args) -> float:
  cores = os.cpu_count()
  with multiprocessing.Pool(cores) as pool:
    return sum(pool.map(_pil_worker, [(jpegs, args.resolution, args.seconds, i)
                                      for i in range(cores)]))


def tf_rate(jpegs, args) -> float:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  feature = tfds.features.Image(encoding_format="jpeg")
  pp = preprocess.parse(f"inception_crop({args.resolution})|flip_lr|value_range(-1, 1)")
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
    count += next(it)["image"].shape[0]
  return count / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--backend", default="tf", choices=["tf", "pil"])
  parser.add_argument("--images", type=int, default=256)
  parser.add_argument("--seconds", type=float, default=20)
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--batch", type=int, default=128)
  args = parser.parse_args()
  jpegs = synthetic_jpegs(args.images)
  rate = (pil_rate if args.backend == "pil" else tf_rate)(jpegs, args)
  cores = os.cpu_count()
  print(f"\n| measure ({args.backend}) | value |\n|---|---|")
  print(f"| host cores | {cores} |")
  print(f"| images/s (decode + inception_crop({args.resolution}) + flip) | {rate:,.0f} |")
  print(f"| images/s per core | {rate / cores:,.0f} |")
  for what, needed in NEEDED.items():
    print(f"| cores needed for {what} | {needed / (rate / cores):,.0f} |")


if __name__ == "__main__":
  main()
