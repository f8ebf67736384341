"""Train and eval streams on Grain: sharded by process, deterministic, resumable in O(1),
exactly evaluated, with no TensorFlow.

Batch sizes are GLOBAL (summed over all processes and devices), as in the configs.

Training stream. A split is cut into `num_shards` data shards (default: one per process);
each process reads only its own shards. A shard's stream is an endless sequence of
epochs, each a fresh global shuffle of the shard (Grain's index shuffle), and the example
at stream position p is augmented with its own seed (run seed, shard, p). Records are
decoded and preprocessed in Grain's worker processes (or threads); skipping unreadable
images and batching happen after the workers, in order, so:
  - the same seed gives the same batches, whatever the number of workers;
  - the stream's state is one position per shard (`TrainStream.state`, saved with each
    checkpoint by Grain's orbax handler): resuming reads nothing it does not use;
  - with `num_shards` fixed, the batches do not depend on the number of processes.

Eval stream. Each process reads its part of the split, padded with masked examples to a
common number of whole batches, so every example counts exactly once.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import math
import os
import shutil
from typing import Any, Iterator, Optional, Sequence

import grain
import numpy as np

from vit_jax import console
from vit_jax.data.sources import Source, shard_range
from vit_jax.errors import UserError
from vit_jax.pp import builder
from vit_jax.pp.ops_naflex import COORDS
from vit_jax.pp.images import UnreadableImageError
from vit_jax.runtime import processes


@dataclasses.dataclass(frozen=True)
class DataShards:
  """Which data shards this process reads (data, not device, sharding)."""
  num_shards: int
  process_index: int
  process_count: int

  @classmethod
  def create(cls, num_shards: int = 0, process_index: Optional[int] = None,
             process_count: Optional[int] = None) -> "DataShards":
    if process_index is None or process_count is None:
      import jax  # pylint: disable=g-import-not-at-top  (input workers never need it)
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


def check_divisible(batch_size: int, count: int, what: str, *,
                    name: str = "Global batch size") -> None:
  """The one check that a batch splits evenly (over devices, data shards, processes,
  micro-batches), with the fix in the message."""
  if batch_size % count:
    raise UserError(f"{name} {batch_size} is not divisible by the {count} {what}; use a "
                    f"multiple of {count}.")


def num_workers(setting: int, source: Source) -> int:
  """Input worker processes: `setting` if >= 0; automatic (-1): none for in-memory data,
  else one per host core (up to 16). The main process only passes the workers' batches
  on (uint8, in shared memory, uncopied), so it needs no core of its own: on the 2-core
  box 2 workers gave 750 img/s, 1 worker 642 (BENCHMARKS.md)."""
  if setting >= 0:
    return setting
  return 0 if source.in_memory else max(1, min(os.cpu_count() or 1, 16))


# --- One example ------------------------------------------------------------------------
class _Example:
  """Record at stream position p -> {'image', 'label'} preprocessed, or {'skipped': path,
  'reason'} for an unreadable file. Runs in the input workers."""

  def __init__(self, source: Source, pp: str, pp_modules: Sequence[str], seed: int,
               shard: int):
    self.source, self.pp, self.pp_modules = source, pp, tuple(pp_modules)
    self.seed, self.shard = seed, shard
    self._pp_fn = None

  def __getstate__(self):  # the parsed ops are rebuilt in each worker.
    return {**self.__dict__, "_pp_fn": None}

  def __call__(self, position: int, record: Any) -> dict:
    if self._pp_fn is None:
      builder.import_modules(self.pp_modules)
      self._pp_fn = builder.build(self.pp)
    seed = np.array([self.seed, self.shard, position], np.int64)
    try:  # decoding happens in the source or in the first image op.
      example = self._pp_fn({**self.source.decode(record), "seed": seed})
      image = np.asarray(example["image"])
    except UnreadableImageError as e:
      return {"skipped": e.path, "reason": str(e)}
    label = np.asarray(example["label"])
    if np.issubdtype(label.dtype, np.integer):
      label = label.astype(np.int32)  # JAX runs without 64-bit types by default.
    if COORDS in example:  # NaFlex: the patches' grid coordinates travel with them.
      return {"image": image, "label": label, COORDS: np.asarray(example[COORDS])}
    return {"image": image, "label": label}


class _Chunk:
  """Grain batch function (runs in the input workers): the examples of consecutive stream
  positions as one transfer. The readable ones are stacked (straight into shared memory
  when a worker hands them over, so nothing is copied again) or, if their shapes differ,
  kept as rows; the unreadable ones stay as skip notes, in order."""

  def __init__(self, shared: bool):
    self.shared = shared

  def __call__(self, elements: Sequence[dict]) -> dict:
    kept = [e for e in elements if "skipped" not in e]
    chunk = {"order": np.array(["skipped" not in e for e in elements]),
             "notes": [e for e in elements if "skipped" in e]}
    kinds = {tuple((k, v.shape, v.dtype) for k, v in e.items()) for e in kept}
    if len(kinds) > 1:  # variable shapes: the batcher reports them.
      return {**chunk, "rows": kept}
    return {**chunk, "kept": {k: self._stack([e[k] for e in kept]) for k in kept[0]}
            if kept else {}}

  def _stack(self, arrays: list[np.ndarray]) -> np.ndarray:
    if not self.shared or arrays[0].dtype.hasobject:
      return np.stack(arrays)
    out = grain.multiprocessing.SharedMemoryArray((len(arrays), *arrays[0].shape),
                                                  arrays[0].dtype)
    return np.stack(arrays, out=out)


class SkipLog:
  """Unreadable files met by one stream: one warning per file, every skip counted."""

  def __init__(self, consequence: str = "training goes on without it"):
    self.files: set[str] = set()
    self.count = 0
    self.consequence = consequence

  def report(self, element: dict) -> None:
    if element["skipped"] not in self.files:
      self.files.add(element["skipped"])
      console.warn(f"skipping {element['reason']} ({self.consequence}).")
    self.count += 1


def _readable(elements: Iterator[dict], skips: SkipLog) -> Iterator[dict]:
  """Drops (and reports) unreadable records."""
  for element in elements:
    if "skipped" in element:
      skips.report(element)
      continue
    yield element


class _Batcher:
  """Chunks of consecutive stream positions in, batches of `size` readable examples out,
  each with the stream position just after its last example (what a resume starts
  from). A chunk that is exactly one batch passes through without a copy."""

  def __init__(self, size: int, pp: str, position: int, skips: SkipLog):
    self.size, self.pp, self.position, self.skips = size, pp, position, skips
    self._parts: list[dict] = []
    self._count = 0

  def feed(self, chunk: dict) -> Iterator[tuple[dict, int]]:
    for note in chunk["notes"]:
      self.skips.report(note)
    readable_positions = self.position + np.flatnonzero(chunk["order"])
    self.position += len(chunk["order"])
    start = 0
    while start < len(readable_positions):
      stop = min(start + self.size - self._count, len(readable_positions))
      self._parts.append(self._rows(chunk, start, stop))
      self._count += stop - start
      start = stop
      if self._count == self.size:
        batch = _concatenate(self._parts, self.pp)
        self._parts, self._count = [], 0
        yield batch, int(readable_positions[stop - 1]) + 1

  def _rows(self, chunk: dict, start: int, stop: int) -> dict:
    if "rows" in chunk:
      return _stack(chunk["rows"][start:stop], self.pp)
    kept = chunk["kept"]
    if stop - start == len(next(iter(kept.values()))):
      return kept
    return {k: v[start:stop] for k, v in kept.items()}


def _shapes_error(pp: str, shapes: set) -> UserError:
  return UserError(f"Preprocessing {pp!r} gives images of different shapes "
                   f"{sorted(shapes)}; it must produce a fixed size (add resize(...)).")


def _stack(elements: list[dict], pp: str) -> dict:
  shapes = {e["image"].shape for e in elements}
  if len(shapes) > 1:
    raise _shapes_error(pp, shapes)
  return {key: np.stack([e[key] for e in elements]) for key in elements[0]}


def _concatenate(parts: list[dict], pp: str) -> dict:
  if len(parts) == 1:
    return parts[0]
  shapes = {p["image"].shape[1:] for p in parts}
  if len(shapes) > 1:
    raise _shapes_error(pp, shapes)
  return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _ensure_absl_flags_parsed() -> None:
  """Grain's worker processes read absl flags; a library user may not have parsed any."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class _WorkerInit:
  """Grain's worker_init_fn (pickled into each worker): exit when the trainer is gone."""

  def __init__(self, owner_pid: int):
    self.owner_pid = owner_pid

  def __call__(self, worker_index: int, worker_count: int) -> None:
    del worker_index, worker_count
    processes.exit_when_gone(self.owner_pid)


