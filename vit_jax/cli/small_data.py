r"""Small data from scratch, with the augmentation strength chosen on the validation split.

    python -m vit_jax.cli.small_data --config=configs/small_data.py:folder:/data/my_images \
        --workdir=/tmp/small

How strongly to augment depends on the data: the RandAugment + mixup that a ViT needs on
digits under-fits clothing photographs in the same schedule. So each strength of
configs/small_data.py (`--strengths`, default light and medium; also strong), with and
without flips where the data's own setting is unknown (image folders), first trains a
short probe on the training split (`--probe_steps`); the one with the best accuracy on the
validation split (held out of training) trains the full schedule, on the training and
validation images together (`--refit`, default on, where the validation split was cut from
the training one: the choice is made, so no image stays unused). Short probes favour
light augmentation: to compare strengths at full length, pass --probe_steps=3000.
Measured on a held-out Fashion-MNIST folder (BENCHMARKS.md): 86.55% in 1,159 s all told
on a 2-core CPU (85.9% without the refit), logistic regression 82.25%. With `--mae`, MAE
pre-training on the folder's own training images is one more option (measured
2026-12-06, `--strengths=light --mae`: chosen on Fashion-MNIST, 86.90% in 814 s; not
chosen on a synthetic shapes folder, 92.50% in 877 s). The test split is only
evaluated, never used to choose. Results: `WORKDIR/results.md` (every probe's validation
accuracy, the choice, the final test accuracy). Run the same command again
to resume: finished runs are skipped, an interrupted one resumes from its checkpoint.
`--config.FIELD=VALUE` goes to every run.
"""
from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_flags

from vit_jax import storage
from vit_jax.cli import common
from vit_jax.errors import UserError
from vit_jax.tuning import small_data

config_flags.DEFINE_config_file(
    "config", f"{small_data.CONFIG_FILE}:digits", "configs/small_data.py:DATASET ('digits', "
    "'pureml_mnist', a TFDS name or folder:DIR); --config.FIELD=VALUE goes to every run.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Probe runs under probe/, the chosen one under final/.")
flags.DEFINE_list("strengths", ["light", "medium"], "Augmentation strengths to choose "
                  "from (configs/small_data.py: light, medium, strong).")
flags.DEFINE_list("flips", ["auto"], "Random horizontal flips: 'auto' (the dataset's own "
                  "setting where known; folders: both searched), 'flip', 'noflip'.")
flags.DEFINE_bool("mae", False, "Also probe the lightest strength fine-tuned from MAE "
                  "pre-training on the training images themselves (no labels; "
                  "configs/small_data.py:DATASET,pretrain), at each flip setting.")
flags.DEFINE_integer("probe_steps", 400, "Steps of each probe run (of the full schedule's 3,000).")
flags.DEFINE_bool("refit", True, "Train the chosen option on the training and validation "
                  "images together (its validation accuracy is then not measured).")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv) -> None:
  del argv
  root = storage.check_writable(FLAGS.workdir)
  config_file, _, arg = config_flags.get_config_filename(FLAGS["config"]).partition(".py:")
  dataset = arg.split(",")[0] or "digits"
  options = small_data.candidates(dataset, FLAGS.strengths, FLAGS.flips, mae=FLAGS.mae)
  if FLAGS.probe_steps < 1:
    raise UserError(f"--probe_steps={FLAGS.probe_steps}: at least 1.")
  # Every run gets the overrides as typed (config_flags has checked them already).
  passthrough = [a for a in sys.argv[1:] if a.startswith("--config.")]
  print(small_data.run(f"{config_file}.py", dataset, root, options, FLAGS.probe_steps,
                       passthrough, refit=FLAGS.refit), end="")


if __name__ == "__main__":
  common.run(main)
