"""Downloads and prepares a TFDS dataset once, as ArrayRecord (needs network and
TensorFlow: `pip install 'vit_jax[tfds]'`; imagenet2012 needs the manual download in
<data_dir>/downloads/manual). Training then reads it without TensorFlow.

    python -m vit_jax.cli.prepare --dataset=cifar10 [--data_dir=~/tensorflow_datasets]
"""
import os

from absl import flags

from vit_jax.cli import common

from vit_jax.data.presets import canonical_name

flags.DEFINE_string("dataset", None, "TFDS name, e.g. cifar10.", required=True)
flags.DEFINE_string("data_dir", None, "TFDS data directory (default $TFDS_DATA_DIR or "
                    "~/tensorflow_datasets).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = canonical_name(FLAGS.dataset)
  data_dir = os.path.expanduser(FLAGS.data_dir or os.environ.get(
      "TFDS_DATA_DIR", "~/tensorflow_datasets"))
  from vit_jax.data import builders  # pylint: disable=g-import-not-at-top,unused-import  (offline builders)
  builder = tfds.builder(name, data_dir=data_dir)
  # ArrayRecord: random access, which the input pipeline (Grain) reads without TensorFlow.
  builder.download_and_prepare(file_format="array_record")
  print(f"Prepared {name} in {data_dir}: {dict(builder.info.splits)}")


if __name__ == "__main__":
  common.run(main, uses_tensorflow=True)
