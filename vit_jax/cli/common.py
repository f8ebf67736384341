"""What every command shares: absl's app with library noise off and bad input as one line."""
from __future__ import annotations

import os
import sys
from typing import Callable

from vit_jax.errors import UserError

USER_ERROR_EXIT_CODE = 2


def run(main: Callable[[list[str]], None]) -> None:
  """absl.app.run(main); a UserError becomes `error: <message>` on stderr and exit code 2,
  every other exception keeps its traceback (a bug or out-of-memory must stay visible)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from absl import app  # pylint: disable=g-import-not-at-top

  def guarded(argv):
    try:
      return main(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(USER_ERROR_EXIT_CODE)
  app.run(guarded)
