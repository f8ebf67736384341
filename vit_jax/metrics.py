"""What the user sees: TensorBoard (clu), `metrics.jsonl`, and concise progress lines."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping, Optional

import jax
import numpy as np
from clu import metric_writers
from clu.metric_writers import interface


def _plain(value: Any) -> Any:
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class JsonlWriter(interface.MetricWriter):
  """Appends one JSON object per write to `<workdir>/metrics.jsonl`: {"step": s, ...}.
  Append-only, flushed every write: a crash never loses or corrupts earlier lines."""

  def __init__(self, path: str):
    self._file = open(path, "a", encoding="utf-8")

  def _write(self, step: int, values: Mapping[str, Any]) -> None:
    self._file.write(json.dumps({"step": int(step), **{k: _plain(v) for k, v in values.items()}})
                     + "\n")
    self._file.flush()

  def write_scalars(self, step, scalars):
    self._write(step, scalars)

  def write_texts(self, step, texts):
    self._write(step, texts)

  def write_hparams(self, hparams):
    self._write(0, {"hparams": {k: str(v) for k, v in hparams.items()}})

  # Images, videos, audio and histograms go to TensorBoard only.
  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def create_writer(workdir: str, *, start_step: int) -> metric_writers.MetricWriter:
  """TensorBoard + metrics.jsonl on process 0; nothing elsewhere. Training (re)starts at
  `start_step`: what an earlier attempt wrote past it is superseded, so every step is
  recorded once (see `forget_after`)."""
  if jax.process_index() != 0:
    return metric_writers.MultiWriter([])
  os.makedirs(workdir, exist_ok=True)
  forget_after(workdir, start_step)
  return metric_writers.MultiWriter([
      metric_writers.SummaryWriter(workdir),
      JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])


def forget_after(workdir: str, step: int) -> None:
  """Drops metrics.jsonl rows past `step` (atomically rewritten) and tells TensorBoard to
  discard its events past `step`: a SessionLog START at step + 1, TensorFlow's own
  restart marker."""
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      lines = f.readlines()
    kept = [line for line in lines if _row_step(line) is not None and _row_step(line) <= step]
    if len(kept) != len(lines):
      with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(kept)
      os.replace(path + ".tmp", path)
  _mark_session_start(workdir, step + 1)


def _mark_session_start(workdir: str, step: int) -> None:
  """A SessionLog START at `step`: TensorBoard drops earlier events at steps >= `step`.
  It takes the first START it sees as the initial one, so a workdir without one (a run
  from an older version) gets two. The marker file's name sorts before the summary file
  that follows it (the same timestamp and counter, without '.v2')."""
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  from tensorboard.summary.writer import event_file_writer  # pylint: disable=g-import-not-at-top
  names = [n for n in os.listdir(workdir) if n.startswith("events.out.tfevents")]
  has_start = any(not n.endswith(".v2") for n in names)
  writer = event_file_writer.EventFileWriter(workdir)
  for _ in range(1 if has_start or not names else 2):
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=step,
                                     session_log=event_pb2.SessionLog(
                                         status=event_pb2.SessionLog.START)))
  writer.close()


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
