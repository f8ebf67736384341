"""Where a run's metrics go: TensorBoard event files and `metrics.jsonl` (process 0), in a
local workdir or a bucket.

TensorBoard event files are written with the tensorboard package's own writer and protos,
so training needs no TensorFlow."""
from __future__ import annotations

import io
import json
import os
import socket
import time
from typing import Any, Mapping, Optional

import jax
import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from etils import epath
from tensorboard.summary.writer import record_writer

from vit_jax import storage
from vit_jax.runtime import workdir as workdir_lib


def _plain(value: Any) -> Any:
  """A number or array as JSON: non-finite floats become null (strict JSON)."""
  value = np.asarray(value)
  if value.dtype.kind == "f":
    value = np.where(np.isfinite(value), value, None).astype(object)
  return value.item() if value.ndim == 0 else value.tolist()


class _UploadClock:
  """A bucket object cannot be appended to: its writer uploads at most every `every`
  seconds (and whenever the trainer flushes: at checkpoints, evaluations and the end)."""

  def __init__(self, every: float = 30.0):
    self.every, self._last = every, time.monotonic()

  def due(self) -> bool:
    if time.monotonic() - self._last >= self.every:
      self._last = time.monotonic()
      return True
    return False


class JsonlWriter:
  """One JSON object per write in `<workdir>/metrics.jsonl`: {"step": s, ...}, strict JSON
  (a non-finite value is null). Local: appended and flushed every write, so a crash never
  loses or corrupts earlier lines. In a bucket: the whole object is rewritten (atomically)
  when the upload clock says so and at every flush."""

  def __init__(self, path: epath.Path):
    self.path, self.remote = path, storage.is_remote(path)
    if self.remote:
      self._text = self.path.read_text() if self.path.exists() else ""
      self._clock, self._dirty = _UploadClock(), False
    else:
      self._file = self.path.open("a")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    row = json.dumps({"step": int(step), **{k: _plain(v) for k, v in scalars.items()}},
                     allow_nan=False) + "\n"
    if not self.remote:
      self._file.write(row)
      self._file.flush()
      return
    self._text += row
    self._dirty = True
    if self._clock.due():
      self.flush()

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    del step, images  # images go to TensorBoard only.

  def flush(self) -> None:
    if not self.remote:
      self._file.flush()
    elif self._dirty:
      storage.write_text(self.path, self._text)
      self._dirty = False

  def close(self) -> None:
    self.flush()
    if not self.remote:
      self._file.close()


# What the train step and the progress meter report; everything else is an evaluation's.
TRAIN_SCALARS = ("train_loss", "learning_rate", "grad_norm", "nonfinite", "steps_per_sec",
                 "images_per_sec", "eta_seconds", "mfu", "skipped_images", "skipped_steps")


def tensorboard_tag(name: str) -> str:
  """TensorBoard's section for a metric: 'train/train_loss', 'eval/test_accuracy' (the
  names in metrics.jsonl stay flat)."""
  return f"{'train' if name in TRAIN_SCALARS else 'eval'}/{name}"


