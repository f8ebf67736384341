"""A run's workdir, in one place: the name of every file the trainer writes there and
every tool reads back (local or in a bucket).

    <workdir>/config.json          the config as trained (configs/run.py, evaluate, convert)
              labels.txt           class names, one per line (predict says them)
              parameters.txt       the parameter table (names for `frozen`, `lr_mults`)
              metrics.jsonl        one JSON row per log line and evaluation
              final.json           the final evaluations: written last, a run is finished
              figures/             evaluator figures as PNGs (and in TensorBoard)
              <eval>_<table>.csv   an evaluator's tables (a confusion matrix)
              checkpoints/<step>/  orbax steps; <step>.damaged / .suspect / .superseded set
                                   aside (never deleted), health.json, divergence.json
              sweep_result.json    a sweep point's summary, once it has finished
"""
from __future__ import annotations

import json
from typing import Optional

from etils import epath

from vit_jax import storage
from vit_jax.errors import UserError

CONFIG = "config.json"
LABELS = "labels.txt"
PARAMETERS = "parameters.txt"
METRICS = "metrics.jsonl"
FINAL = "final.json"
FIGURES = "figures"
CHECKPOINTS = "checkpoints"
HEALTH = "health.json"          # in checkpoints/: {step: verdict} of the judged checkpoints.
DIVERGENCE = "divergence.json"  # in checkpoints/: a run stopped by a non-finite step.
SWEEP_RESULT = "sweep_result.json"


def path(workdir, name: str = "") -> epath.Path:
  """`<workdir>/<name>` (the workdir itself for '')."""
  root = storage.path(workdir)
  return root / name if name else root


def checkpoints(workdir) -> epath.Path:
  return path(workdir, CHECKPOINTS)


def read_config(workdir) -> dict:
  """A run's stored config (its config.json) as JSON values."""
  file = path(workdir, CONFIG)
  if not file.exists():
    raise UserError(f"{workdir} has no {CONFIG}: is it a vit_jax workdir?")
  return json.loads(file.read_text())


def read_metrics(workdir) -> list[dict]:
  """metrics.jsonl's rows ([] before the first)."""
  file = path(workdir, METRICS)
  if not file.exists():
    return []
  return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def finished_step(workdir) -> Optional[int]:
  """The step a finished run ended at (None: not finished, or no readable record)."""
  file = path(workdir, FINAL)
  try:
    return int(json.loads(file.read_text())["step"]) if file.exists() else None
  except (OSError, ValueError, KeyError, TypeError):
    return None
