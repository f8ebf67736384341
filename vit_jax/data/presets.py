"""Known datasets' splits and fine-tuning resolutions (plain Python: configs import it)."""
from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class DatasetPreset:
  train_split: str
  test_split: str
  resolution: int          # fine-tuning resolution of the paper's recipe.
  flip: bool = True        # random horizontal flip in training (off for digits).


# Splits and resolutions as in the paper's fine-tuning configs.
DATASET_PRESETS = {
    "cifar10": DatasetPreset("train[:98%]", "test", 384),
    "cifar100": DatasetPreset("train[:98%]", "test", 384),
    "oxford_iiit_pet": DatasetPreset("train[:90%]", "test", 384),
    "oxford_flowers102": DatasetPreset("train", "test", 384),
    "imagenet2012": DatasetPreset("train[:99%]", "validation", 384),
    "imagenet2012_real": DatasetPreset("train", "validation", 384),
    "sklearn_digits": DatasetPreset("train", "test", 8, flip=False),
    "pureml_mnist": DatasetPreset("train", "test", 28, flip=False),
}
DATASET_ALIASES = {"digits": "sklearn_digits", "mnist_offline": "pureml_mnist"}


def canonical_name(name: str) -> str:
  return DATASET_ALIASES.get(name, name)


def get_preset(name: str) -> Optional[DatasetPreset]:
  return DATASET_PRESETS.get(canonical_name(name))
