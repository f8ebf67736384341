"""What the user sees: TensorBoard, `metrics.jsonl`, and concise progress lines.

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
from tensorboard.summary.writer import record_writer


def _plain(value: Any) -> Any:
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class JsonlWriter:
  """Appends one JSON object per write to `<workdir>/metrics.jsonl`: {"step": s, ...}.
  Append-only, flushed every write: a crash never loses or corrupts earlier lines."""

  def __init__(self, path: str):
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._file.write(json.dumps({"step": int(step), **{k: _plain(v) for k, v in scalars.items()}})
                     + "\n")
    self._file.flush()

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    del step, images  # images go to TensorBoard only.

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class TensorBoardWriter:
  """Scalars and images as TensorBoard events: one event file per (re)start, written with
  tensorboard's own record format and protos (its EventFileWriter would import TensorFlow
  when it is installed).

  Every file opens with a SessionLog START at `start_step + 1`, TensorFlow's own restart
  marker: TensorBoard drops what earlier attempts wrote at later steps, so a resumed run
  shows each step once. TensorBoard takes the first START it sees as the initial one, so
  a workdir whose files have none (written by older versions, named '*.v2') gets two."""

  def __init__(self, logdir: str, *, start_step: int = 0):
    names = [n for n in os.listdir(logdir) if n.startswith("events.out.tfevents")]
    has_start = any(not n.endswith(".v2") for n in names)
    path = os.path.join(logdir, f"events.out.tfevents.{int(time.time()):010d}."
                                f"{socket.gethostname()}.{os.getpid()}.{time.time_ns()}")
    self._file = open(path, "wb")
    self._records = record_writer.RecordWriter(self._file)
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    for _ in range(2 if names and not has_start else 1):
      self._write(event_pb2.Event(wall_time=time.time(), step=start_step + 1,
                                  session_log=event_pb2.SessionLog(
                                      status=event_pb2.SessionLog.START)))
    self.flush()

  def _write(self, event) -> None:
    self._records.write(event.SerializeToString())

  def _add(self, step: int, values: list) -> None:
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=summary_pb2.Summary(value=values)))
    self.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._add(step, [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                     for k, v in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """{tag: (H, W, C) or (N, H, W, C) image(s), uint8 or float in [0, 1]} as PNGs."""
    values = []
    for tag, batch in images.items():
      batch = np.asarray(batch)
      batch = batch[None] if batch.ndim == 3 else batch
      for i, image in enumerate(batch):
        values.append(summary_pb2.Summary.Value(
            tag=tag if len(batch) == 1 else f"{tag}/{i}", image=_png_summary(image)))
    self._add(step, values)

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def _png_summary(image: np.ndarray):
  if image.dtype != np.uint8:
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
  image = image[..., 0] if image.shape[-1] == 1 else image
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return summary_pb2.Summary.Image(height=image.shape[0], width=image.shape[1],
                                   colorspace=1 if image.ndim == 2 else image.shape[-1],
                                   encoded_image_string=buffer.getvalue())


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


def create_writer(workdir: str, *, start_step: int) -> MultiWriter:
  """TensorBoard + metrics.jsonl on process 0; nothing elsewhere. Training (re)starts at
  `start_step`: what an earlier attempt wrote past it is superseded, so every step is
  recorded once (see `forget_after`)."""
  if jax.process_index() != 0:
    return MultiWriter([])
  os.makedirs(workdir, exist_ok=True)
  forget_after(workdir, start_step)
  return MultiWriter([TensorBoardWriter(workdir, start_step=start_step),
                      JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])


def forget_after(workdir: str, step: int) -> None:
  """Drops metrics.jsonl rows past `step` (atomically rewritten); the TensorBoard writer
  marks its own restart (see TensorBoardWriter)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      lines = f.readlines()
    kept = [line for line in lines if _row_step(line) is not None and _row_step(line) <= step]
    if len(kept) != len(lines):
      with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(kept)
      os.replace(path + ".tmp", path)


def _row_step(line: str) -> Optional[int]:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None  # a line cut short by a crash: dropped.


class Progress:
  """Steps/s, images/s, ETA and MFU between two log points. Timing starts after the first
  step, so neither compilation nor the input pipeline's warm-up inflates the ETA."""

  def __init__(self, *, total_steps: int, start_step: int, batch_size: int,
               flops_per_step: Optional[float], peak_flops: Optional[float]):
    self.total_steps, self.batch_size = total_steps, batch_size
    self.flops_per_step, self.peak_flops = flops_per_step, peak_flops
    self._last_step, self._last_time = start_step, None

  def measure(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    if self._last_time is None:  # the first step: the clock starts now.
      self._last_step, self._last_time = step, now
      return {}
    elapsed, steps = now - self._last_time, step - self._last_step
    self._last_step, self._last_time = step, now
    if steps <= 0 or elapsed <= 0:
      return {}
    rate = steps / elapsed
    out = {"steps_per_sec": rate, "images_per_sec": rate * self.batch_size,
           "eta_seconds": (self.total_steps - step) / rate}
    if self.flops_per_step and self.peak_flops:
      out["mfu"] = rate * self.flops_per_step / self.peak_flops
    return out

  @staticmethod
  def line(step: int, total: int, metrics: Mapping[str, float], width: int = 20) -> str:
    """'[#####---------------] step 200/800 | loss 0.9455 | lr 0.00272 | ...'"""
    done = int(width * step / max(total, 1))
    eta = metrics.get("eta_seconds")
    skipped = metrics.get("skipped_images")
    parts = [f"[{'#' * done}{'-' * (width - done)}] step {step}/{total}",
             f"loss {metrics['train_loss']:.4f}" if "train_loss" in metrics else "",
             f"lr {metrics['learning_rate']:.3g}" if "learning_rate" in metrics else "",
             f"{metrics['images_per_sec']:,.0f} img/s" if "images_per_sec" in metrics else "",
             f"ETA {_duration(eta)}" if eta is not None else "",
             (f"MFU {metrics['mfu']:.1%}" if "mfu" in metrics else "MFU n/a")
             if "images_per_sec" in metrics else "",
             f"{int(skipped)} unreadable image(s) skipped" if skipped else ""]
    return " | ".join(p for p in parts if p)


def _duration(seconds: float) -> str:
  return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400 else \
      f"{seconds / 86400:.1f} days"


def summary_line(*, steps: int, seconds: float, batch_size: int,
                 final_eval: Mapping[str, float], checkpoint_dir: str) -> str:
  """The run's last line: what was done, how fast, how well, and where it is."""
  rate = steps * batch_size / seconds if seconds > 0 else 0.0
  results = ", ".join(f"{k} {v:.4f}" for k, v in sorted(final_eval.items())
                      if not k.endswith("examples"))
  return (f"Done: {steps} steps in {_duration(seconds)} ({rate:,.0f} img/s)"
          f"{'; ' + results if results else ''}; checkpoints in {checkpoint_dir}")


def log_line(message: str, *, every_process: bool = False) -> None:
  """One console line (stdout); absl's own log would repeat it on stderr."""
  if every_process or jax.process_index() == 0:
    print(message, flush=True)


def eval_line(step: int, scalars: Mapping[str, float]) -> str:
  """'eval step 400: fewshot_5shot_accuracy 0.9100, test_accuracy 0.9721, ...'."""
  def text(key: str, value: float) -> str:
    return f"{key} {int(value)}" if key.endswith("examples") else f"{key} {value:.4f}"
  return f"eval step {step}: " + ", ".join(text(k, v) for k, v in sorted(scalars.items()))