def _iterate(dataset: grain.MapDataset, *, workers: int, threads: int = 4,
             buffer: Optional[int] = None) -> grain.DatasetIterator:
  """Elements in order, made by `threads` threads (in each of `workers` processes, if
  any), at most `buffer` (default 2 x threads) ahead of the reader: an element may be a
  whole batch."""
  threads = max(1, min(threads, os.cpu_count() or 1))
  iter_ds = dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=threads, prefetch_buffer_size=buffer or 2 * threads))
  if workers > 0:
    _ensure_absl_flags_parsed()
    # Each worker ends itself when this process dies, however it dies (SIGKILL included):
    # orphaned workers would hold their shared-memory batches and cores for minutes.
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers),
                                  worker_init_fn=_WorkerInit(os.getpid()))
  return iter(iter_ds)


def example_spec(source: Source, *, split: str, pp: str,
                 pp_modules: Sequence[str] = ()) -> dict[str, tuple[tuple, np.dtype]]:
  """{'image': (shape, dtype), 'label': (shape, dtype)} that `pp` makes of `split`'s first
  readable example."""
  records = source.records(split)
  example = _Example(source, pp, pp_modules, seed=0, shard=0)
  for position in range(min(len(records), 32)):
    element = example(position, records[position])
    if "skipped" not in element:
      return {k: (tuple(v.shape), v.dtype) for k, v in element.items()}
  raise UserError(f"Split {split!r} of {source.name} has no readable example among its "
                  f"first {min(len(records), 32)}.")


