r"""Accuracy and loss of a checkpoint on a dataset split, with the exact padded evaluation.

    python -m vit_jax.evaluate --checkpoint=/tmp/vit_quickstart
    python -m vit_jax.evaluate --checkpoint=ViT-B_16.npz --model=ViT-B_16 \
        --config=configs/finetune.py:b16,cifar10 --split=test

A workdir brings its own config (config.json); --config overrides it.
"""
import os
import sys

from absl import app, flags
from ml_collections import config_flags

flags.DEFINE_string("checkpoint", None, "Workdir of a run or an .npz file.", required=True)
flags.DEFINE_string("model", None, "Model name (needed for .npz files).")
flags.DEFINE_string("split", None, "Split to evaluate (default: the config's test_split).")
config_flags.DEFINE_config_file("config", None, "Config file with the dataset and "
                                "preprocessing (default: the workdir's config.json).")
FLAGS = flags.FLAGS


def evaluate_checkpoint(loaded, config, split: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import sharding as sharding_lib, steps, train  # pylint: disable=g-import-not-at-top
  from vit_jax.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  mesh = sharding_lib.make_mesh({"data": -1})
  source = sources.from_config(config)
  data = pipeline.eval_dataset(source, split=split, global_batch_size=config.eval_batch_size,
                               pp=config.pp_eval)
  replicated = sharding_lib.replicated(mesh)
  eval_step = jax.jit(steps.make_eval_step(loaded.model, loss=config.loss),
                      in_shardings=(replicated, sharding_lib.batch_sharding(mesh)),
                      out_shardings=replicated)
  return train.evaluate(eval_step, jax.device_put(loaded.params, replicated), data, mesh)


def main(argv):
  del argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from vit_jax import inference  # pylint: disable=g-import-not-at-top
  try:
    loaded = inference.load(FLAGS.checkpoint, model_name=FLAGS.model)
    config = FLAGS.config or loaded.config
    if config is None:
      raise ValueError("An .npz checkpoint needs --config for the dataset and preprocessing.")
    split = FLAGS.split or config.test_split
    results = evaluate_checkpoint(loaded, config, split)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"{config.dataset} {split}: accuracy {results['test_accuracy']:.4f}, loss "
        f"{results['test_loss']:.4f} over {int(results['test_examples'])} examples")


if __name__ == "__main__":
  app.run(main)
