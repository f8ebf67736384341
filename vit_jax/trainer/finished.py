"""Whether a run is done (its final evaluations are recorded: `workdir.finished_step`) and
what a command says then. Light on imports, so that a command can say "nothing to do"
before JAX starts."""
from __future__ import annotations

from vit_jax.runtime.workdir import finished_step  # noqa: F401  (re-exported for the CLI)


def nothing_to_do(step: int, total_steps: int) -> str:
  return (f"Nothing to do: this run already finished (step {step} of {total_steps}). Raise "
          f"--config.total_steps to train on, or use a new --workdir.")
