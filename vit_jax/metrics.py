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


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard + metrics.jsonl + log lines on process 0; logging only elsewhere."""
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(just_logging=True)
  os.makedirs(workdir, exist_ok=True)
  return metric_writers.MultiWriter([
      metric_writers.create_default_writer(workdir, asynchronous=False),
      JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])


class Progress:
  """Steps/s, images/s, ETA and MFU between two log points."""

  def __init__(self, *, total_steps: int, start_step: int, batch_size: int,
               flops_per_step: Optional[float], peak_flops: Optional[float]):
    self.total_steps, self.batch_size = total_steps, batch_size
    self.flops_per_step, self.peak_flops = flops_per_step, peak_flops
    self._last_step, self._last_time = start_step, time.perf_counter()

  def measure(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
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
  def line(step: int, total: int, metrics: Mapping[str, float]) -> str:
    eta = metrics.get("eta_seconds")
    parts = [f"step {step}/{total}",
             f"loss {metrics['train_loss']:.4f}" if "train_loss" in metrics else "",
             f"lr {metrics['learning_rate']:.3g}" if "learning_rate" in metrics else "",
             f"{metrics['steps_per_sec']:.2f} steps/s" if "steps_per_sec" in metrics else "",
             f"{metrics['images_per_sec']:.0f} img/s" if "images_per_sec" in metrics else "",
             f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}" if eta is not None else "",
             f"MFU {metrics['mfu']:.1%}" if "mfu" in metrics else "MFU n/a"]
    return " | ".join(p for p in parts if p)


def log_line(message: str, *, every_process: bool = False) -> None:
  """One console line (stdout); absl's own log would repeat it on stderr."""
  if every_process or jax.process_index() == 0:
    print(message, flush=True)


def eval_line(step: int, scalars: Mapping[str, float]) -> str:
  """'eval step 400: fewshot_5shot_accuracy 0.9100, test_accuracy 0.9721, ...'."""
  def text(key: str, value: float) -> str:
    return f"{key} {int(value)}" if key.endswith("examples") else f"{key} {value:.4f}"
  return f"eval step {step}: " + ", ".join(text(k, v) for k, v in sorted(scalars.items()))
