"""Prepares data once, before training.

A TFDS dataset, downloaded and written as ArrayRecord (needs network and TensorFlow:
`pip install 'vit_jax[tfds]'`; imagenet2012 needs the manual download in
<data_dir>/downloads/manual). Training then reads it without TensorFlow:

    python -m vit_jax.cli.prepare --dataset=cifar10 [--data_dir=~/tensorflow_datasets]

An image folder, pre-resized to a shorter side (faster decoding in training; no TF):

    python -m vit_jax.cli.prepare --folder=/data/images --out=/data/images_256 [--shorter_side=256]
"""

from absl import flags

from vit_jax.cli import common
from vit_jax.data.presets import canonical_name
from vit_jax.errors import UserError

flags.DEFINE_string("dataset", None, "TFDS name, e.g. cifar10; vtab:<task> for a VTAB task's "
                    "dataset, vtab1k for all of them.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default $TFDS_DATA_DIR or "
                    "~/tensorflow_datasets).")
flags.DEFINE_string("folder", None, "An image folder DIR/{train,test}/<class>/* to resize.")
flags.DEFINE_string("out", None, "Where the resized folder goes (with --folder).")
flags.DEFINE_integer("shorter_side", 256, "Shorter side of the resized images (--folder).")
FLAGS = flags.FLAGS


def prepare_tfds(name: str, data_dir: str) -> None:
  """Downloads and writes `name` as ArrayRecord into `data_dir`. A bucket data dir is
  prepared in a local temporary folder first and uploaded: ArrayRecord's writer takes
  local files only."""
  from vit_jax import storage  # pylint: disable=g-import-not-at-top
  if storage.is_remote(data_dir):
    storage.check_writable(data_dir, what="--data_dir")
    import tempfile  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryDirectory(prefix="vit_jax_prepare_") as local:
      splits = _prepare_locally(name, local)
      count = storage.copy_tree(local, data_dir)
    print(f"Prepared {name} in {data_dir} ({count} files uploaded): {splits}")
    return
  splits = _prepare_locally(name, data_dir)
  print(f"Prepared {name} in {data_dir}: {splits}")


def _prepare_locally(name: str, data_dir: str) -> dict:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from vit_jax.data import builders  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (registers the offline builders)
    builder = tfds.builder(name, data_dir=data_dir)
  except ImportError as e:
    raise UserError(f"Preparing a TFDS dataset needs TensorFlow ({e}): "
                    f"pip install 'vit_jax[tfds]'") from None
  # ArrayRecord: random access, which the input pipeline (Grain) reads without TensorFlow.
  builder.download_and_prepare(file_format="array_record")
  return dict(builder.info.splits)


def main(argv):
  del argv
  if FLAGS.folder:
    if not FLAGS.out:
      raise UserError("--folder needs --out=DIR, where the resized copy goes.")
    from vit_jax.data import prepare_folder  # pylint: disable=g-import-not-at-top
    out = prepare_folder.resize_folder(FLAGS.folder, FLAGS.out,
                                       shorter_side=FLAGS.shorter_side)
    print(f"Wrote {out} (shorter side <= {FLAGS.shorter_side}); train with "
          f"--config.dataset=folder:{out}")
    return
  if not FLAGS.dataset:
    raise UserError("Give --dataset=NAME (a TFDS dataset) or --folder=DIR --out=DIR.")
  from vit_jax.data import vtab  # pylint: disable=g-import-not-at-top
  from vit_jax.data.sources import default_data_dir  # pylint: disable=g-import-not-at-top
  if FLAGS.dataset == "vtab1k":  # the 16 datasets of VTAB-1k's 19 tasks.
    names = list(dict.fromkeys(task.tfds_name for task in vtab.TASKS.values()))
  elif FLAGS.dataset.startswith("vtab:"):
    names = [vtab.task(FLAGS.dataset.removeprefix("vtab:")).tfds_name]
  else:
    names = [canonical_name(FLAGS.dataset)]
  for name in names:
    prepare_tfds(name, default_data_dir(FLAGS.data_dir))


if __name__ == "__main__":
  common.run(main, uses_tensorflow=True)
