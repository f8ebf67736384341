"""Where examples come from: a TFDS dataset (including the offline ones) or an image folder.

A source reads one *shard* of a split in a fixed order and decodes images to uint8 HxWxC;
shuffling, augmentation and batching happen in `vit_jax.data.pipeline`.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import threading
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax.errors import UserError
from vit_jax.data import builders
from vit_jax.data.presets import DATASET_ALIASES, DATASET_PRESETS, canonical_name
from vit_jax.data.images import UnreadableImageError, load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class Source:
  """Interface: a split's shard as a deterministic tf.data.Dataset of decoded examples."""
  name: str
  num_classes: int
  label_names: Optional[list[str]]

  def shard_size(self, split: str, *, shard_index: int, num_shards: int,
                 drop_remainder: bool) -> int:
    raise NotImplementedError

  def read(self, split: str, *, shard_index: int, num_shards: int,
           drop_remainder: bool) -> tf.data.Dataset:
    """Yields {'image': encoded or raw, 'label'} in a fixed order (undecoded)."""
    raise NotImplementedError

  def decode(self, example: dict) -> dict:
    """Encoded example -> the same example with 'image' as uint8 (H, W, C)."""
    raise NotImplementedError

  def filter(self, example: dict) -> tf.Tensor:
    """False for examples to skip (unreadable files)."""
    del example
    return tf.constant(True)


