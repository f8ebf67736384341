"""Reading image files of any mode (RGB, grayscale, RGBA, palette, 16-bit) as uint8 RGB."""
from __future__ import annotations

import numpy as np
from PIL import Image


class UnreadableImageError(ValueError):
  """The file is not an image we can decode; the message names the file."""

  def __init__(self, message: str, path: str = ""):
    super().__init__(message)
    self.path = path


def load_image(path: str) -> np.ndarray:
  """Returns an (H, W, 3) uint8 array; raises UnreadableImageError naming the file."""
  try:
    with Image.open(path) as image:
      image.load()
      return to_rgb_uint8(image)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise UnreadableImageError(f"unreadable image {path}: {e}", path) from None


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
  if image.mode in ("I;16", "I;16B", "I;16L", "I"):
    # 16-bit (or 32-bit integer) grayscale: scale to 8 bits instead of clipping.
    array = np.asarray(image, dtype=np.float64)
    peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
    array = np.round(array / peak * 255.0).astype(np.uint8)
    return np.repeat(array[..., None], 3, axis=-1)
  if image.mode in ("RGBA", "LA", "P", "PA"):
    # Composite transparency over white, as an image viewer would show it.
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    image = Image.alpha_composite(background, rgba)
  return np.asarray(image.convert("RGB"), dtype=np.uint8)
