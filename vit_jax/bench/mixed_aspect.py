"""A folder of images of mixed aspect ratios, made offline: the scikit-learn digits
(8x8, upscaled) each drawn at a random place on a wide (1:3), tall (3:1) or square
canvas with noise. Squashing such images to a square distorts the digit up to 3x along
one axis; NaFlex keeps it. DIR/{train,test}/digit_<k>/<i>.png."""
from __future__ import annotations

import pathlib

import numpy as np

SHAPES = ((24, 72), (72, 24), (40, 40))  # (height, width): wide, tall, square.


def write(root, *, count: int = 1797, seed: int = 0, test_every: int = 5) -> pathlib.Path:
  """Writes `count` images (every `test_every`-th to test) under `root`; returns it."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(root)
  digits = load_digits()
  rng = np.random.default_rng(seed)
  for i in range(min(count, len(digits.images))):
    height, width = SHAPES[rng.integers(len(SHAPES))]
    canvas = rng.integers(0, 60, (height, width), dtype=np.uint8)
    digit = np.kron(digits.images[i] * 255 / 16, np.ones((3, 3))).astype(np.uint8)
    top = rng.integers(0, height - 24 + 1)
    left = rng.integers(0, width - 24 + 1)
    canvas[top:top + 24, left:left + 24] = np.maximum(canvas[top:top + 24, left:left + 24],
                                                      digit)
    split = "test" if i % test_every == 0 else "train"
    folder = root / split / f"digit_{digits.target[i]}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).convert("RGB").save(folder / f"{i:04d}.png")
  return root
