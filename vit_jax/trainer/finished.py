"""What a command says of a finished run (its final evaluations recorded:
`runtime.workdir.finished_step`). Light on imports, so that a command can say "nothing to
do" before JAX starts."""
from __future__ import annotations


def nothing_to_do(step: int, total_steps: int) -> str:
  return (f"Nothing to do: this run already finished (step {step} of {total_steps}). Raise "
          f"--config.total_steps to train on, or use a new --workdir.")
