"""What an image folder holds, read cheaply (file names and image headers only), so that
configs can pick CPU-sized defaults from the data. Imports neither JAX nor TensorFlow."""
from __future__ import annotations

import dataclasses
import io
import statistics

from vit_jax import storage

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class FolderStats:
  num_train: int
  num_classes: int
  median_side: int        # median shorter side of a sample of training images, in pixels.


def folder_stats(directory: str, *, sample: int = 200) -> FolderStats:
  """Counts DIR/train/<class>/* and reads the sizes of up to `sample` of them. A folder
  that is missing or empty gives zeros (the trainer then says what is wrong)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top  (configs import this module)
  from vit_jax import console  # pylint: disable=g-import-not-at-top
  from vit_jax.pp import images  # pylint: disable=g-import-not-at-top
  train = storage.path(directory) / "train"
  if not train.is_dir():
    return FolderStats(0, 0, 0)
  classes = sorted(d for d in train.iterdir() if d.is_dir())
  files = [f for c in classes for f in sorted(c.iterdir())
           if f.name.lower().endswith(IMAGE_EXTENSIONS)]
  step = max(len(files) // sample, 1)
  sides = []
  for path in files[::step][:sample]:
    try:
      with Image.open(io.BytesIO(storage.read_bytes(path))) as image:
        sides.append(min(image.size))
    except images.DECODE_ERRORS as e:  # the trainer skips it too, as the warning says.
      console.warn(f"skipping {images.UnreadableImageError.of(str(path), e)} (not used to "
                   f"size the run; training goes on without it).")
  return FolderStats(len(files), len(classes), int(statistics.median(sides)) if sides else 0)


def cpu_sized_resolution(stats: FolderStats, patch_size: int, *, cap: int = 224) -> int:
  """The images' own size (median shorter side), at most `cap`, rounded down to a
  multiple of the patch size; at least 2 patches per side."""
  side = min(stats.median_side or cap, cap)
  return max(side // patch_size, 2) * patch_size