def image_shape(source: Source, *, split: str, pp: str,
                pp_modules: Sequence[str] = ()) -> tuple[int, ...]:
  """The (height, width, channels) that `pp` makes of `split`'s images."""
  return example_spec(source, split=split, pp=pp, pp_modules=pp_modules)["image"][0]


# --- Training ---------------------------------------------------------------------------
_SHARED_MEMORY = "/dev/shm"
_BATCHES_IN_SHARED_MEMORY = 6  # per worker: 2 x 2 reader threads, its queue, the reader's.


def _example_bytes(spec: dict[str, tuple[tuple, np.dtype]]) -> int:
  return sum(math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in spec.values())


def _warn_if_shared_memory_is_short(workers: int, batch_bytes: int) -> None:
  """Workers hand batches over in shared memory; where it is too small (a container's
  64 MB /dev/shm) a worker dies of SIGBUS mid-run. Say so, with the fix, before."""
  try:
    free = shutil.disk_usage(_SHARED_MEMORY).free
  except OSError:
    return
  needed = workers * _BATCHES_IN_SHARED_MEMORY * batch_bytes
  if needed > free:
    console.warn(
        f"the {workers} input workers may hold up to {needed / 1e9:.2f} GB of batches in "
        f"shared memory, but {_SHARED_MEMORY} has {free / 1e9:.2f} GB free: a worker that "
        f"runs out dies (SIGBUS). Give the container more (docker run "
        f"--shm-size={math.ceil(needed / 2**30) + 1}g) or lower --config.input_workers or "
        f"the batch size.")


class InputState:
  """The training stream's position at one step, as Grain's orbax CheckpointHandler
  saves and restores it (one JSON file per process)."""

  def __init__(self, state: Optional[dict] = None):
    self.state = state

  def get_state(self) -> bytes:
    return json.dumps(self.state).encode()

  def set_state(self, state: bytes) -> None:
    self.state = json.loads(state)

  def start_prefetch(self) -> None:
    pass


