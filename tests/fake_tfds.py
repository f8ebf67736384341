"""TFDS datasets the tests make: `tfds.data_source` of any registered dataset answered with
small random examples of its own features (TFDS's mock_data, with a data source written
here: the mock's own generator gives the Sequence features of CLEVR and KITTI sub-features
of different lengths). Split strings are TFDS's, slices and '+' included."""
from __future__ import annotations

import contextlib
import io

import numpy as np
from PIL import Image

SIZES = {"train": 30, "validation": 12, "test": 12}


def _png(rng, channels: int) -> bytes:
  pixels = rng.integers(0, 2 if channels == 1 else 256, (16, 16, channels), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(buffer, format="PNG")
  return buffer.getvalue()


class FakeSplit:
  def __init__(self, builder, split: str):
    from vit_jax.data.sources import slice_split
    self.builder, self.indices = builder, []
    for part in str(split).split("+"):
      name, window = slice_split(part, lambda base: SIZES.get(base, 12))
      offset = {"train": 0, "validation": 10_000, "test": 20_000}.get(name, 30_000)
      self.indices += [offset + i for i in range(SIZES.get(name, 12))[window]]

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, index):
    import tensorflow_datasets as tfds
    rng = np.random.default_rng(self.indices[index])
    features = self.builder.info.features
    channels = features["image"].shape[-1] or 3
    record = {"image": _png(rng, channels)}
    for name, feature in features.items():
      if isinstance(feature, tfds.features.ClassLabel):
        record[name] = np.int64(rng.integers(feature.num_classes))
    if self.builder.name == "clevr":
      count = int(rng.integers(3, 11))  # VTAB counts 3-10 objects: labels 0-7.
      record["objects"] = {"size": rng.integers(0, 2, count),
                           "pixel_coords": rng.uniform(7.5, 10.5, (count, 3)).astype("f4")}
    if self.builder.name == "kitti":
      count = int(rng.integers(1, 6))
      record["objects"] = {"type": rng.integers(0, 8, count),
                           "location": rng.uniform(0, 40, (count, 3)).astype("f4")}
    return record


@contextlib.contextmanager
def fake_datasets(data_dir: str):
  """Inside: every TFDS dataset 'prepared' in `data_dir`, with FakeSplit data."""
  import tensorflow_datasets as tfds
  from vit_jax.data import sources
  with contextlib.ExitStack() as stack:
    stack.enter_context(tfds.testing.mock_data(
        data_dir=data_dir, policy=tfds.testing.MockPolicy.USE_CODE,
        as_data_source_fn=lambda builder, split, **kwargs: FakeSplit(builder, split)))
    original = sources.TfdsSource._check_prepared
    sources.TfdsSource._check_prepared = lambda self: None
    stack.callback(setattr, sources.TfdsSource, "_check_prepared", original)
    yield
