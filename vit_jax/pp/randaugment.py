"""RandAugment (Cubuk et al. 2020) as a pp op, in numpy/PIL: `randaug(2, 10)`.

Each image gets `num_layers` ops drawn uniformly (with replacement) from the 17 of
big_vision's / timm's RandAugment, each at `magnitude` in [0, 10]. Magnitudes grow the
distortion for every op (timm's "increasing" variant, so that magnitude 0 changes
nothing geometric and 10 is the strongest): rotate up to 30 degrees, shear up to 0.3,
translate up to 45% of the side, colour/contrast/brightness/sharpness factors 1 +- 0.9,
posterize down to 4 bits, solarize threshold down to 0, cutout up to 20% of the side.
The signs of rotate, shear, translate and the enhancement factors are random. Takes
uint8 (H, W, C) images (after `to_rgb`, before `value_range`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from vit_jax.pp.registry import register

GRAY = 128  # fill value of pixels that a geometric op uncovers.


def _signed(value: float, rng) -> float:
  return value if rng.integers(2) else -value


def _pil(fn: Callable[[Image.Image], Image.Image]) -> Callable:
  def op(image: np.ndarray, magnitude: float, rng) -> np.ndarray:
    del magnitude, rng
    return np.asarray(fn(Image.fromarray(image)))
  return op


def _enhance(enhancer) -> Callable:
  def op(image, magnitude, rng):
    factor = 1.0 + _signed(0.9 * magnitude / 10, rng)
    return np.asarray(enhancer(Image.fromarray(image)).enhance(factor))
  return op


def _affine(image: np.ndarray, matrix: tuple) -> np.ndarray:
  """PIL's inverse-mapped affine transform (output pixel -> input coordinates)."""
  fill = (GRAY,) * image.shape[-1] if image.shape[-1] > 1 else GRAY
  return np.asarray(Image.fromarray(image).transform(
      (image.shape[1], image.shape[0]), Image.AFFINE, matrix, resample=Image.NEAREST,
      fillcolor=fill))


def rotate(image, magnitude, rng):
  fill = (GRAY,) * image.shape[-1] if image.shape[-1] > 1 else GRAY
  return np.asarray(Image.fromarray(image).rotate(_signed(30.0 * magnitude / 10, rng),
                                                  fillcolor=fill))


def shear_x(image, magnitude, rng):
  return _affine(image, (1, _signed(0.3 * magnitude / 10, rng), 0, 0, 1, 0))


def shear_y(image, magnitude, rng):
  return _affine(image, (1, 0, 0, _signed(0.3 * magnitude / 10, rng), 1, 0))


def translate(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """Content moved by (dy, dx) whole pixels, the uncovered band gray."""
  out = np.full_like(image, GRAY)
  h, w = image.shape[:2]
  out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
      image[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
  return out


def translate_x(image, magnitude, rng):
  return translate(image, 0, round(_signed(0.45 * magnitude / 10, rng) * image.shape[1]))


def translate_y(image, magnitude, rng):
  return translate(image, round(_signed(0.45 * magnitude / 10, rng) * image.shape[0]), 0)


def posterize(image, magnitude, rng):
  del rng
  shift = int(4 * magnitude / 10)  # bits dropped: 0..4.
  return (image >> shift) << shift


def solarize(image, magnitude, rng):
  del rng
  threshold = 256 - int(256 * magnitude / 10)
  return np.where(image >= threshold, 255 - image, image).astype(np.uint8)


def solarize_add(image, magnitude, rng):
  del rng
  added = np.clip(image.astype(np.int32) + int(110 * magnitude / 10), 0, 255).astype(np.uint8)
  return np.where(image < 128, added, image)


def cutout(image, magnitude, rng):
  """A gray square, its side up to 20% of the image's, centred anywhere."""
  h, w = image.shape[:2]
  half = int(round(0.2 * magnitude / 10 * min(h, w) / 2))
  cy, cx = int(rng.integers(h)), int(rng.integers(w))
  out = image.copy()
  out[max(cy - half, 0):cy + half, max(cx - half, 0):cx + half] = GRAY
  return out


def identity(image, magnitude, rng):
  del magnitude, rng
  return image


OPS: dict[str, Callable] = {
    "identity": identity,
    "auto_contrast": _pil(ImageOps.autocontrast),
    "equalize": _pil(ImageOps.equalize),
    "invert": _pil(ImageOps.invert),
    "rotate": rotate,
    "posterize": posterize,
    "solarize": solarize,
    "solarize_add": solarize_add,
    "color": _enhance(ImageEnhance.Color),
    "contrast": _enhance(ImageEnhance.Contrast),
    "brightness": _enhance(ImageEnhance.Brightness),
    "sharpness": _enhance(ImageEnhance.Sharpness),
    "shear_x": shear_x,
    "shear_y": shear_y,
    "translate_x": translate_x,
    "translate_y": translate_y,
    "cutout": cutout,
}
_NAMES = tuple(OPS)


@register("randaug", salt=4)
def randaug(num_layers: int = 2, magnitude: float = 10, exclude: tuple = ()):
  """`num_layers` random ops at `magnitude` (0-10); `exclude` names ops to leave out
  (e.g. ('invert',) for data whose meaning changes under inversion)."""
  names = tuple(n for n in _NAMES if n not in exclude)
  unknown = set(exclude) - set(_NAMES)
  if unknown:
    raise ValueError(f"randaug: unknown op(s) {sorted(unknown)}; ops: {list(_NAMES)}.")

  def op(image: np.ndarray, rng) -> np.ndarray:
    squeeze = image.ndim == 3 and image.shape[-1] == 1
    image = image[..., 0] if squeeze else image  # PIL wants (H, W) for one channel.
    for index in rng.integers(len(names), size=num_layers):
      image = OPS[names[index]](image, magnitude, rng)
    return image[..., None] if squeeze else image
  return op
