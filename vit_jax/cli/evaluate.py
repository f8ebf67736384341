r"""Runs a saved run's evaluators (or any named in a config) on its newest checkpoint.

    python -m vit_jax.cli.evaluate --checkpoint=/tmp/vit_quickstart
    python -m vit_jax.cli.evaluate --checkpoint=/tmp/big_run --evals=test,fewshot \
        --config=configs/run.py:/tmp/big_run --config.mesh.data=1 --config.mesh.fsdp=-1
    python -m vit_jax.cli.evaluate --checkpoint=ViT-B_16.npz \
        --config=configs/finetune.py:b16,cifar10

The parameters are restored straight onto the config's mesh with the training shardings
(FSDP, tensor parallelism), so a model that needed them to train is evaluated with them.
A workdir brings its own config (config.json), which `--config.x=...` flags change as
they would a config file's (configs/run.py:DIR is that run's config); --config replaces
it. Any other checkpoint (.npz, Hugging
Face directory, timm file) needs --config for the data; its architecture and input
normalisation come from the checkpoint.
"""
from absl import flags
from ml_collections import config_flags

from vit_jax.cli import common

flags.DEFINE_string("checkpoint", None, "A run's workdir, .npz, timm file or Hugging Face directory.", required=True)
flags.DEFINE_list("evals", [], "Evaluators of config.evals to run (default: all that are "
                  "not disabled with every=-1).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
config_flags.DEFINE_config_file("config", None, "Config with the evaluators, data and mesh "
                                "(default: the workdir's config.json).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from vit_jax import config as config_lib, console  # pylint: disable=g-import-not-at-top
  from vit_jax.runtime import workdir  # pylint: disable=g-import-not-at-top
  from vit_jax.convert import is_run_directory  # pylint: disable=g-import-not-at-top
  from vit_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  from vit_jax.trainer import evaluate, progress  # pylint: disable=g-import-not-at-top
  from vit_jax import storage  # pylint: disable=g-import-not-at-top
  checkpoint = FLAGS.checkpoint
  config = FLAGS.config
  if not storage.path(checkpoint).exists():
    raise UserError(f"--checkpoint={checkpoint}: no such run directory or checkpoint file.")
  if config is None:
    if not is_run_directory(checkpoint):
      raise UserError("This checkpoint needs --config for the dataset and evaluators, e.g. "
                      "--config=configs/finetune.py:b16,cifar10.")
    config = config_lib.from_stored(workdir.read_config(checkpoint))
  step, results = evaluate.evaluate_checkpoint(config, checkpoint, names=FLAGS.evals,
                                               step=FLAGS.step)
  console.line(progress.eval_line(step, results))


def _run_config_for_overrides(argv: list[str]) -> list[str]:
  """`--config.x=...` with no --config changes the run's own config: the command then
  reads as if `--config=configs/run.py:<checkpoint>` had been given."""
  checkpoint = next((a.split("=", 1)[1] for a in argv if a.startswith("--checkpoint=")), None)
  overrides = any(a.startswith("--config.") for a in argv)
  given = any(a == "--config" or a.startswith("--config=") for a in argv)
  if checkpoint is None or not overrides or given:
    return argv
  first = next(i for i, a in enumerate(argv) if a.startswith("--config."))
  return [*argv[:first], f"--config=configs/run.py:{checkpoint}", *argv[first:]]


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  sys.argv = _run_config_for_overrides(sys.argv)
  common.run(main)
