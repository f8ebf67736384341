r"""Writes a synthetic image-folder dataset of ten shape classes: data no recipe was tuned
on, for checking configs/small_data.py and its baselines on another kind of image.

    python scripts/make_shapes_folder.py --out=/tmp/shapes --train=600 --test=200

Each image (32x32 RGB, PNG) is one shape (circle, ring, square, frame, triangle, diamond,
cross, star, horizontal or vertical bar) of random size, position, small rotation and
colour on a random background, with two thin clutter lines and pixel noise; train/ and
test/ hold `--train` / `--test` images per class from different seeds.
"""
import argparse
import math
import pathlib

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "ring", "square", "frame", "triangle", "diamond", "cross", "star",
           "hbar", "vbar")


def _polygon(cx, cy, radius, sides, angle, inner=None):
  points = []
  for i in range(sides * (2 if inner else 1)):
    r = inner if inner and i % 2 else radius
    a = angle + i * math.pi / (sides if inner else sides / 2)
    points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
  return points


def draw(kind: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
  background = tuple(int(v) for v in rng.integers(0, 256, 3))
  image = Image.new("RGB", (size, size), background)
  pen = ImageDraw.Draw(image)
  for _ in range(2):  # clutter
    pen.line([tuple(rng.uniform(0, size, 2)), tuple(rng.uniform(0, size, 2))],
             fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=1)
  colour = tuple(int((b + rng.integers(80, 176)) % 256) for b in background)
  r = rng.uniform(6, 12)
  cx, cy = rng.uniform(r, size - r, 2)
  tilt = rng.uniform(-0.35, 0.35)
  box = (cx - r, cy - r, cx + r, cy + r)
  if kind == "circle":
    pen.ellipse(box, fill=colour)
  elif kind == "ring":
    pen.ellipse(box, outline=colour, width=max(2, int(r / 3)))
  elif kind in ("square", "frame"):
    square = _polygon(cx, cy, r * 1.2, 4, math.pi / 4 + tilt)
    if kind == "square":
      pen.polygon(square, fill=colour)
    else:
      pen.line(square + square[:1], fill=colour, width=max(2, int(r / 3)))
  elif kind == "triangle":
    pen.polygon(_polygon(cx, cy, r * 1.2, 3, -math.pi / 2 + tilt), fill=colour)
  elif kind == "diamond":
    pen.polygon(_polygon(cx, cy, r * 1.2, 4, tilt), fill=colour)
  elif kind == "cross":
    w = r / 3
    pen.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
    pen.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
  elif kind == "star":
    pen.polygon(_polygon(cx, cy, r * 1.2, 5, -math.pi / 2 + tilt, inner=r * 0.5), fill=colour)
  elif kind == "hbar":
    pen.rectangle((cx - r, cy - r / 4, cx + r, cy + r / 4), fill=colour)
  else:  # vbar
    pen.rectangle((cx - r / 4, cy - r, cx + r / 4, cy + r), fill=colour)
  pixels = np.asarray(image, np.float32) + rng.normal(0, 12, (size, size, 3))
  return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--train", type=int, default=600)
  parser.add_argument("--test", type=int, default=200)
  args = parser.parse_args()
  for split, count, seed in (("train", args.train, 0), ("test", args.test, 1)):
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
      folder = pathlib.Path(args.out) / split / kind
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(count):
        draw(kind, rng).save(folder / f"{i:04d}.png")
  print(f"{args.out}: {len(CLASSES)} classes, {args.train} train / {args.test} test each")


if __name__ == "__main__":
  main()
