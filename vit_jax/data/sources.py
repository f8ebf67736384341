"""Where examples come from: random-access sources, read without TensorFlow.

A source gives, per split, a random-access sequence of *records* (`records(split)`; cheap
to index, e.g. an ArrayRecord file, an array or a list of paths) and decodes one record
to {'image': uint8 (H, W, C), 'label'} (`decode`, run in the input workers). Shuffling,
augmentation and batching happen in `vit_jax.data.pipeline`.

Built in: the offline datasets (numpy arrays shipped in Python packages), TFDS datasets
prepared as ArrayRecord (`tfds.data_source`), and image folders. Your own data in a few
lines: `ArraySource(name, {"train": (images, labels), "test": ...})`, or subclass
`Source` with `records` and `decode`; name it in the config as
`dataset="my_pkg.my_module:my_source"` (the trainer is not edited).
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional, Sequence

import numpy as np

from vit_jax import storage
from vit_jax.errors import UserError
from vit_jax.data import offline, vtab
from vit_jax.data.folder_stats import IMAGE_EXTENSIONS
from vit_jax.plugins import import_plugin
from vit_jax.pp.images import EncodedImage, UnreadableImageError
from vit_jax.data.presets import DATASET_ALIASES, DATASET_PRESETS, canonical_name



class Source:
  """Interface: per split, random-access records and how to decode one."""
  name: str
  num_classes: int
  label_names: Optional[list[str]] = None
  in_memory = False  # decoding is trivial: no worker processes needed.

  def records(self, split: str) -> Sequence[Any]:
    raise NotImplementedError

  def decode(self, record: Any) -> dict:
    """A record -> {'image': uint8 (H, W, C), 'label'}; raises UnreadableImageError (naming
    the file) for a record to skip."""
    raise NotImplementedError

  def split_size(self, split: str) -> int:
    return len(self.records(split))


def shard_range(size: int, shard_index: int, num_shards: int, *,
                drop_remainder: bool) -> range:
  """Contiguous shard `shard_index` of `num_shards` of `size` records (as
  tfds.even_splits cuts them: sizes differ by at most one, or are equal when
  `drop_remainder`)."""
  if drop_remainder:
    per_shard = size // num_shards
    return range(shard_index * per_shard, (shard_index + 1) * per_shard)
  return range(size * shard_index // num_shards, size * (shard_index + 1) // num_shards)


_SPLIT_SLICE = re.compile(r"^(\w+)\[(-?\d*)(%?):(-?\d*)(%?)\]$")


def slice_split(split: str, size_of) -> tuple[str, slice]:
  """'train[:98%]' -> ('train', slice(0, 98% of its size)); 'test' -> ('test', all).
  `size_of(name)` gives a base split's size (TFDS's slicing syntax, for any source)."""
  match = _SPLIT_SLICE.match(split.replace(" ", ""))
  if not match:
    return split, slice(None)
  name, start, start_pct, stop, stop_pct = match.groups()
  size = size_of(name)

  def bound(text, percent):
    if not text:
      return None
    value = int(text)
    return int(round(size * value / 100)) if percent else value
  return name, slice(bound(start, start_pct), bound(stop, stop_pct))


class _Slice(Sequence):
  """A lazy view of `base[start:stop]` (no copy of an array or a file index)."""

  def __init__(self, base: Sequence, window: slice):
    self.base, self.range = base, range(len(base))[window]

  def __len__(self):
    return len(self.range)

  def __getitem__(self, index):
    return self.base[self.range[index]]


# --- Arrays (the offline datasets, or your own) ------------------------------------------
class ArraySource(Source):
  """In-memory images: {split: (uint8 images (N, H, W, C), labels (N,))}."""
  in_memory = True

  def __init__(self, name: str, splits: dict[str, tuple[np.ndarray, np.ndarray]], *,
               num_classes: Optional[int] = None, label_names: Optional[list[str]] = None):
    self.name, self.splits = name, splits
    self.num_classes = num_classes or int(max(labels.max() for _, labels in splits.values())) + 1
    self.label_names = label_names or [str(i) for i in range(self.num_classes)]

  def records(self, split):
    name, window = slice_split(split, lambda base: len(self._base(base)[1]))
    images, labels = self._base(name)
    return _Slice(_Pairs(images, labels), window)

  def _base(self, name):
    if name not in self.splits:
      raise UserError(f"Dataset {self.name!r} has no split {name!r}; it has "
                      f"{sorted(self.splits)}.")
    return self.splits[name]

  def decode(self, record):
    return record


class _Pairs(Sequence):
  def __init__(self, images, labels):
    self.images, self.labels = images, labels

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, index):
    return {"image": self.images[index], "label": self.labels[index]}


# --- TFDS (ArrayRecord) -----------------------------------------------------------------
def default_data_dir(data_dir: Optional[str] = None) -> str:
  """The TFDS data dir (local or a bucket): given, $TFDS_DATA_DIR, or ~/tensorflow_datasets."""
  return os.fspath(storage.path(data_dir or os.environ.get("TFDS_DATA_DIR",
                                                            "~/tensorflow_datasets")))


class TfdsSource(Source):
  """A TFDS dataset prepared as ArrayRecord (`python -m vit_jax.cli.prepare`), read with
  `tfds.data_source`: random access, decoded in numpy, no TensorFlow. In a bucket, each
  split's files are copied to the local cache (`vit_jax.storage.mirror`) on first use:
  ArrayRecord's reader takes local files only."""

  def __init__(self, name: str, *, data_dir: Optional[str] = None, label_key: str = "label"):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self._open(name, data_dir)
    self.label_key = label_key
    label_feature = self.builder.info.features[label_key]
    if isinstance(label_feature, tfds.features.Sequence):
      label_feature = label_feature.feature  # multi-label datasets (ImageNet-21k style).
    self.num_classes = label_feature.num_classes
    self.label_names = list(label_feature.names)

  def _open(self, name: str, data_dir: Optional[str]) -> None:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.name = self.tfds_name = canonical_name(name)
    self.data_dir = default_data_dir(data_dir)
    self._records: dict[str, Sequence] = {}
    try:
      self.builder = tfds.builder(self.name, data_dir=self.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      known = sorted(set(DATASET_PRESETS) | set(DATASET_ALIASES))
      import difflib  # pylint: disable=g-import-not-at-top
      close = difflib.get_close_matches(name, [*known, *tfds.list_builders()], n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise UserError(
          f"Unknown dataset {name!r}: not a TFDS dataset name.{hint} Presets: "
          f"{', '.join(known)}; "
          f"any name from `tfds.list_builders()` works, or dataset='folder:/path/to/dir' "
          f"for your own images.") from None

  def _prepare_command(self) -> str:
    return (f"python -m vit_jax.cli.prepare --dataset={self.tfds_name} "
            f"--data_dir={self.data_dir}")

  def records(self, split):
    if split in self._records:
      return self._records[split]
    self._check_prepared()
    tfds_split = self._tfds_split(split)
    try:
      self._records[split] = self._data_source(tfds_split)
    except (KeyError, ValueError) as e:
      raise UserError(f"Dataset {self.name!r} has no split {split!r} ({e}); it has "
                      f"{list(self.builder.info.splits)}.") from None
    return self._records[split]

  def _data_source(self, tfds_split: str) -> Sequence:
    """The records of a TFDS split string ('train[:800]+validation[:200]' too)."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    return tfds.data_source(self.tfds_name, split=tfds_split,
                            data_dir=self._local_data_dir(tfds_split), download=False,
                            decoders=self._undecoded())

  def _tfds_split(self, split: str) -> str:
    return split

  def _undecoded(self) -> dict:
    """Images stay encoded here and are decoded in `decode` (in the input workers, with
    unreadable ones skipped); features other than image and label are never decoded."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    return {k: tfds.decode.SkipDecoding() for k in self.builder.info.features
            if k != self.label_key}

  def mirrored(self, tfds_split: str):
    """file name -> whether a split string's records need it: the metadata and the
    ArrayRecord files of every split it names ('train[:800]+validation[:200]': both)."""
    bases = {part.split("[", 1)[0].strip() for part in tfds_split.split("+")}
    return lambda name: ".array_record" not in name or any(
        name.startswith(f"{self.builder.name}-{base}.array_record") for base in bases)

  def _local_data_dir(self, tfds_split: str) -> str:
    """The data dir itself when local; else a local mirror of the split's files (and the
    dataset's metadata) laid out as TFDS expects."""
    if not storage.is_remote(self.data_dir):
      return self.data_dir
    version_dir = storage.path(self.builder.data_dir)
    local = storage.mirror(version_dir, self.mirrored(tfds_split))
    # TFDS looks for <data_dir>/<name>/<version>/: link the mirror in under a root.
    relative = os.fspath(version_dir)[len(self.data_dir):].strip("/")
    root = storage.cache_dir() / "tfds" / storage.path(local).name
    link = root / relative
    if not link.exists():
      link.parent.mkdir(parents=True, exist_ok=True)
      os.symlink(local, os.fspath(link))
    return os.fspath(root)

  def _check_prepared(self) -> None:
    """Prepared, as ArrayRecord (random access), or one line with the command that does it."""
    if not self.builder.is_prepared():
      # Preparing from here would retry the network for minutes when there is none;
      # downloading is a separate, explicit step.
      raise UserError(f"Dataset {self.name!r} is not prepared in {self.data_dir}. Prepare "
                      f"it once (needs network and TensorFlow; imagenet2012 needs its manual "
                      f"download): {self._prepare_command()}")
    file_format = self.builder.info.file_format
    file_format = str(getattr(file_format, "value", file_format) or "tfrecord")
    if file_format != "array_record":
      raise UserError(f"Dataset {self.name!r} in {self.data_dir} is prepared as "
                      f"{file_format}, which has no random access; prepare it again as "
                      f"ArrayRecord: {self._prepare_command()}")

  def decode(self, record):
    return {"image": self._image(record), "label": self._label(record)}

  def _image(self, record):
    image = record["image"]
    if isinstance(image, bytes):  # decoded by the first pp op (see EncodedImage).
      image = EncodedImage(image, f"a record of {self.name}", keep_gray=True)
    return image

  def _label(self, record):
    return record[self.label_key]


class VtabSource(TfdsSource):
  """A VTAB-1k task (`dataset="vtab:<task>"`, see `vit_jax.data.vtab`): its TFDS dataset,
  its splits by name (train800, val200, train800val200, test) and its labels, computed in
  the input workers from the examples' annotations as task_adaptation does."""

  def __init__(self, task_name: str, *, data_dir: Optional[str] = None):
    self.task = vtab.task(task_name)
    self._open(self.task.tfds_name, data_dir)
    self.name = f"vtab:{self.task.name}"
    self.num_classes = self.task.num_classes
    self.label_names = [str(i) for i in range(self.num_classes)]
    self._splits: Optional[dict[str, str]] = None

  def _tfds_split(self, split: str) -> str:
    """A task split name (whole: no slices) as the TFDS split string."""
    if self._splits is None:
      # The prepared splits' sizes (a mock's too), as task_adaptation reads them.
      self._splits = self.task.tfds_splits(lambda name: len(self._data_source(name)))
    name, _, rest = split.partition("[")
    if name not in self._splits:
      raise UserError(f"VTAB task {self.task.name} has the splits {sorted(self._splits)}, "
                      f"not {split!r}.")
    if rest:
      raise UserError(f"VTAB split {split!r}: use the task's splits whole "
                      f"({', '.join(sorted(self._splits))}).")
    return self._splits[name]

  def _undecoded(self) -> dict:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    # What the task's label reads is decoded; images wait for the workers' first pp op.
    return {k: tfds.decode.SkipDecoding() for k in self.builder.info.features
            if k not in self.task.features}

  def _image(self, record):
    image = super()._image(record)
    scaled = vtab.image_of(self.task, image)
    return image if scaled is None else scaled

  def _label(self, record):
    return np.int64(vtab.label_of(self.task, record))


# --- Image folders ----------------------------------------------------------------------
class ImageFolderSource(Source):
  """`DIR/{train,test}/<class_name>/*.{jpg,jpeg,png}` (local or in a bucket); classes
  sorted by name. Unreadable images do not stop a run: the pipeline skips each with a
  warning naming the file."""

  def __init__(self, directory: str):
    self.directory = storage.path(directory)
    self.name = f"folder:{self.directory}"
    train_dir = self.directory / "train"
    if not train_dir.is_dir():
      raise UserError(f"Image folder {os.fspath(self.directory)!r} has no train/ subfolder; "
                      f"expected {self.directory}/train/<class_name>/*.jpg (and test/).")
    self.label_names = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not self.label_names:
      raise UserError(f"{train_dir} has no class subfolders; put each class's images in "
                      f"{train_dir}/<class_name>/.")
    self.num_classes = len(self.label_names)
    self._files: dict[str, list[tuple[str, int]]] = {}

  def _list(self, split: str) -> list[tuple[str, int]]:
    if split in self._files:
      return self._files[split]
    if not split or "/" in split or split in (".", ".."):
      raise UserError(f"Split {split!r} of image folder {os.fspath(self.directory)!r} is not "
                      f"a subfolder name; name one (test, val) or a slice of train/, e.g. "
                      f"--config.test_split='train[90%:]'.")
    split_dir = self.directory / split
    if not split_dir.is_dir():
      raise UserError(
          f"Image folder {os.fspath(self.directory)!r} has no {split}/ subfolder; hold out "
          f"part of train/ instead (every class alike), e.g. --config.train_split="
          f"'train[:80%]' --config.val_split='train[80%:90%]' "
          f"--config.{'test' if split == 'test' else 'val'}_split='train[90%:]' "
          f"(configs/finetune.py:MODEL,folder:DIR does this for a folder with no test/).")
    present = {d.name for d in split_dir.iterdir()}
    files = []
    for label, name in enumerate(self.label_names):
      class_dir = split_dir / name
      names = sorted(f.name for f in class_dir.iterdir()
                     if f.name.lower().endswith(IMAGE_EXTENSIONS)) if name in present else []
      if not names and split == "train":
        raise UserError(f"Class folder {class_dir} is empty: add .jpg/.jpeg/.png images or "
                        f"remove the folder.")
      files += [(os.fspath(class_dir / f), label) for f in names]
    unknown = sorted(present - set(self.label_names))
    if unknown:
      raise UserError(f"{split_dir} has class folders {unknown} that train/ does not have.")
    self._files[split] = files
    return files

  def records(self, split):
    """A slice (`train[:90%]`, `train[90%:]`, `train[:50]`) is taken from each class alike,
    so every class keeps its share (`train[:50]`: 50 per class)."""
    name, window = slice_split(split, lambda base: len(self._list(base)))
    files = self._list(name)
    if window == slice(None):
      return files
    by_class: dict[int, list] = {}
    for record in files:
      by_class.setdefault(record[1], []).append(record)
    sliced = []
    for records in by_class.values():
      sliced += records[slice_split(split, lambda _, n=len(records): n)[1]]
    return sliced

  def decode(self, record):
    path, label = record
    return {"image": EncodedImage.from_file(path), "label": np.int64(label)}


# --- Your own, named in the config -------------------------------------------------------
_PLUGIN = re.compile(r"^([A-Za-z_][\w.]*):([A-Za-z_]\w*)$")


def plugin_source(name: str) -> Optional[Source]:
  """'my_pkg.my_module:attr' -> the Source it names: a Source instance, or a class or
  function that returns one when called with no arguments. None: not of that form."""
  match = _PLUGIN.match(name)
  if not match or name.startswith("folder:"):
    return None
  module_name, attr = match.groups()
  module = import_plugin(module_name, package=None, what="Dataset module")
  if not hasattr(module, attr):
    raise UserError(f"dataset={name!r}: module {module_name} has no {attr!r}.")
  value = getattr(module, attr)
  source = value if isinstance(value, Source) else value() if callable(value) else value
  if not isinstance(source, Source):
    raise UserError(f"dataset={name!r} is a {type(source).__name__}, not a "
                    f"vit_jax.data.sources.Source (or a function returning one).")
  return source


def get_source(name: str, *, data_dir: Optional[str] = None,
               label_key: str = "label") -> Source:
  """'digits', 'pureml_mnist', 'cifar10' or any TFDS name, 'folder:/path/to/dir', or your
  own 'my_pkg.my_module:name' (see `plugin_source`)."""
  if name.startswith("folder:"):
    return ImageFolderSource(name.removeprefix("folder:"))
  if name.startswith("vtab:"):
    return VtabSource(name.removeprefix("vtab:"), data_dir=data_dir)
  plugin = plugin_source(name)
  if plugin is not None:
    return plugin
  canonical = canonical_name(name)
  if canonical in offline.LOADERS:
    return ArraySource(canonical, offline.LOADERS[canonical]())
  return TfdsSource(name, data_dir=data_dir, label_key=label_key)


def from_config(config, dataset: Optional[str] = None, label_key: Optional[str] = None) -> Source:
  """The source a training config names (or `dataset` with the config's data dir), its
  labels read from `label_key` (default: the config's for its own dataset, else 'label')."""
  if label_key is None:
    label_key = config.get("label_key", "label") if not dataset else "label"
  return get_source(dataset or config.dataset, data_dir=config.get("data_dir"),
                    label_key=label_key)


__all__ = ["Source", "ArraySource", "TfdsSource", "VtabSource", "ImageFolderSource",
           "UnreadableImageError",
           "get_source", "from_config", "shard_range", "slice_split"]
