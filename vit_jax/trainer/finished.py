"""Whether a run is done: its final evaluations are recorded (final.json, written last).
Light on imports, so that a command can say "nothing to do" before JAX starts."""
from __future__ import annotations

import json
from typing import Optional

from vit_jax import storage

FINAL_FILE = "final.json"  # written once the final evaluations are recorded: a run is done.


def finished_step(workdir) -> Optional[int]:
  """The step a finished run ended at (None: not finished, or no readable record)."""
  path = storage.path(workdir) / FINAL_FILE
  try:
    return int(json.loads(path.read_text())["step"]) if path.exists() else None
  except (OSError, ValueError, KeyError, TypeError):
    return None


def nothing_to_do(step: int, total_steps: int) -> str:
  return (f"Nothing to do: this run already finished (step {step} of {total_steps}). Raise "
          f"--config.total_steps to train on, or use a new --workdir.")
