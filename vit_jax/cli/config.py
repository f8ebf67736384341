r"""Every field of a config, with its value and meaning.

    python -m vit_jax.cli.config --config=quickstart
    python -m vit_jax.cli.config --config=configs/finetune.py:b16,cifar10 --config.lr=0.01

The meanings are the comments of the base config (`vit_jax/config.py`), the one place each
field is documented; a field set on the command line shows its new value. Full flag list:
--helpfull.
"""
import inspect
import re

from absl import flags
from ml_collections import config_flags

from vit_jax.cli import common

config_flags.DEFINE_config_file("config", None, "Config file or shipped config name, e.g. "
                                "quickstart or configs/finetune.py:b16,cifar10")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS

_FIELD = re.compile(r'^\s*(?:c\.(\w+)\s*=|"(\w+)":)[^#]*(?:#\s*(.*))?$')
_COMMENT = re.compile(r"^\s*#\s?(.*)$")


def meanings() -> dict[str, str]:
  """Field name -> its comment in the base config: the comment on its line (and the
  comment lines continuing it), else the comment block just above its group of fields."""
  from vit_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  found, block, last, previous = {}, [], None, ""
  for line in inspect.getsource(config_lib.base_config).splitlines():
    field, comment = _FIELD.match(line), _COMMENT.match(line)
    indent = len(line) - len(line.lstrip())
    if field:
      name = field.group(1) or field.group(2)
      text = field.group(3) or " ".join(block)
      if text and name not in found:
        found[name] = text.strip()
      last, previous = (name, "inline") if field.group(3) else (None, "field")
    elif comment and previous == "inline" and indent > 10:  # an inline comment, continued.
      found[last] += " " + comment.group(1).strip()
    elif comment:
      block = (block if previous == "comment" else []) + [comment.group(1).strip()]
      previous = "comment"
    else:
      block, previous = [], ""
  return found


def describe(config) -> list[str]:
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  known = meanings()
  flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
  width = min(max(len(k) for k in flat), 34)
  rows = []
  for key in sorted(flat):
    value = flat[key]
    # evals.* settings are the evaluators' own (see vit_jax/config.py's *_eval helpers).
    meaning = "" if key.startswith("evals.") else known.get(key.split(".")[-1], "")
    rows.append(f"{key:<{width}} = {value!r}" + (f"  # {meaning}" if meaning else ""))
  return rows


def main(argv):
  del argv
  print("\n".join(describe(FLAGS.config)), flush=True)


if __name__ == "__main__":
  common.run(main)
