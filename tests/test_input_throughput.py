"""The TF-free host decode path of scripts/input_throughput.py (the GPU host's measure)."""
import importlib.util
import os

import numpy as np

from tests import helpers

_spec = importlib.util.spec_from_file_location(
    "input_throughput", os.path.join(helpers.REPO, "scripts", "input_throughput.py"))
input_throughput = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(input_throughput)


def test_pil_inception_crop_shape_range_and_flip():
  jpeg = input_throughput.synthetic_jpegs(1)[0]
  crops = [input_throughput.pil_inception_crop(jpeg, 64, np.random.default_rng(seed))
           for seed in range(8)]
  for crop in crops:
    assert crop.shape == (64, 64, 3) and crop.dtype == np.float32
    assert -1.0 <= crop.min() and crop.max() <= 1.0
  # Different seeds give different crops (random area, position and flip).
  assert len({crop.tobytes() for crop in crops}) == len(crops)


def test_pil_inception_crop_of_the_whole_image_matches_a_plain_resize():
  """With the crop forced to the whole image and no flip, the op is decode + resize."""
  from PIL import Image
  import io
  jpeg = input_throughput.synthetic_jpegs(1, seed=3)[0]

  class WholeImage:
    def uniform(self, low, high):
      return high if high == 1.0 else 0.0   # area fraction 1, log-aspect 0.
    def integers(self, low, high):
      return 0
    def random(self):
      return 0.9                             # no flip.

  crop = input_throughput.pil_inception_crop(jpeg, 96, WholeImage())
  # 500x375 is not square, so an area-1 crop of aspect 1 does not fit: the fallback is the
  # central min-side square at (0, 0) given integers() == 0.
  image = Image.open(io.BytesIO(jpeg)).convert("RGB")
  side = min(image.size)
  reference = np.asarray(image.resize((96, 96), Image.BILINEAR, box=(0, 0, side, side)),
                         np.float32) / 127.5 - 1.0
  assert np.abs(crop - reference).mean() < 0.05   # JPEG draft decoding at 1/2 or 1/4 scale.
