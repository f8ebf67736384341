"""NaFlex ops (SigLIP 2): images resized to keep their aspect ratio within a patch budget,
then cut into a padded patch sequence with coordinates (what `vit_jax.models.naflex`
takes).

    "to_rgb|resize_to_sequence(256, 16)|value_range(-1, 1)|patchify(16, 256)"

The size rule is big_vision's `resize_to_sequence` and transformers' Siglip2 processor
(`get_image_size_for_max_num_patches`): the largest scale whose sides, each rounded up
to whole patches (at least one), give at most `max_num_patches` patches.
"""
from __future__ import annotations

import math

import numpy as np

from vit_jax.errors import UserError
from vit_jax.pp.images import crop_and_resize, image_hw
from vit_jax.pp.ops_image import _check_method, sample_crop_window
from vit_jax.pp.registry import register

COORDS = "patch_coords"  # the example field patchify adds beside 'image' (the patches).

def sequence_size(height: int, width: int, patch_size: int, max_num_patches: int,
                  eps: float = 1e-5) -> tuple[int, int]:
  """(height, width) in pixels, multiples of `patch_size`, that keep the aspect ratio as
  closely as whole patches allow with at most `max_num_patches` patches (the binary
  search of SigLIP 2's processors, same bounds and tolerance)."""
  check(max_num_patches, patch_size)

  def sides(scale: float) -> tuple[int, int]:
    return tuple(max(patch_size, math.ceil(size * scale / patch_size) * patch_size)
                 for size in (height, width))

  low, high = eps / 10, 100.0
  while high - low >= eps:
    middle = (low + high) / 2
    rows, cols = sides(middle)
    if (rows / patch_size) * (cols / patch_size) <= max_num_patches:
      low = middle
    else:
      high = middle
  return sides(low)


def check(max_num_patches: int, patch_size: int) -> None:
  if int(max_num_patches) < 1 or int(patch_size) < 1:
    raise UserError(f"max_num_patches={max_num_patches} with patch_size={patch_size}: "
                    f"NaFlex needs at least one patch per side; use max_num_patches >= 1 "
                    f"(SigLIP 2 uses 256).")


@register("resize_to_sequence", encoded=True)
def resize_to_sequence(max_num_patches: int, patch_size: int, method: str = "bilinear"):
  """Resize keeping the aspect ratio to at most `max_num_patches` patches of
  `patch_size` (sides multiples of it), uint8 out."""
  _check_method(method)
  check(max_num_patches, patch_size)

  def op(image, rng):
    height, width = image_hw(image)
    size = sequence_size(height, width, patch_size, max_num_patches)
    return crop_and_resize(image, (0, 0, height, width), size, method)
  return op


@register("inception_crop_to_sequence", salt=1, encoded=True)
def inception_crop_to_sequence(max_num_patches: int, patch_size: int, area_min: float = 5,
                               area_max: float = 100, method: str = "bilinear"):
  """inception_crop's random window (5-100% of the area, aspect 3/4-4/3), then
  `resize_to_sequence` of it: the crop keeps its own aspect ratio."""
  _check_method(method)
  check(max_num_patches, patch_size)

  def op(image, rng):
    window = sample_crop_window(*image_hw(image), rng,
                                area_range=(area_min / 100, area_max / 100))
    size = sequence_size(window[2], window[3], patch_size, max_num_patches)
    return crop_and_resize(image, window, size, method)
  return op


@register("patchify", key=None, rearranges=True)
def patchify(patch_size: int, max_num_patches: int):
  """The image (H, W, C), sides multiples of `patch_size`, -> 'image' (max_num_patches,
  P*P*C) float32 patches, row-major, each patch's pixels row-major then channels (zero
  padded at the end) and 'patch_coords' (max_num_patches, 2) int32 (row, column), -1 on
  the padding."""
  check(max_num_patches, patch_size)

  def op(example, rng):
    image = np.asarray(example["image"], np.float32)
    height, width, channels = image.shape
    rows, cols = height // patch_size, width // patch_size
    if rows * patch_size != height or cols * patch_size != width:
      raise UserError(f"patchify({patch_size}) of a {height}x{width} image: the sides must "
                      f"be multiples of {patch_size}; resize_to_sequence({max_num_patches}, "
                      f"{patch_size}) first.")
    if rows * cols > max_num_patches:
      raise UserError(f"patchify: a {height}x{width} image is {rows * cols} patches of "
                      f"{patch_size}, over max_num_patches={max_num_patches}; "
                      f"resize_to_sequence({max_num_patches}, {patch_size}) first.")
    patches = np.zeros((max_num_patches, patch_size * patch_size * channels), np.float32)
    patches[:rows * cols] = (image.reshape(rows, patch_size, cols, patch_size, channels)
                             .transpose(0, 2, 1, 3, 4).reshape(rows * cols, -1))
    coords = np.full((max_num_patches, 2), -1, np.int32)
    r, c = np.divmod(np.arange(rows * cols), cols)
    coords[:rows * cols] = np.stack([r, c], axis=1)
    return {**example, "image": patches, COORDS: coords}
  return op
