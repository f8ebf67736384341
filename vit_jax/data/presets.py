"""Known datasets' splits and fine-tuning resolutions (plain Python: configs import it)."""
from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class DatasetPreset:
  train_split: str
  val_split: str           # held out of training: hyper-parameters are chosen on it.
  test_split: str
  resolution: int          # fine-tuning resolution of the paper's recipe.
  flip: bool = True        # random horizontal flip in training (off for digits).


# Splits and resolutions as in the paper's fine-tuning configs; the validation split is
# the rest of the training split (the official repository's "minival" convention), or
# the dataset's own where it has one.
DATASET_PRESETS = {
    "cifar10": DatasetPreset("train[:98%]", "train[98%:]", "test", 384),
    "cifar100": DatasetPreset("train[:98%]", "train[98%:]", "test", 384),
    "oxford_iiit_pet": DatasetPreset("train[:90%]", "train[90%:]", "test", 384),
    "oxford_flowers102": DatasetPreset("train", "validation", "test", 384),
    "imagenet2012": DatasetPreset("train[:99%]", "train[99%:]", "validation", 384),
    "imagenet2012_real": DatasetPreset("train[:99%]", "train[99%:]", "validation", 384),
    "sklearn_digits": DatasetPreset("train[:90%]", "train[90%:]", "test", 8, flip=False),
    "pureml_mnist": DatasetPreset("train[:98%]", "train[98%:]", "test", 28, flip=False),
}
# Any other TFDS dataset or image folder (folders are sliced per class: every class keeps
# 90% / 10%).
GENERIC_SPLITS = ("train[:90%]", "train[90%:]", "test")
# An image folder with train/ only: 80 / 10 / 10 of every class (slices are per class).
TRAIN_ONLY_SPLITS = ("train[:80%]", "train[80%:90%]", "train[90%:]")
DATASET_ALIASES = {"digits": "sklearn_digits", "mnist_offline": "pureml_mnist"}


def canonical_name(name: str) -> str:
  return DATASET_ALIASES.get(name, name)


def get_preset(name: str) -> Optional[DatasetPreset]:
  return DATASET_PRESETS.get(canonical_name(name))
