r"""The paper's figures of what a ViT learns, as PNGs.

    python -m vit_jax.cli.visualize --checkpoint=/tmp/vit_quickstart --out=/tmp/figures [IMAGE...]

Writes attention_rollout_<i>.png (one per image: where the class token looks, overlaid on
the image), position_embedding_similarity.png, mean_attention_distance.png and
embedding_filters.png. Without image files, images come from the run's test split.
"""
import sys

from absl import flags

from vit_jax.cli import common

flags.DEFINE_string("checkpoint", None, "A run's workdir, .npz, timm file or Hugging Face directory.", required=True)
flags.DEFINE_string("model", None, "Model name, only where the file cannot tell (R50 hybrid .npz).")
flags.DEFINE_string("out", None, "Directory for the PNG files.", required=True)
flags.DEFINE_integer("num_images", 4, "Test images to use when none are given.")
FLAGS = flags.FLAGS


def main(argv):
  from vit_jax.analysis import figures  # pylint: disable=g-import-not-at-top
  from vit_jax.convert import inference  # pylint: disable=g-import-not-at-top
  from vit_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  from vit_jax.pp import naflex as naflex_pp  # pylint: disable=g-import-not-at-top
  paths = argv[1:]
  loaded = inference.load(FLAGS.checkpoint, model_name=FLAGS.model)
  if naflex_pp.is_sequence(loaded.pp):
    raise UserError(f"{FLAGS.checkpoint} takes NaFlex patch sequences: its attention maps "
                    f"have no square grid to draw; use vit_jax.cli.features "
                    f"(patch_tokens with patch_coords) instead.")
  if paths:
    images, _, errors = inference.preprocess_files(paths, loaded.pp)
    for path, error in errors.items():
      print(f"{path}: error: {error}", file=sys.stderr)
  elif loaded.config is not None:
    images = _test_images(loaded.config, FLAGS.num_images)
  else:
    raise UserError("Give image files (an .npz checkpoint has no dataset to draw from).")
  if not len(images):
    raise UserError("No readable images.")
  for path in figures.write_pngs(figures.make_figures(loaded.model, loaded.params, images),
                                 FLAGS.out):
    print(path)


def _test_images(config, count: int):
  from vit_jax.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  data = pipeline.eval_dataset(sources.from_config(config), split=config.test_split,
                               global_batch_size=count, pp=config.pp_eval,
                               pp_modules=config.pp_modules)
  return next(iter(data))["image"]


if __name__ == "__main__":
  common.run(main)
