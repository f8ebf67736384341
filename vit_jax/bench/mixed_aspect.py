"""A folder of images of mixed aspect ratios, made offline from an offline digits dataset
(`data/offline.py`: scikit-learn's 8x8 digits upscaled 3x, or MNIST's 28x28): each digit
drawn at a random place on a noisy wide (1:3), tall (3:1) or square canvas. Squashing
such images to a square distorts the digit up to 3x along one axis; NaFlex keeps it.
DIR/{train,test}/digit_<k>/<i>.png, the dataset's own train / test split."""
from __future__ import annotations

import pathlib
from typing import Optional

import numpy as np

from vit_jax.data import offline

# (height, width) in digit sides: wide, tall, square.
SHAPES = ((1.0, 3.0), (3.0, 1.0), (5 / 3, 5 / 3))


def write(root, *, source: str = "sklearn_digits", train: Optional[int] = None,
          test: Optional[int] = None, seed: int = 0) -> pathlib.Path:
  """Writes the first `train` / `test` examples (None: all) of `source`'s splits under
  `root`; returns it."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(root)
  rng = np.random.default_rng(seed)
  for split, count in (("train", train), ("test", test)):
    images, labels = offline.LOADERS[source]()[split]
    for i, (digit, label) in enumerate(zip(images[:count], labels[:count])):
      digit = digit[..., 0]
      digit = np.kron(digit, np.ones((3, 3), np.uint8)) if digit.shape[0] < 16 else digit
      side = digit.shape[0]
      height, width = (int(round(side * s)) for s in SHAPES[rng.integers(len(SHAPES))])
      canvas = rng.integers(0, 60, (height, width)).astype(np.uint8)
      top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
      window = canvas[top:top + side, left:left + side]
      canvas[top:top + side, left:left + side] = np.maximum(window, digit)
      folder = root / split / f"digit_{label}"
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(canvas).convert("RGB").save(folder / f"{i:05d}.png")
  return root
