"""The built-in image ops (numpy/PIL, one example at a time, in the input workers):
crops, resizes, flips, channels and the final value map (`value_range`, `normalize`)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from vit_jax.errors import UserError
from vit_jax.pp.images import RESAMPLING, crop_and_resize, image_hw, size2
from vit_jax.pp.registry import register


def sample_crop_window(height: int, width: int, rng: np.random.Generator, *,
                       area_range=(0.05, 1.0), aspect_range=(3 / 4, 4 / 3),
                       attempts: int = 10) -> tuple[int, int, int, int]:
  """(top, left, crop height, crop width) covering a uniform fraction of the area in
  `area_range` with a uniform aspect ratio in `aspect_range` (GoogLeNet's crop, as
  TensorFlow's sample_distorted_bounding_box draws it); the whole image when no draw fits."""
  for _ in range(attempts):
    area = rng.uniform(*area_range) * height * width
    aspect = rng.uniform(*aspect_range)
    crop_h = int(round(math.sqrt(area / aspect)))
    crop_w = int(round(math.sqrt(area * aspect)))
    if 0 < crop_h <= height and 0 < crop_w <= width:
      top = int(rng.integers(0, height - crop_h + 1))
      left = int(rng.integers(0, width - crop_w + 1))
      return top, left, crop_h, crop_w
  return 0, 0, height, width


# Salts 1-3: stable across versions, so a resumed run augments alike.
@register("inception_crop", salt=1, encoded=True, sizes=("size",))
def inception_crop(size, area_min: float = 5, area_max: float = 100):
  """Random crop of 5-100% of the area, aspect 3/4-4/3, resized to `size` (GoogLeNet)."""
  def crop(image, rng):
    window = sample_crop_window(*image_hw(image), rng,
                                area_range=(area_min / 100, area_max / 100))
    return crop_and_resize(image, window, size)
  return crop


@register("resize", encoded=True, sizes=("size",))
def resize(size, method="bilinear"):
  """Bilinear or bicubic (antialiased) resize to `size` (int or (height, width)), uint8
  out."""
  _check_method(method)
  return lambda image, rng: crop_and_resize(image, (0, 0, *image_hw(image)), size, method)


def _check_method(method: str) -> None:
  if method not in RESAMPLING:
    raise UserError(f"resize method {method!r} is not one of {sorted(RESAMPLING)}.")


@register("resize_small", encoded=True, sizes=("size",))
def resize_small(size, method="bilinear"):
  """The shorter side to `size`, the aspect ratio kept (timm's and transformers' eval
  resize before a centre crop: 'resize_small(256)|central_crop(224)')."""
  _check_method(method)

  def op(image, rng):
    height, width = image_hw(image)
    # As torchvision and transformers compute it: the longer side truncated.
    target = ((size, int(size * width / height)) if height <= width
              else (int(size * height / width), size))
    return crop_and_resize(image, (0, 0, height, width), target, method)
  return op


@register("random_crop", salt=2, sizes=("size",))
def random_crop(size):
  def op(image, rng):
    height, width = size2(size)
    if height > image.shape[0] or width > image.shape[1]:
      raise UserError(f"random_crop({size}) of a {image.shape[0]}x{image.shape[1]} image: "
                      f"resize first (e.g. 'resize({max(height, width)})|random_crop(...)').")
    top = int(rng.integers(0, image.shape[0] - height + 1))
    left = int(rng.integers(0, image.shape[1] - width + 1))
    return image[top:top + height, left:left + width]
  return op


@register("central_crop", sizes=("size",))
def central_crop(size):
  """The centre `size` crop: 'resize(256)|central_crop(224)' is the ImageNet evaluation."""
  def op(image, rng):
    height, width = size2(size)
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return image[top:top + height, left:left + width]
  return op


@register("flip_lr", salt=3)
def flip_lr():
  return lambda image, rng: image[:, ::-1] if rng.integers(2) else image


@register("to_rgb")
def to_rgb():
  """Grayscale (1 channel) -> 3 identical channels; RGB(A) -> its first 3 channels."""
  return lambda image, rng: np.repeat(image, 3, -1) if image.shape[-1] == 1 else image[..., :3]


@dataclasses.dataclass(frozen=True, eq=False)
class Affine:
  """images -> float32 images * scale + offset (per channel): `value_range` and
  `normalize`. The same map runs on numpy arrays (in the input workers) or jax arrays (in
  the train step, see `builder.split_device_affine`)."""
  scale: np.ndarray
  offset: np.ndarray

  @classmethod
  def of(cls, scale, offset) -> "Affine":
    return cls(np.asarray(scale, np.float32), np.asarray(offset, np.float32))

  def __call__(self, images, rng=None) -> Any:
    return images.astype(np.float32) * self.scale + self.offset


@register("value_range", affine=True)
def value_range(low: float = -1, high: float = 1) -> Affine:
  """uint8 [0, 255] -> float32 [low, high]; the paper's inputs are in [-1, 1]."""
  return Affine.of((high - low) / 255.0, low)


@register("normalize", affine=True)
def normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> Affine:
  """uint8 -> float32 (image / 255 - mean) / std, per channel: timm's and DINOv2's inputs
  (the defaults are ImageNet's statistics)."""
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  return Affine.of(1.0 / (255.0 * std), -mean / std)
