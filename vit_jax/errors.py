"""The one error type for bad input.

`UserError`: a config value, flag, path or dataset the user gave cannot work. Its message
names the bad value and the fix. The commands under `vit_jax.cli` print it as one line
and exit with status 2; any other exception (a bug, device out-of-memory) keeps its
traceback.
"""


class UserError(ValueError):
  """Bad input; the message says what to change. A ValueError for code that catches one."""
