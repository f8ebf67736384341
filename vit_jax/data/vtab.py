"""VTAB-1k (Zhai et al. 2019): the 19 tasks of the Visual Task Adaptation Benchmark as the
reference code defines them (google-research/task_adaptation, `task_adaptation/data/*.py`,
commit d7630d3): each task's TFDS dataset, its label function and its splits.

Every task has the same four splits, by name (`dataset="vtab:<task>"`):
`train800` (the first 800 examples of the task's train split), `val200` (the first 200 of
its validation split), `train800val200` (both) and `test`. Where a dataset ships no
validation split, task_adaptation cuts one from its train split at a fixed percentage
(`_PercentOfTrain`), and where it ships no test split, from the train split too
(`_ThreeWay`); the split sizes are read from the prepared data, so the strings below are
task_adaptation's for the real datasets.

Groups: natural (7), specialized (4), structured (8). Labels of the structured tasks are
computed from the examples' annotations (object counts, binned distances and positions),
exactly as task_adaptation's `preprocess_fn`s compute them.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

from vit_jax.errors import UserError

GROUPS = ("natural", "specialized", "structured")


# --- Splits --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _OwnValidation:
  """train / validation / test as the dataset ships them (dtd, flowers, sun397, ...)."""
  test: str = "test"

  def splits(self, count) -> dict[str, str]:
    del count
    return {"train800": "train[:800]", "val200": "validation[:200]",
            "train800val200": "train[:800]+validation[:200]", "test": self.test}


@dataclasses.dataclass(frozen=True)
class _PercentOfTrain:
  """The validation set cut from the end of the train split (caltech101: 90%)."""
  percent: int
  test: str = "test"

  def splits(self, count) -> dict[str, str]:
    train = self.percent * count("train") // 100
    val = f"train[{train}:{train + 200}]"
    return {"train800": "train[:800]", "val200": val, "train800val200": f"train[:800]+{val}",
            "test": self.test}


@dataclasses.dataclass(frozen=True)
class _ThreeWay:
  """Train, validation and test all cut from the train split (eurosat: 60 / 20 / 20)."""
  train_percent: int
  val_percent: int

  def splits(self, count) -> dict[str, str]:
    total = count("train")
    train, val = self.train_percent * total // 100, self.val_percent * total // 100
    val200 = f"train[{train}:{train + 200}]"
    return {"train800": "train[:800]", "val200": val200,
            "train800val200": f"train[:800]+{val200}", "test": f"train[{train + val}:]"}


@dataclasses.dataclass(frozen=True)
class _TestHalves:
  """smallnorb: validation from the first half of the test split, test the second."""

  def splits(self, count) -> dict[str, str]:
    del count
    return {"train800": "train[:800]", "val200": "test[:200]",
            "train800val200": "train[:800]+test[:200]", "test": "test[50%:]"}


# --- Labels --------------------------------------------------------------------------------
def _label(record) -> int:
  return int(record["label"])


def _clevr_count(record) -> int:  # clevr.py: _count_preprocess_fn
  return int(np.size(record["objects"]["size"])) - 3


def _max_threshold_below(thresholds, value) -> int:
  """task_adaptation's `tf.reduce_max(tf.where((thrs - value) < 0))`: the last bin whose
  lower threshold is below `value`."""
  return int(np.max(np.nonzero(np.asarray(thresholds) - value < 0)[0]))


def _clevr_distance(record) -> int:  # clevr.py: _closest_object_preprocess_fn
  distance = np.min(np.asarray(record["objects"]["pixel_coords"])[:, 2])
  return _max_threshold_below([0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0], distance)


def _kitti_vehicle_distance(record) -> int:  # kitti.py: _closest_vehicle_distance_pp
  objects = record["objects"]
  vehicles = np.asarray(objects["type"]) < 3  # Car, Van, Truck.
  depths = np.asarray(objects["location"]).reshape(-1, 3)[vehicles, 2]
  return _max_threshold_below([-100.0, 8.0, 20.0, 999.0], np.min([*depths, 1000.0]))


def _binned(feature: str, values: int, bins: int) -> Callable[[Any], int]:
  """dsprites.py: floor(value / (values / bins)), e.g. 32 x-positions into 16 bins."""
  factor = values / bins
  return lambda record: int(np.floor(float(record[feature]) / factor))


def _feature(name: str) -> Callable[[Any], int]:
  return lambda record: int(record[name])


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  group: str
  tfds_name: str                 # as `tfds.builder` takes it (config included).
  num_classes: int
  splits: Any                    # one of the split rules above.
  label: Callable[[Any], int] = _label
  features: tuple[str, ...] = ("label",)  # what the label reads (nothing else is decoded).
  image_scale: int = 1           # dsprites stores 0/1 pixels: x255.

  @property
  def augment(self) -> bool:
    """Random crops and flips in training: not for the structured tasks, whose labels
    are positions, counts, distances and orientations."""
    return self.group != "structured"

  def tfds_splits(self, count: Callable[[str], int]) -> dict[str, str]:
    """{'train800', 'val200', 'train800val200', 'test'} -> TFDS split strings, given the
    prepared splits' sizes (`count(name)`)."""
    return self.splits.splits(count)


