"""Reading image files of any mode (RGB, grayscale, RGBA, palette, 16-bit) as uint8 RGB."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from vit_jax import storage
from vit_jax.errors import without_object_reprs


class UnreadableImageError(ValueError):
  """The file is not an image we can decode; the message names the file."""

  def __init__(self, message: str, path: str = ""):
    super().__init__(message)
    self.path = path

  @classmethod
  def of(cls, name: str, error: BaseException) -> "UnreadableImageError":
    return cls(f"unreadable image {name}: {reason(error)}", name)


# What PIL raises for a file it cannot decode (a decompression bomb is not an OSError).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def reason(error: BaseException) -> str:
  """Why PIL could not read a file, in words (no `<_io.BytesIO object at 0x...>`)."""
  if isinstance(error, Image.UnidentifiedImageError):
    return "not an image file PIL can identify (wrong format, empty or cut short)"
  if isinstance(error, Image.DecompressionBombError):
    return (f"{error}".split(", could be")[0] + " (PIL's guard against decompression "
            f"bombs; resize it, or raise PIL.Image.MAX_IMAGE_PIXELS)")
  return without_object_reprs(str(error)) or type(error).__name__


def load_image(path: str) -> np.ndarray:
  """An image file (local or in a bucket) as an (H, W, 3) uint8 array; raises
  UnreadableImageError naming the file."""
  try:
    data = storage.read_bytes(path)
  except OSError as e:
    raise UnreadableImageError.of(path, e) from None
  return _decode(io.BytesIO(data), path, keep_gray=False)


def _decode(file, name: str, *, keep_gray: bool) -> np.ndarray:
  try:
    with Image.open(file) as image:
      image.load()
      if keep_gray and image.mode == "L":
        return np.asarray(image, np.uint8)[..., None]
      return to_rgb_uint8(image)
  except DECODE_ERRORS as e:
    raise UnreadableImageError.of(name, e) from None


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


class EncodedImage:
  """An image still encoded (a file's or a record's bytes): decoding waits for the first
  pp op, so that a crop or resize decodes JPEGs at the smallest scale that still covers
  its output (libjpeg's DCT scaling, 1/2 to 1/8) instead of at full size."""

  def __init__(self, data: bytes, name: str, *, keep_gray: bool = False):
    self.data, self.name, self.keep_gray = data, name, keep_gray
    self._size = None
    self._header = None  # the image opened for its size, reused by one decode_region.

  @classmethod
  def from_file(cls, path: str) -> "EncodedImage":
    """A local or bucket file's bytes, decoded later."""
    try:
      return cls(storage.read_bytes(path), path)
    except OSError as e:
      raise UnreadableImageError.of(path, e) from None

  def _open(self) -> Image.Image:
    try:
      return Image.open(io.BytesIO(self.data))
    except (OSError, ValueError, SyntaxError) as e:
      raise UnreadableImageError.of(self.name, e) from None

  @property
  def hw(self) -> tuple[int, int]:
    """(height, width), from the header alone."""
    if self._size is None:
      self._header = self._open()
      width, height = self._header.size
      self._size = (height, width)
    return self._size

  def decode(self) -> np.ndarray:
    return _decode(io.BytesIO(self.data), self.name, keep_gray=self.keep_gray)

  def __array__(self, dtype=None, copy=None):  # an image no op decoded: np.asarray decodes.
    del copy
    return np.asarray(self.decode(), dtype)

  def decode_region(self, window: tuple[int, int, int, int], size: tuple[int, int],
                    method: str = "bilinear") -> np.ndarray:
    """The (top, left, height, width) window, resized bilinearly to (height, width)
    `size`, decoding no more pixels than that needs. Same as decoding, cropping and
    resizing, up to the DCT scaling's rounding (a few levels)."""
    top, left, height, width = window
    image = self._header if self._header is not None else self._open()
    self._header = None
    try:
      if image.mode not in ("RGB", "L"):  # palette, alpha, 16-bit: the general path.
        return resize_image(self.decode()[top:top + height, left:left + width], size, method)
      full_width = image.size[0]
      scale = max(1, min(height // size[0], width // size[1]))
      if scale > 1:
        image.draft(image.mode, (image.size[0] // scale, image.size[1] // scale))
      factor = image.size[0] / full_width
      box = (left * factor, top * factor, (left + width) * factor, (top + height) * factor)
      out = image.resize((size[1], size[0]), RESAMPLING[method], box=box)
      array = np.asarray(out, np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
      raise UnreadableImageError.of(self.name, e) from None
    if array.ndim == 2:
      array = array[..., None] if self.keep_gray else np.repeat(array[..., None], 3, -1)
    return array


def size2(size) -> tuple[int, int]:
  """An int (square) or (height, width) -> (height, width)."""
  return (size, size) if isinstance(size, int) else tuple(size)


RESAMPLING = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def resize_image(image: np.ndarray, size, method: str = "bilinear") -> np.ndarray:
  """Bilinear (or bicubic) resize to `size` (int or (height, width)), antialiased when
  shrinking (PIL's filter widens with the scale). uint8 in, uint8 out; other dtypes come
  out as float32."""
  height, width = size2(size)
  if image.shape[:2] == (height, width):
    return image
  if image.dtype == np.uint8 and image.shape[-1] in (1, 3):
    mode_image = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    out = np.asarray(mode_image.resize((width, height), RESAMPLING[method]))
    return out.reshape(height, width, image.shape[-1])
  channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32),
                                         mode="F").resize((width, height), RESAMPLING[method]))
              for c in range(image.shape[-1])]
  return np.stack(channels, -1)


def image_hw(image) -> tuple[int, int]:
  """(height, width) of an array or of a still-encoded image (from its header)."""
  return image.hw if isinstance(image, EncodedImage) else image.shape[:2]


def crop_and_resize(image, window: tuple[int, int, int, int], size,
                    method: str = "bilinear") -> np.ndarray:
  """The (top, left, height, width) window of an array or an encoded image, resized to
  `size`; an encoded image decodes only what that needs (`EncodedImage.decode_region`)."""
  if isinstance(image, EncodedImage):
    return image.decode_region(window, size2(size), method)
  top, left, height, width = window
  return resize_image(image[top:top + height, left:left + width], size, method)