class TrainStream:
  """This process's part of each global training batch, from step `start_step` on, as
  numpy dicts {'image', 'label'}; `num_batches` of them (None: endless).

  `positions` ({shard: records consumed}, from `state(step)` of an earlier run) resumes
  exactly; without it the stream starts at `start_step` batches per shard (exact unless
  the earlier run skipped unreadable images). `spec`: `example_spec` of `pp`, if the
  caller has it already."""

  def __init__(self, source: Source, *, split: str, global_batch_size: int, pp: str,
               seed: int, start_step: int = 0, shards: Optional[DataShards] = None,
               num_batches: Optional[int] = None, positions: Optional[dict] = None,
               workers: int = 0, pp_modules: Sequence[str] = (),
               spec: Optional[dict] = None):
    shards = shards or DataShards.create()
    check_divisible(global_batch_size, shards.num_shards,
                    "data shards (one per process by default)")
    self.skips = SkipLog()
    self.shard_batch = global_batch_size // shards.num_shards
    self.pp, self.step, self.end = pp, start_step, (
        None if num_batches is None else start_step + num_batches)
    positions = {int(k): v for k, v in (positions or {}).items()}
    records = source.records(split)
    self.positions, self._iterators = {}, {}
    per_shard_workers = math.ceil(workers / len(shards.local_shards)) if workers else 0
    if per_shard_workers:
      spec = spec or example_spec(source, split=split, pp=pp, pp_modules=pp_modules)
      _warn_if_shared_memory_is_short(per_shard_workers * len(shards.local_shards),
                                      self.shard_batch * _example_bytes(spec))
    for shard in shards.local_shards:
      window = shard_range(len(records), shard, shards.num_shards, drop_remainder=True)
      if not window:
        raise UserError(f"Split {split!r} of {source.name} has no examples for data shard "
                        f"{shard} of {shards.num_shards}.")
      self.positions[shard] = positions.get(shard, start_step * self.shard_batch)
      shuffle_seed = int(np.random.SeedSequence([seed, shard]).generate_state(1)[0])
      dataset = (grain.MapDataset.source(records).slice(slice(window.start, window.stop))
                 .shuffle(seed=shuffle_seed).repeat()
                 .map_with_index(_Example(source, pp, pp_modules, seed, shard))
                 .slice(slice(self.positions[shard], None)))
      # One chunk per batch of stream positions: one transfer per batch, no copy after
      # it, and nothing that depends on the worker count (skipping happens after).
      dataset = dataset.batch(self.shard_batch,
                              batch_fn=_Chunk(shared=per_shard_workers > 0))
      self._iterators[shard] = _iterate(dataset, workers=per_shard_workers,
                                        threads=2 if per_shard_workers else 4)
    self._batches = {shard: self._shard_batches(shard) for shard in self._iterators}
    self._states = collections.OrderedDict()

  def _shard_batches(self, shard: int) -> Iterator[dict]:
    batcher = _Batcher(self.shard_batch, self.pp, self.positions[shard], self.skips)
    for chunk in self._iterators[shard]:
      for batch, position in batcher.feed(chunk):
        self.positions[shard] = position
        yield batch

  def __iter__(self) -> "TrainStream":
    return self

  def __next__(self) -> dict:
    if self.end is not None and self.step >= self.end:
      raise StopIteration
    parts = [next(batches) for batches in self._batches.values()]
    self.step += 1
    self._states[self.step] = dict(self.positions)
    while len(self._states) > 64:  # the trainer saves within a few steps of reading.
      self._states.popitem(last=False)
    if len(parts) == 1:
      return parts[0]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

  def state(self, step: int) -> InputState:
    """The position after the batch of `step` (one of the last 64 read)."""
    return InputState({"step": step, "positions": {str(k): v
                                                   for k, v in self._states[step].items()}})

  def close(self) -> None:
    for iterator in self._iterators.values():
      close = getattr(iterator, "close", None)
      if close is not None:
        close()


# --- Evaluation -------------------------------------------------------------------------
class EvalData:
  """A padded eval split: `num_batches` local batches with 'mask' (0 on padding)."""

  def __init__(self, source: Source, records: grain.MapDataset, *, local_batch: int,
               num_batches: int, pp: str, padding: dict, pp_modules: Sequence[str] = (),
               num_examples: Optional[int] = None):
    self.source, self.records, self.pp, self.pp_modules = source, records, pp, pp_modules
    self.local_batch, self.num_batches, self.padding = local_batch, num_batches, padding
    self.num_examples = num_examples  # in the whole split, all processes' parts.
    self.skips = SkipLog("evaluated without it: the eval lines count the examples used")

  def __iter__(self) -> Iterator[dict]:
    dataset = self.records.map_with_index(
        _Example(self.source, self.pp, self.pp_modules, seed=0, shard=0))
    elements = _readable(_iterate(dataset, workers=0, buffer=256), self.skips)
    for _ in range(self.num_batches):
      batch = [dict(e, mask=np.float32(1))
               for e in itertools.islice(elements, self.local_batch)]
      batch += [self.padding] * (self.local_batch - len(batch))
      yield _stack(batch, self.pp)


def eval_dataset(source: Source, *, split: str, global_batch_size: int, pp: str,
                 shards: Optional[DataShards] = None,
                 pp_modules: Sequence[str] = ()) -> EvalData:
  shards = shards or DataShards.create()
  count, index = shards.process_count, shards.process_index
  check_divisible(global_batch_size, count, "processes", name="Eval batch size")
  local_batch = global_batch_size // count
  records = source.records(split)
  windows = [shard_range(len(records), i, count, drop_remainder=False) for i in range(count)]
  num_batches = max(1, math.ceil(max(len(w) for w in windows) / local_batch))
  window = windows[index]
  local = grain.MapDataset.source(records).slice(slice(window.start, window.stop))
  spec = example_spec(source, split=split, pp=pp, pp_modules=pp_modules)
  padding = {**{k: np.zeros(shape, dtype) for k, (shape, dtype) in spec.items()},
             "mask": np.float32(0)}
  return EvalData(source, local, local_batch=local_batch, num_batches=num_batches, pp=pp,
                  padding=padding, pp_modules=pp_modules, num_examples=len(records))