class TensorBoardWriter:
  """Scalars and images as TensorBoard events, written with tensorboard's own record format
  and protos (its EventFileWriter would import TensorFlow when it is installed).

  Locally one event file per (re)start, appended as it goes. In a bucket, where objects
  cannot be appended to, the events since the last upload go to a new event file each
  time (names sort by time, which is the order TensorBoard reads them in).

  A (re)start's first file opens with a SessionLog START at `start_step + 1`,
  TensorFlow's own restart marker: TensorBoard drops what earlier attempts wrote at later
  steps, so a resumed run shows each step once. TensorBoard takes the first START it sees
  as the initial one, so a workdir whose files have none (written by older versions,
  named '*.v2') gets two."""

  def __init__(self, logdir: epath.Path, *, start_step: int = 0):
    self.logdir, self.remote = logdir, storage.is_remote(logdir)
    names = [p.name for p in logdir.iterdir() if p.name.startswith("events.out.tfevents")]
    has_start = any(not n.endswith(".v2") for n in names)
    self._buffer = io.BytesIO()
    self._file = self._buffer if self.remote else (logdir / self._new_name()).open("wb")
    self._records = record_writer.RecordWriter(self._file)
    self._clock = _UploadClock()
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    for _ in range(2 if names and not has_start else 1):
      self._write(event_pb2.Event(wall_time=time.time(), step=start_step + 1,
                                  session_log=event_pb2.SessionLog(
                                      status=event_pb2.SessionLog.START)))
    self.flush()

  @staticmethod
  def _new_name() -> str:
    return (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{time.time_ns()}")

  def _write(self, event) -> None:
    self._records.write(event.SerializeToString())

  def _add(self, step: int, values: list) -> None:
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=summary_pb2.Summary(value=values)))
    if not self.remote or self._clock.due():
      self.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._add(step, [summary_pb2.Summary.Value(tag=tensorboard_tag(k), simple_value=float(v))
                     for k, v in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """{tag: (H, W, C) or (N, H, W, C) image(s), uint8 or float in [0, 1]} as PNGs."""
    self._add(step, [summary_pb2.Summary.Value(tag="figures/" + tag.removeprefix("figures_"),
                                               image=_png_summary(image))
                     for tag, image in _image_batches(images)])

  def flush(self) -> None:
    if not self.remote:
      self._file.flush()
      return
    data = self._buffer.getvalue()
    if data:
      storage.write_bytes(self.logdir / self._new_name(), data)
      self._buffer.seek(0)
      self._buffer.truncate()

  def close(self) -> None:
    self.flush()
    if not self.remote:
      self._file.close()


def _as_uint8(image: np.ndarray) -> np.ndarray:
  if image.dtype != np.uint8:
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
  return image[..., 0] if image.shape[-1] == 1 else image


def png_bytes(image: np.ndarray) -> bytes:
  """(H, W, C) uint8, or float in [0, 1] -> PNG file contents."""
  buffer = io.BytesIO()
  Image.fromarray(_as_uint8(image)).save(buffer, format="PNG")
  return buffer.getvalue()


def _png_summary(image: np.ndarray):
  image = _as_uint8(image)
  return summary_pb2.Summary.Image(height=image.shape[0], width=image.shape[1],
                                   colorspace=1 if image.ndim == 2 else image.shape[-1],
                                   encoded_image_string=png_bytes(image))


def _image_batches(images: Mapping[str, np.ndarray]):
  """(name, image) of each image: a batch's i-th as name/i."""
  for tag, batch in images.items():
    batch = np.asarray(batch)
    batch = batch[None] if batch.ndim == 3 else batch
    for i, image in enumerate(batch):
      yield (tag if len(batch) == 1 else f"{tag}/{i}"), image


class FiguresWriter:
  """Evaluation images (the figures evaluator's, a confusion matrix) as PNG files,
  WORKDIR/figures/<name>_step<step>.png: to open without TensorBoard."""
  FOLDER = workdir_lib.FIGURES

  def __init__(self, workdir):
    self.folder = storage.path(workdir) / self.FOLDER

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    del step, scalars

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    for name, image in _image_batches(images):
      storage.write_bytes(self.folder / f"{name.replace('/', '_')}_step{step}.png",
                          png_bytes(image))

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


class MultiWriter:
  """Writes to every writer (none on processes other than 0)."""

  def __init__(self, writers: list):
    self.writers = writers

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for writer in self.writers:
      writer.write_scalars(step, scalars)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    for writer in self.writers:
      writer.write_images(step, images)

  def flush(self) -> None:
    for writer in self.writers:
      writer.flush()

  def close(self) -> None:
    for writer in self.writers:
      writer.close()


def create_writer(workdir, *, start_step: int, config=None) -> MultiWriter:
  """metrics.jsonl and the configured trackers (TensorBoard by default; W&B) on process
  0; nothing elsewhere. Training (re)starts at `start_step`: what an earlier attempt wrote
  past it is superseded, so every step is recorded once (see `forget_after`)."""
  if jax.process_index() != 0:
    return MultiWriter([])
  workdir = storage.path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  forget_after(workdir, start_step)
  trackers = tuple(config.get("trackers", ("tensorboard",))) if config else ("tensorboard",)
  writers = [JsonlWriter(workdir / workdir_lib.METRICS), FiguresWriter(workdir)]
  if "tensorboard" in trackers:
    writers.append(TensorBoardWriter(workdir, start_step=start_step))
  if "wandb" in trackers:
    from vit_jax.trainer import wandb_writer  # pylint: disable=g-import-not-at-top
    writers.append(wandb_writer.WandbWriter(workdir, config))
  return MultiWriter(writers)




def forget_after(workdir, step: int) -> None:
  """Drops metrics.jsonl rows past `step` (rewritten whole, atomically); the TensorBoard
  writer marks its own restart (see TensorBoardWriter)."""
  path = storage.path(workdir) / workdir_lib.METRICS
  if path.exists():
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _row_step(line) is not None and _row_step(line) <= step]
    if len(kept) != len(lines):
      storage.write_text(path, "".join(kept))


def _row_step(line: str) -> Optional[int]:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None  # a line cut short by a crash: dropped.
