"""The fast JPEG path (decoding at a reduced DCT scale inside the crop), the pre-resized
folder, and the throughput script on the real pipeline."""
import importlib.util
import io
import os

import numpy as np
from PIL import Image

from tests import helpers
from vit_jax.data import pipeline, prepare_folder, sources
from vit_jax.pp import builder
from vit_jax.pp.images import EncodedImage

_spec = importlib.util.spec_from_file_location(
    "input_throughput", os.path.join(helpers.REPO, "scripts", "input_throughput.py"))
input_throughput = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(input_throughput)


def test_ops_on_encoded_jpegs_match_decode_then_op():
  """inception_crop/resize on a still-encoded JPEG decode at 1/2-1/8 scale when the output
  allows; the result matches decoding fully first, up to a few levels of rounding."""
  jpeg = EncodedImage(input_throughput.synthetic_jpegs(1, seed=3)[0], "x.jpg")
  decoded = jpeg.decode()
  assert decoded.shape == (375, 500, 3) and jpeg.hw == (375, 500)
  for pp in ("inception_crop(224)", "inception_crop(48)", "resize(64)", "resize((100, 150))"):
    for seed in range(4):
      fn = builder.build(pp)
      fast = fn({"image": jpeg, "seed": (seed, 0)})["image"].astype(np.int32)
      exact = fn({"image": decoded, "seed": (seed, 0)})["image"].astype(np.int32)
      assert fast.shape == exact.shape and fast.dtype == exact.dtype
      assert np.abs(fast - exact).mean() < 2.0, pp  # of 255 levels.


def test_ops_that_need_pixels_get_them_decoded():
  jpeg = EncodedImage(input_throughput.synthetic_jpegs(1)[0], "x.jpg")
  out = builder.build("flip_lr|central_crop(10)")({"image": jpeg, "seed": (0, 0)})["image"]
  assert out.shape == (10, 10, 3)
  gray = io.BytesIO()
  Image.new("L", (20, 10), 7).save(gray, format="PNG")
  kept = EncodedImage(gray.getvalue(), "g.png", keep_gray=True)
  assert np.asarray(kept).shape == (10, 20, 1)  # TFDS's grayscale stays one channel.
  assert builder.build("resize(5)")({"image": kept, "seed": (0, 0)})["image"].shape == (5, 5, 1)


def test_resized_folder_keeps_layout_and_shrinks_the_shorter_side(tmp_path):
  source = input_throughput.write_folder(input_throughput.synthetic_jpegs(6), tmp_path / "a")
  (tmp_path / "a" / "train" / "class_0" / "bad.jpg").write_bytes(b"not a jpeg")
  out = prepare_folder.resize_folder(str(source), str(tmp_path / "b"), shorter_side=100,
                                     processes=2)
  files = sorted(p.relative_to(out) for p in (tmp_path / "b").rglob("*.jpg"))
  assert len(files) == 6 and str(files[0]).startswith(os.path.join("train", "class_0"))
  assert all(Image.open(tmp_path / "b" / f).size == (133, 100) for f in files)


def test_throughput_script_measures_the_trainers_pipeline(tmp_path):
  jpegs = input_throughput.synthetic_jpegs(8)
  folder = input_throughput.write_folder(jpegs, str(tmp_path))

  class Args:
    batch, resolution, seconds, workers, host_normalize = 4, 32, 0.5, 1, False
  assert input_throughput.grain_rate(folder, Args()) > 0
  source = sources.get_source(f"folder:{folder}")
  batch = next(pipeline.TrainStream(source, split="train", global_batch_size=4,
                                    pp=input_throughput.PP.format(res=32), seed=0,
                                    shards=pipeline.DataShards(1, 0, 1)))
  assert batch["image"].shape == (4, 32, 32, 3)