def _tasks(*tasks: Task) -> dict[str, Task]:
  return {task.name: task for task in tasks}


TASKS = _tasks(
    # Natural.
    Task("caltech101", "natural", "caltech101", 102, _PercentOfTrain(90)),
    Task("cifar100", "natural", "cifar100", 100, _PercentOfTrain(90)),
    Task("dtd", "natural", "dtd", 47, _OwnValidation()),
    Task("oxford_flowers102", "natural", "oxford_flowers102", 102, _OwnValidation()),
    Task("oxford_iiit_pet", "natural", "oxford_iiit_pet", 37, _PercentOfTrain(80)),
    Task("sun397", "natural", "sun397/tfds", 397, _OwnValidation()),
    Task("svhn", "natural", "svhn_cropped", 10, _PercentOfTrain(90)),
    # Specialized.
    Task("patch_camelyon", "specialized", "patch_camelyon", 2, _OwnValidation()),
    Task("eurosat", "specialized", "eurosat/rgb", 10, _ThreeWay(60, 20)),
    Task("resisc45", "specialized", "resisc45", 45, _ThreeWay(60, 20)),
    Task("diabetic_retinopathy", "specialized", "diabetic_retinopathy_detection/btgraham-300",
         5, _OwnValidation()),
    # Structured.
    Task("clevr_count", "structured", "clevr", 8, _PercentOfTrain(90, test="validation"),
         _clevr_count, ("objects",)),
    Task("clevr_distance", "structured", "clevr", 6, _PercentOfTrain(90, test="validation"),
         _clevr_distance, ("objects",)),
    Task("dmlab", "structured", "dmlab", 6, _OwnValidation()),
    Task("kitti_distance", "structured", "kitti", 4, _OwnValidation(),
         _kitti_vehicle_distance, ("objects",)),
    Task("dsprites_location", "structured", "dsprites", 16, _ThreeWay(80, 10),
         _binned("label_x_position", 32, 16), ("label_x_position",), image_scale=255),
    Task("dsprites_orientation", "structured", "dsprites", 16, _ThreeWay(80, 10),
         _binned("label_orientation", 40, 16), ("label_orientation",), image_scale=255),
    Task("smallnorb_azimuth", "structured", "smallnorb", 18, _TestHalves(),
         _feature("label_azimuth"), ("label_azimuth",)),
    Task("smallnorb_elevation", "structured", "smallnorb", 9, _TestHalves(),
         _feature("label_elevation"), ("label_elevation",)),
)
# Datasets that TFDS cannot download by itself.
MANUAL_DOWNLOAD = {
    "diabetic_retinopathy": "diabetic_retinopathy_detection needs the Kaggle files in "
                            "~/tensorflow_datasets/downloads/manual/ (kaggle competitions "
                            "download -c diabetic-retinopathy-detection)",
}


def task(name: str) -> Task:
  if name not in TASKS:
    import difflib  # pylint: disable=g-import-not-at-top
    close = difflib.get_close_matches(name, TASKS, n=1)
    raise UserError(f"VTAB task {name!r} does not exist" + (
        f"; did you mean {close[0]!r}?" if close else "") + f" Tasks: {', '.join(TASKS)}.")
  return TASKS[name]


def by_group() -> dict[str, list[str]]:
  return {group: [n for n, t in TASKS.items() if t.group == group] for group in GROUPS}


def label_of(task_: Task, record) -> int:
  """The task's label of a decoded record, checked against its classes."""
  label = task_.label(record)
  if not 0 <= label < task_.num_classes:
    raise ValueError(f"VTAB {task_.name}: label {label} outside [0, {task_.num_classes}).")
  return label


def image_of(task_: Task, image) -> Optional[np.ndarray]:
  """dsprites' 0/1 pixels as 0/255 (decoded here: 64x64 bilevel images are cheap)."""
  if task_.image_scale == 1:
    return None
  return (np.asarray(image).astype(np.uint16) * task_.image_scale).clip(0, 255).astype(np.uint8)