# --- TFDS -------------------------------------------------------------------------------
@contextlib.contextmanager
def _file_lock(path: str):
  """Serialises dataset preparation between processes sharing a disk."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


class TfdsSource(Source):
  def __init__(self, name: str, *, data_dir: Optional[str] = None, label_key: str = "label"):
    self.name = canonical_name(name)
    data_dir = os.path.expanduser(data_dir or os.environ.get(
        "TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets")))
    try:
      self.builder = tfds.builder(self.name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      known = sorted(set(DATASET_PRESETS) | set(DATASET_ALIASES))
      raise UserError(
          f"Unknown dataset {name!r}: not a TFDS dataset name. Presets: {', '.join(known)}; "
          f"any name from `tfds.list_builders()` works, or dataset='folder:/path/to/dir' "
          f"for your own images.") from None
    self.data_dir = data_dir
    if self.name in builders.OFFLINE_DATASETS and not self.builder.is_prepared():
      # Offline datasets "download" from package data: prepare on first use.
      with _file_lock(os.path.join(data_dir, f".{self.name}.lock")):
        if not self.builder.is_prepared():  # another process may have prepared it.
          print(f"Preparing the offline dataset {self.name} in {data_dir} (once).", flush=True)
          tfds.disable_progress_bar()
          with contextlib.redirect_stdout(io.StringIO()):  # TFDS's own banner lines.
            self.builder.download_and_prepare()
      # Re-read: if another process prepared it meanwhile, our builder's info is stale.
      self.builder = tfds.builder(self.name, data_dir=data_dir)
    self.label_key = label_key
    label_feature = self.builder.info.features[label_key]
    if isinstance(label_feature, tfds.features.Sequence):
      label_feature = label_feature.feature  # multi-label datasets (ImageNet-21k style).
    self.num_classes = label_feature.num_classes
    self.label_names = list(label_feature.names)
    self._image_feature = self.builder.info.features["image"]

  def _as_dataset(self, split, shard_index, num_shards, drop_remainder):
    sub = tfds.even_splits(split, n=num_shards, drop_remainder=drop_remainder)[shard_index]
    try:
      return self.builder.as_dataset(
          split=sub, shuffle_files=False,
          # Read only image (left encoded) and label: skips e.g. pets' segmentation masks.
          decoders=tfds.decode.PartialDecoding(
              {"image": True, self.label_key: True},
              decoders={"image": tfds.decode.SkipDecoding()}),
          read_config=tfds.ReadConfig(interleave_cycle_length=1, add_tfds_id=False))
    except AssertionError:
      if self.builder.is_prepared():
        raise
      # Preparing from here would retry the network for minutes when there is none;
      # downloading is a separate, explicit step.
      raise UserError(
          f"Dataset {self.name!r} is not prepared in {self.data_dir}. Prepare it once (needs "
          f"network; imagenet2012 needs its manual download): python -m vit_jax.cli.prepare "
          f"--dataset={self.name} --data_dir={self.data_dir}") from None
    except (KeyError, ValueError) as e:
      raise UserError(f"Dataset {self.name!r} has no split {split!r} ({e}); it has "
                       f"{list(self.builder.info.splits)}.") from None

  def shard_size(self, split, *, shard_index, num_shards, drop_remainder):
    ds = self._as_dataset(split, shard_index, num_shards, drop_remainder)
    size = int(ds.cardinality())
    if size < 0:  # unknown cardinality: count the records (no decoding).
      size = int(ds.reduce(0, lambda count, _: count + 1))
    return size

  def read(self, split, *, shard_index, num_shards, drop_remainder):
    ds = self._as_dataset(split, shard_index, num_shards, drop_remainder)
    return ds.map(lambda ex: {"image": ex["image"], "label": ex[self.label_key]})

  def decode(self, example):
    return {**example, "image": self._image_feature.decode_example(example["image"])}


# --- Image folders ----------------------------------------------------------------------
_skipped_lock = threading.Lock()
SKIPPED_IMAGES: list[str] = []  # every skip of an unreadable file so far, in this process.


def _load_or_skip(path: bytes):
  path = path.decode()
  try:
    return load_image(path), True
  except UnreadableImageError as e:
    with _skipped_lock:
      first_time = path not in SKIPPED_IMAGES
      SKIPPED_IMAGES.append(path)
    if first_time:  # one warning per file; the trainer counts the repeats per log line.
      logging.warning("Skipping %s (unreadable; training goes on without it).", e)
    return np.zeros((1, 1, 3), np.uint8), False


class ImageFolderSource(Source):
  """`DIR/{train,test}/<class_name>/*.{jpg,jpeg,png}`; classes sorted by name.

  Unreadable images do not stop a run: each is skipped with a warning naming the file
  (and counted in `SKIPPED_IMAGES`).
  """

  def __init__(self, directory: str):
    self.directory = os.path.expanduser(directory)
    self.name = f"folder:{self.directory}"
    train_dir = os.path.join(self.directory, "train")
    if not os.path.isdir(train_dir):
      raise UserError(f"Image folder {self.directory!r} has no train/ subfolder; expected "
                       f"{self.directory}/train/<class_name>/*.jpg (and test/).")
    self.label_names = sorted(
        d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
    if not self.label_names:
      raise UserError(f"{train_dir} has no class subfolders; put each class's images in "
                       f"{train_dir}/<class_name>/.")
    self.num_classes = len(self.label_names)
    self._files: dict[str, tuple[list[str], list[int]]] = {}

  def _list(self, split: str):
    if split in self._files:
      return self._files[split]
    split_dir = os.path.join(self.directory, split)
    if not os.path.isdir(split_dir):
      raise UserError(f"Image folder {self.directory!r} has no {split}/ subfolder.")
    paths, labels = [], []
    for label, name in enumerate(self.label_names):
      class_dir = os.path.join(split_dir, name)
      files = sorted(f for f in os.listdir(class_dir) if f.lower().endswith(IMAGE_EXTENSIONS)) \
          if os.path.isdir(class_dir) else []
      if not files and split == "train":
        raise UserError(f"Class folder {class_dir} is empty: add .jpg/.jpeg/.png images or "
                         f"remove the folder.")
      paths += [os.path.join(class_dir, f) for f in files]
      labels += [label] * len(files)
    unknown = sorted(set(os.listdir(split_dir)) - set(self.label_names))
    if unknown:
      raise UserError(f"{split_dir} has class folders {unknown} that train/ does not have.")
    self._files[split] = (paths, labels)
    return paths, labels

  def _shard(self, split, shard_index, num_shards, drop_remainder):
    paths, labels = self._list(split)
    count = len(paths) - len(paths) % num_shards if drop_remainder else len(paths)
    return paths[shard_index:count:num_shards], labels[shard_index:count:num_shards]

  def shard_size(self, split, *, shard_index, num_shards, drop_remainder):
    return len(self._shard(split, shard_index, num_shards, drop_remainder)[0])

  def read(self, split, *, shard_index, num_shards, drop_remainder):
    paths, labels = self._shard(split, shard_index, num_shards, drop_remainder)
    return tf.data.Dataset.from_tensor_slices(
        {"image": tf.constant(paths, tf.string), "label": tf.constant(labels, tf.int64)})

  def decode(self, example):
    image, ok = tf.numpy_function(_load_or_skip, [example["image"]], [tf.uint8, tf.bool],
                                  stateful=False)
    image.set_shape([None, None, 3])
    return {**example, "image": image, "_ok": ok}

  def filter(self, example):
    return example["_ok"]


def get_source(name: str, *, data_dir: Optional[str] = None,
               label_key: str = "label") -> Source:
  """'cifar10', 'digits', any TFDS name, or 'folder:/path/to/dir'."""
  if name.startswith("folder:"):
    return ImageFolderSource(name.removeprefix("folder:"))
  return TfdsSource(name, data_dir=data_dir, label_key=label_key)


def from_config(config, dataset: Optional[str] = None) -> Source:
  """The source a training config names (or `dataset` with the config's data dir)."""
  return get_source(dataset or config.dataset, data_dir=config.get("data_dir"),
                    label_key=config.get("label_key", "label") if not dataset else "label")
