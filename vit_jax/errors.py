"""The one error type for bad input.

`UserError`: a config value, flag, path or dataset the user gave cannot work. Its message
names the bad value and the fix. The commands under `vit_jax.cli` print it as one line
and exit with status 2; any other exception (a bug, device out-of-memory) keeps its
traceback.
"""
import errno as errno_lib
import os
import re


class UserError(ValueError):
  """Bad input; the message says what to change. A ValueError for code that catches one."""


def without_object_reprs(text: str) -> str:
  """`text` without the `<... object at 0x...>` / `<bound method ...>` reprs that some
  libraries put in their messages (they say nothing to a user)."""
  while (start := text.find("<bound method ")) >= 0:
    depth, end = 0, len(text)
    for i in range(start + 1, len(text)):  # to the '>' outside any bracket of the repr.
      if text[i] in "([{":
        depth += 1
      elif text[i] in ")]}":
        depth -= 1
      elif text[i] == ">" and depth <= 0:
        end = i + 1
        break
    text = text[:start] + text[end:]
  text = re.sub(r"<[^<>\n]* at 0x[0-9a-fA-F]+>", "", text)
  text = re.sub(r"[ \t]+([:,.;)])", r"\1", re.sub(r"[ \t]{2,}", " ", text))
  return text.strip(" :")


def first_line(error: BaseException, limit: int = 300) -> str:
  """'Type: the first line of the message', object reprs dropped, at most `limit` chars."""
  text = without_object_reprs(str(error).strip())
  text = text.splitlines()[0][:limit] if text else ""
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def os_cause(error: BaseException) -> str:
  """The operating system's reason inside an error ('No space left on device'), found in
  an OSError or in TensorStore's `[os_error_code='28']`; '' when there is none."""
  code = getattr(error, "errno", None)
  if not isinstance(code, int):
    found = re.search(r"os_error_code='?(\d+)", str(error))
    code = int(found.group(1)) if found else None
  if code is None or code not in errno_lib.errorcode:
    return ""
  return os.strerror(code)
