"""The console: every line a user reads goes through here, in one format, once per run.

`line(text)` for headers, progress, results; `warn(text)` for 'warning: ...' lines. Both
print on stdout (in order with each other) from process 0 only, unless `every_process`.
Errors are not here: a `UserError` becomes one `error: ...` line on stderr in
`vit_jax.cli.common`.
"""
from __future__ import annotations

import sys


def _is_first_process() -> bool:
  jax = sys.modules.get("jax")  # never imported for this: input workers have no JAX.
  return jax is None or jax.process_index() == 0


def line(text: str, *, every_process: bool = False) -> None:
  if every_process or _is_first_process():
    # One write: a signal handled between a text and its newline (Ctrl-C twice) would
    # glue the next line, an error's, to this one.
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def warn(text: str, *, every_process: bool = False) -> None:
  line(f"warning: {text}", every_process=every_process)
