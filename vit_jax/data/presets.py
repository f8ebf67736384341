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
  # Training examples and the images' typical side: what BiT-HyperRule sizes its
  # schedule, MixUp and resolution by (configs/common.py:apply_bit_hyperrule).
  train_examples: int = 0
  image_side: int = 0


# Splits and resolutions as in the paper's fine-tuning configs; the validation split is
# the rest of the training split (the official repository's "minival" convention), or
# the dataset's own where it has one.
DATASET_PRESETS = {
    "cifar10": DatasetPreset("train[:98%]", "train[98%:]", "test", 384, True, 49_000, 32),
    "cifar100": DatasetPreset("train[:98%]", "train[98%:]", "test", 384, True, 49_000, 32),
    "oxford_iiit_pet": DatasetPreset("train[:90%]", "train[90%:]", "test", 384, True, 3_312,
                                     500),
    "oxford_flowers102": DatasetPreset("train", "validation", "test", 384, True, 1_020, 500),
    "imagenet2012": DatasetPreset("train[:99%]", "train[99%:]", "validation", 384, True,
                                  1_268_355, 400),
    "imagenet2012_real": DatasetPreset("train[:99%]", "train[99%:]", "validation", 384, True,
                                       1_268_355, 400),
    "sklearn_digits": DatasetPreset("train[:90%]", "train[90%:]", "test", 8, False, 1_294, 8),
    "pureml_mnist": DatasetPreset("train[:98%]", "train[98%:]", "test", 28, False, 58_800,
                                  28),
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
