r"""Every field of a config, with its value and meaning.

    python -m vit_jax.cli.config --config=quickstart
    python -m vit_jax.cli.config --config=configs/finetune.py:b16,cifar10 --config.lr=0.01

The meanings are `vit_jax/config_fields.py`'s, the one place each field is documented for
users; the model's fields show the preset's values (what the run will use), and a field set
on the command line its new value. Full flag list: --helpfull.
"""
from absl import flags
from ml_collections import config_flags

from vit_jax.cli import common

config_flags.DEFINE_config_file("config", None, "Config file or shipped config name, e.g. "
                                "quickstart or configs/finetune.py:b16,cifar10")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def _model_values(config) -> dict:
  """The model's hyper-parameters as the run will have them: the preset's values under
  the config's `model.*` fields (unset, None, in the config itself)."""
  from vit_jax.models.presets import MODEL_PRESETS, resolve_model_name  # pylint: disable=g-import-not-at-top
  from vit_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    preset = dict(MODEL_PRESETS[resolve_model_name(config.model_name)])
  except UserError:  # a family module: no preset.
    preset = {}
  preset.pop("family", None)
  return {**preset, **{k: v for k, v in config.model.to_dict().items() if v is not None}}


def describe(config) -> list[str]:
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from vit_jax.config_fields import MEANINGS  # pylint: disable=g-import-not-at-top
  values = config.to_dict()
  values["model"] = {**values["model"], **_model_values(config)}
  flat = traverse_util.flatten_dict(values, sep=".")
  width = min(max(len(k) for k in flat), 34)
  rows = []
  for key in sorted(flat):
    # evals.* settings are the evaluators' own (see vit_jax/config.py's *_eval helpers).
    meaning = MEANINGS.get(key, "")
    rows.append(f"{key:<{width}} = {flat[key]!r}" + (f"  # {meaning}" if meaning else ""))
  return rows


def main(argv):
  del argv
  print("\n".join(describe(FLAGS.config)), flush=True)


if __name__ == "__main__":
  common.run(main)
