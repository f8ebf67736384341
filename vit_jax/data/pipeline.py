"""Train and eval streams: sharded by process, deterministic, resumable, exactly evaluated.

Batch sizes are GLOBAL (summed over all processes and devices), as in the configs.

Training stream. A split is cut into `num_shards` data shards (default: one per process);
each process reads only its own shards. A shard's stream is an endless sequence of
epochs, each a seeded shuffle of the shard, and every example gets its own augmentation
seed from (run seed, shard, position). The global batch at step k is the concatenation
of every shard's k-th batch, so:
  - the same seed gives the same batches;
  - restarting at step k (`start_step=k`) skips whole epochs for free and at most one
    epoch of undecoded records, then yields exactly what an uninterrupted run would;
  - with `num_shards` fixed, the batches do not depend on the number of processes.

Eval stream. Each process reads its part of the split, padded with masked examples to a
common number of whole batches, so every example counts exactly once.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Optional

import jax
import tensorflow as tf

from vit_jax.errors import UserError
from vit_jax.data import preprocess
from vit_jax.data.sources import Source

try:  # tf.data runs on the host; TF must never claim an accelerator.
  tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):
  pass

AUTOTUNE = tf.data.AUTOTUNE


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = 0
  options.experimental_optimization.map_parallelization = True
  return options


@dataclasses.dataclass(frozen=True)
class DataShards:
  """Which data shards this process reads (data, not device, sharding)."""
  num_shards: int
  process_index: int
  process_count: int

  @classmethod
  def create(cls, num_shards: int = 0, process_index: Optional[int] = None,
             process_count: Optional[int] = None) -> "DataShards":
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    num_shards = num_shards or process_count
    if num_shards % process_count:
      raise UserError(f"data_shards={num_shards} must be a multiple of the "
                       f"{process_count} processes.")
    return cls(num_shards, process_index, process_count)

  @property
  def local_shards(self) -> range:
    per_process = self.num_shards // self.process_count
    return range(self.process_index * per_process, (self.process_index + 1) * per_process)


def check_batch_size(global_batch_size: int, *, num_devices: int, num_shards: int) -> None:
  for count, what in ((num_devices, "devices on the data and fsdp mesh axes"),
                      (num_shards, "data shards (one per process by default)")):
    if global_batch_size % count:
      raise UserError(
          f"Global batch size {global_batch_size} is not divisible by the {count} {what}; "
          f"use a multiple of {count}.")


def _shard_train_stream(source: Source, split: str, shard: int, num_shards: int, *,
                        pp_fn, seed: int, start_position: int, shuffle_buffer: int,
                        batch_size: int) -> tf.data.Dataset:
  size = source.shard_size(split, shard_index=shard, num_shards=num_shards,
                           drop_remainder=True)
  if size == 0:
    raise UserError(f"Split {split!r} of {source.name} has no examples for data shard "
                     f"{shard} of {num_shards}.")
  records = source.read(split, shard_index=shard, num_shards=num_shards, drop_remainder=True)
  shard_seed = tf.constant([seed, shard], tf.int64)

  def epoch(index):
    shuffle_seed = tf.random.experimental.stateless_fold_in(shard_seed, index)[0]
    shuffled = records.shuffle(min(shuffle_buffer, size), seed=shuffle_seed,
                               reshuffle_each_iteration=False)
    return shuffled.enumerate().map(lambda i, example: {
        **example,
        "seed": tf.random.experimental.stateless_fold_in(shard_seed, index * size + i)})

  start_epoch, offset = divmod(start_position, size)
  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch).skip(offset)
  ds = ds.map(source.decode, AUTOTUNE).filter(source.filter)
  ds = ds.map(lambda ex: _select(pp_fn(ex)), AUTOTUNE)
  return ds.batch(batch_size, drop_remainder=True)


def _select(example: dict) -> dict:
  label = example["label"]
  if label.dtype.is_integer:
    label = tf.cast(label, tf.int32)  # JAX runs without 64-bit types by default.
  return {"image": example["image"], "label": label}


def train_dataset(source: Source, *, split: str, global_batch_size: int, pp: str, seed: int,
                  start_step: int = 0, shuffle_buffer: int = 50_000,
                  shards: Optional[DataShards] = None,
                  num_batches: Optional[int] = None) -> tf.data.Dataset:
  """This process's part of each global training batch, from step `start_step` on;
  `num_batches` of them (a finite stream ends cleanly, with no work in flight)."""
  shards = shards or DataShards.create()
  if global_batch_size % shards.num_shards:
    raise UserError(f"Global batch size {global_batch_size} is not divisible by the "
                     f"{shards.num_shards} data shards.")
  shard_batch = global_batch_size // shards.num_shards
  pp_fn = preprocess.parse(pp)
  streams = [
      _shard_train_stream(source, split, shard, shards.num_shards, pp_fn=pp_fn, seed=seed,
                          start_position=start_step * shard_batch,
                          shuffle_buffer=shuffle_buffer, batch_size=shard_batch)
      for shard in shards.local_shards]
  ds = streams[0] if len(streams) == 1 else tf.data.Dataset.zip(tuple(streams)).map(
      lambda *batches: tf.nest.map_structure(lambda *x: tf.concat(x, 0), *batches))
  if num_batches is not None:
    ds = ds.take(num_batches)
  return ds.prefetch(AUTOTUNE).with_options(_options())


@dataclasses.dataclass
class EvalData:
  """A padded eval split: iterate `dataset` for `num_batches` local batches with 'mask'."""
  dataset: tf.data.Dataset
  num_batches: int

  def __iter__(self) -> Iterator[dict]:
    return iter(self.dataset.as_numpy_iterator())


def eval_dataset(source: Source, *, split: str, global_batch_size: int, pp: str,
                 shards: Optional[DataShards] = None) -> EvalData:
  shards = shards or DataShards.create()
  count, index = shards.process_count, shards.process_index
  if global_batch_size % count:
    raise UserError(f"Eval batch size {global_batch_size} is not divisible by the {count} "
                     f"processes.")
  local_batch = global_batch_size // count
  sizes = [source.shard_size(split, shard_index=i, num_shards=count, drop_remainder=False)
           for i in range(count)]
  num_batches = max(1, math.ceil(max(sizes) / local_batch))
  pp_fn = preprocess.parse(pp)
  ds = source.read(split, shard_index=index, num_shards=count, drop_remainder=False)
  ds = ds.map(source.decode, AUTOTUNE).filter(source.filter)
  ds = ds.map(lambda ex: {**_select(pp_fn({**ex, "seed": tf.zeros([2], tf.int64)})),
                          "mask": tf.constant(1.0)}, AUTOTUNE)
  spec = ds.element_spec
  if not spec["image"].shape.is_fully_defined():
    raise UserError(f"Eval preprocessing {pp!r} gives images of shape {spec['image'].shape}; "
                     f"it must produce a fixed size (add resize(...)).")
  padding = tf.data.Dataset.from_tensors(
      tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), spec)).repeat()
  ds = ds.concatenate(padding).take(num_batches * local_batch).batch(local_batch)
  return EvalData(ds.prefetch(AUTOTUNE).with_options(_options()), num_batches)


def image_shape(source: Source, *, split: str, pp: str) -> tuple[int, ...]:
  """The (height, width, channels) that `pp` makes of `split`'s images (fixed, checked)."""
  data = eval_dataset(source, split=split, global_batch_size=1, pp=pp,
                      shards=DataShards(num_shards=1, process_index=0, process_count=1))
  return tuple(data.dataset.element_spec["image"].shape[1:])
