"""Where the device time goes: a jax.profiler trace of a few steps, summed per kernel.

`trace_top_kernels(run, steps=5)` records `run()` with `jax.profiler.trace(...,
create_perfetto_trace=True)` and reads back the Chrome-trace JSON it writes: every
complete event on a device (GPU/TPU) timeline, summed by name and grouped into classes
(matmul, attention, convolution, fusion, copy, other), so the benchmark can print the top
kernels without TensorBoard or xprof installed.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from typing import Callable

import jax

_CLASSES = (  # first match wins; names as XLA:GPU / cuDNN / cuBLAS kernels are called.
    ("attention", re.compile(r"flash|fmha|sdpa|attention|cudnn_generated", re.I)),
    ("convolution", re.compile(r"convolution|implicit_gemm|fprop|dgrad|wgrad|conv2d", re.I)),
    ("matmul", re.compile(r"gemm|cublas|matmul|dot|nvjet|xmma|cutlass", re.I)),
    ("copy / transfer", re.compile(r"memcpy|memset|copy|transpose", re.I)),
    ("fusion (elementwise, norms, reductions)", re.compile(r"fusion|reduce|loop_|input_", re.I)),
)


def kernel_class(name: str) -> str:
  for label, pattern in _CLASSES:
    if pattern.search(name):
      return label
  return "other"


def _device_events(trace: dict) -> list[dict]:
  """Complete ('X') events on device timelines (process names mention GPU/TPU)."""
  devices = {event["pid"] for event in trace.get("traceEvents", [])
             if event.get("ph") == "M" and event.get("name") == "process_name"
             and re.search(r"GPU|TPU|/device:", str(event.get("args", {}).get("name", "")))}
  return [event for event in trace.get("traceEvents", [])
          if event.get("ph") == "X" and event.get("pid") in devices and "dur" in event]


def summarize(trace: dict, *, steps: int, top: int = 15) -> dict:
  """Per-step microseconds by kernel class and for the `top` kernels."""
  per_kernel: dict[str, float] = collections.defaultdict(float)
  for event in _device_events(trace):
    per_kernel[event["name"]] += float(event["dur"]) / steps
  per_class: dict[str, float] = collections.defaultdict(float)
  for name, micros in per_kernel.items():
    per_class[kernel_class(name)] += micros
  total = sum(per_kernel.values())
  ranked = sorted(per_kernel.items(), key=lambda item: -item[1])[:top]
  return {"device_us_per_step": total,
          "classes": dict(sorted(per_class.items(), key=lambda item: -item[1])),
          "top_kernels": [{"name": name, "us_per_step": micros, "class": kernel_class(name)}
                          for name, micros in ranked]}


def trace_top_kernels(run: Callable[[], object], *, steps: int = 5,
                      log_dir: str | None = None, top: int = 15) -> dict:
  log_dir = log_dir or tempfile.mkdtemp(prefix="vit_jax_profile_")
  jax.block_until_ready(run())
  with jax.profiler.trace(log_dir, create_perfetto_trace=True):
    for _ in range(steps):
      jax.block_until_ready(run())
  paths = sorted(glob.glob(os.path.join(log_dir, "**", "*.trace.json.gz"), recursive=True),
                 key=os.path.getmtime)
  if not paths:
    return {"error": f"no *.trace.json.gz under {log_dir}", "log_dir": log_dir}
  with gzip.open(paths[-1], "rt") as f:
    summary = summarize(json.load(f), steps=steps, top=top)
  return {**summary, "log_dir": log_dir}


def format_summary(summary: dict, step_seconds: float) -> str:
  if "error" in summary:
    return f"profile: {summary['error']}"
  lines = [f"\nDevice time per step {summary['device_us_per_step'] / 1e3:.2f} ms of "
           f"{step_seconds * 1e3:.2f} ms wall (trace in {summary['log_dir']})",
           "| kernel class | ms / step | share |", "|---|---|---|"]
  total = max(summary["device_us_per_step"], 1e-9)
  for label, micros in summary["classes"].items():
    lines.append(f"| {label} | {micros / 1e3:.2f} | {micros / total:.1%} |")
  lines += ["", "| top kernels | class | ms / step | share |", "|---|---|---|---|"]
  for kernel in summary["top_kernels"]:
    lines.append(f"| `{kernel['name'][:70]}` | {kernel['class']} | "
                 f"{kernel['us_per_step'] / 1e3:.3f} | {kernel['us_per_step'] / total:.1%} |")
  return "\n".join(lines)
