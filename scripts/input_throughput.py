"""Measures the host's training input rate: decode + inception crop + flip at 224 px.

    python scripts/input_throughput.py [--backend=grain|tf] [--prepared] [--workers=N]

JPEGs of ImageNet's typical size (500x375), written as an image folder, go through:
  --backend=grain  the trainer's pipeline (vit_jax.data.pipeline.TrainStream: Grain,
                   decoding in worker processes, JPEG DCT scaling), no TensorFlow; uint8
                   out, as the trainer runs value_range in its train step on the device
                   (config.normalize_on_device);
  --host_normalize ... with value_range in the workers instead (float32 out);
  --prepared       ... over the same folder pre-resized once to a 256 px shorter side
                   (`python -m vit_jax.cli.prepare --folder=SRC --out=DST`);
  --backend=tf     the tf.data pipeline it replaced (tf.io.decode_jpeg, TensorFlow's
                   sample_distorted_bounding_box, antialiased resize), for comparison.
Prints images/s in total and per host core, and the cores needed for the GPU goals.
"""
import argparse
import io
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

# Train-step rates a host must feed (images/s): the H100 goals of BENCHMARKS.md.
NEEDED = {"ViT-B/16 on H100 (goal 4,700 img/s)": 4700,
          "ViT-S/16 on H100 (goal 10,000 img/s)": 10000}
PP = "inception_crop({res})|flip_lr|value_range(-1, 1)"


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


def write_folder(jpegs: list[bytes], root: str) -> str:
  for i, jpeg in enumerate(jpegs):
    folder = os.path.join(root, "train", f"class_{i % 4}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{i:05d}.jpg"), "wb") as f:
      f.write(jpeg)
  return root


def _timed(batches, seconds: float, warmup: int = 2) -> float:
  for _ in range(warmup):  # worker start-up, thread pools.
    next(batches)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    count += next(batches)["image"].shape[0]
  return count / (time.perf_counter() - start)


def grain_rate(folder: str, args) -> float:
  from vit_jax.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  from vit_jax.pp import builder  # pylint: disable=g-import-not-at-top
  pp = PP.format(res=args.resolution)
  if not args.host_normalize:  # as the trainer does (config.normalize_on_device).
    pp = builder.split_device_affine(pp)[0]
  stream = pipeline.TrainStream(
      sources.get_source(f"folder:{folder}"), split="train", global_batch_size=args.batch,
      pp=pp, seed=0, shards=pipeline.DataShards(1, 0, 1), workers=args.workers)
  try:
    return _timed(stream, args.seconds)
  finally:
    stream.close()


def tf_rate(jpegs: list[bytes], args) -> float:
  """The replaced tf.data path, op for op."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  size = (args.resolution, args.resolution)

  def example(i, jpeg):
    image = tf.io.decode_jpeg(jpeg, channels=3)
    seed = tf.stack([tf.constant(0, tf.int64), i])
    begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4], tf.float32), seed=seed, area_range=(0.05, 1.0),
        min_object_covered=0, use_image_if_no_bounding_boxes=True)
    image = tf.image.resize(tf.slice(image, begin, crop), size, antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    image = tf.image.stateless_random_flip_left_right(image, seed)
    return {"image": tf.cast(image, tf.float32) / 127.5 - 1}

  ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat().enumerate()
  ds = ds.map(example, tf.data.AUTOTUNE).batch(args.batch, drop_remainder=True)
  return _timed(iter(ds.prefetch(tf.data.AUTOTUNE)), args.seconds)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--backend", default="grain", choices=["grain", "tf"])
  parser.add_argument("--prepared", action="store_true")
  parser.add_argument("--host_normalize", action="store_true",
                      help="value_range in the input workers (normalize_on_device=False)")
  parser.add_argument("--workers", type=int, default=os.cpu_count())
  parser.add_argument("--images", type=int, default=256)
  parser.add_argument("--seconds", type=float, default=20)
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--batch", type=int, default=128)
  args = parser.parse_args()
  jpegs = synthetic_jpegs(args.images)
  with tempfile.TemporaryDirectory() as root:
    if args.backend == "tf":
      rate, path = tf_rate(jpegs, args), "tf.data"
    else:
      folder = write_folder(jpegs, os.path.join(root, "jpeg"))
      path = f"grain, {args.workers} worker processes"
      path += ", value_range on the host" if args.host_normalize else ", uint8 out"
      if args.prepared:
        from vit_jax.data import prepare_folder  # pylint: disable=g-import-not-at-top
        folder = prepare_folder.resize_folder(folder, os.path.join(root, "prepared"),
                                              shorter_side=256)
        path += ", pre-resized to 256"
      rate = grain_rate(folder, args)
  cores = os.cpu_count()
  print(f"\n| measure ({path}) | value |\n|---|---|")
  print(f"| host cores | {cores} |")
  print(f"| images/s (decode + inception_crop({args.resolution}) + flip) | {rate:,.0f} |")
  print(f"| images/s per core | {rate / cores:,.0f} |")
  for what, needed in NEEDED.items():
    print(f"| cores needed for {what} | {needed / (rate / cores):,.0f} |")


if __name__ == "__main__":
  main()
