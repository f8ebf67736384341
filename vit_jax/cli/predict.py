r"""Top-k predictions for image files.

    python -m vit_jax.cli.predict --checkpoint=/tmp/vit_quickstart IMAGE [IMAGE ...]
    python -m vit_jax.cli.predict --checkpoint=ViT-B_16.npz --model=ViT-B_16 \
        --labels=imagenet_labels.txt photo.jpg

Images of any size and mode (RGB, grayscale, RGBA, palette, 16-bit PNG) are converted as
the model expects. An unreadable file gets one line naming it; the others still run, and
the exit status is 1 if any file could not be read.
"""
import sys

from absl import flags

from vit_jax.cli import common

flags.DEFINE_string("checkpoint", None, "Workdir of a run or an .npz file.", required=True)
flags.DEFINE_string("model", None, "Model name (needed for .npz files), e.g. ViT-B_16.")
flags.DEFINE_string("labels", None, "Text file with one label per line (class index order).")
flags.DEFINE_integer("top_k", 5, "How many classes to print per image.")
FLAGS = flags.FLAGS


def predict(loaded, paths, top_k: int) -> tuple[list[str], bool]:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vit_jax.convert import inference  # pylint: disable=g-import-not-at-top
  images, ok_paths, errors = inference.preprocess_files(paths, loaded.pp)
  lines, results = [], {}
  if ok_paths:
    logits = jax.jit(lambda p, x: loaded.model.apply({"params": p}, x))(loaded.params, images)
    probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
    for path, probs in zip(ok_paths, probabilities):
      best = np.argsort(-probs)[:top_k]
      results[path] = ", ".join(f"{loaded.label(int(i))} ({probs[i]:.3f})" for i in best)
  for path in paths:  # in the order given.
    lines.append(f"{path}: {results[path]}" if path in results else f"{path}: error: "
                 f"{errors[path]}")
  return lines, not errors


def main(argv):
  from vit_jax.convert import inference  # pylint: disable=g-import-not-at-top
  from vit_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  paths = argv[1:]
  if not paths:
    raise UserError("give at least one image file after the flags.")
  loaded = inference.load(FLAGS.checkpoint, model_name=FLAGS.model, labels_file=FLAGS.labels)
  lines, all_ok = predict(loaded, paths, FLAGS.top_k)
  print("\n".join(lines), flush=True)
  sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
  common.run(main)
