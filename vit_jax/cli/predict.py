r"""Top-k predictions for image files, folders or globs, in batches.

    python -m vit_jax.cli.predict --checkpoint=/tmp/vit_quickstart IMAGE [IMAGE ...]
    python -m vit_jax.cli.predict --checkpoint=/tmp/run --output=predictions.csv \
        '/data/photos/*.jpg' /data/more_photos/      # a glob (quoted) or a folder (recursive)
    python -m vit_jax.cli.predict --checkpoint=ViT-B_16.npz \
        --labels=imagenet_labels.txt photo.jpg

Images of any size and mode (RGB, grayscale, RGBA, palette, 16-bit PNG) are converted as
the model expects and go to the device `--batch_size` at a time (a progress line per batch
when writing a file). With `--output`, a CSV: path, then top-k labels and probabilities;
without, one line per image. An unreadable file gets one line naming it; the others still
run, and the exit status is 1 if any file could not be read.
"""
import sys

from absl import flags

from vit_jax.cli import common

flags.DEFINE_string("checkpoint", None, "A run's workdir, .npz, timm file or Hugging Face directory.", required=True)
flags.DEFINE_string("model", None, "Model name, only where the file cannot tell (R50 hybrid .npz).")
flags.DEFINE_string("labels", None, "Text file with one label per line (class index order).")
flags.DEFINE_integer("top_k", 5, "How many classes to report per image.")
flags.DEFINE_integer("batch_size", 64, "Images per device batch.")
flags.DEFINE_string("output", None, "Write predictions to this CSV (local or gs://).")
common.define_max_num_patches()
FLAGS = flags.FLAGS


def predict_batches(loaded, paths, top_k: int, batch_size: int, progress: bool = False):
  """Yields (path, [(label, probability), ...] or None, error or None), in input order,
  one device batch of `batch_size` images at a time."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vit_jax.convert import inference  # pylint: disable=g-import-not-at-top
  from vit_jax.convert.classifier import Classifier  # pylint: disable=g-import-not-at-top
  forward = Classifier(loaded).forward  # a checkpoint without a head is one line here.
  for images, chunk, ok_paths, errors in inference.padded_batches(paths, loaded.pp, batch_size,
                                                                   progress=progress):
    results = {}
    if ok_paths:
      probabilities = np.asarray(forward(loaded.params, images))[:len(ok_paths)]
      for path, probs in zip(ok_paths, probabilities):
        best = np.argsort(-probs)[:top_k]
        results[path] = [(loaded.label(int(i)), float(probs[i])) for i in best]
    for path in chunk:
      yield path, results.get(path), errors.get(path)


def main(argv):
  from vit_jax import storage  # pylint: disable=g-import-not-at-top
  from vit_jax.convert import inference  # pylint: disable=g-import-not-at-top
  from vit_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  if len(argv) < 2:
    raise UserError("give at least one image file, folder or glob after the flags.")
  if FLAGS.batch_size <= 0 or FLAGS.top_k <= 0:
    raise UserError(f"--batch_size={FLAGS.batch_size} and --top_k={FLAGS.top_k} must be "
                    f"positive.")
  if FLAGS.output and storage.path(FLAGS.output).exists():
    raise UserError(f"--output={FLAGS.output} already exists; choose another name (nothing "
                    f"was overwritten).")
  paths = inference.image_paths(argv[1:])
  loaded = inference.load(FLAGS.checkpoint, model_name=FLAGS.model, labels_file=FLAGS.labels,
                          max_num_patches=FLAGS.max_num_patches)
  rows, all_ok = [], True
  header = ["path"] + [f"{kind}_{i + 1}" for i in range(FLAGS.top_k)
                       for kind in ("label", "probability")]
  for path, top, error in predict_batches(loaded, paths, FLAGS.top_k, FLAGS.batch_size,
                                          progress=bool(FLAGS.output)):
    all_ok &= error is None
    if FLAGS.output:
      rows.append([path] + ([v for label, p in top for v in (label, f"{p:.6f}")]
                            if top else [f"error: {error}"]))
    elif top:
      print(f"{path}: " + ", ".join(f"{label} ({p:.3f})" for label, p in top), flush=True)
    else:
      print(f"{path}: error: {error}", flush=True)
  if FLAGS.output:
    import csv  # pylint: disable=g-import-not-at-top
    import io  # pylint: disable=g-import-not-at-top
    text = io.StringIO()
    csv.writer(text).writerows([header] + rows)
    storage.write_text(FLAGS.output, text.getvalue())
    failed = sum(1 for r in rows if r[1].startswith("error: "))
    print(f"Wrote {FLAGS.output}: {len(rows) - failed:,} images"
          + (f", {failed} unreadable (see the file)" if failed else ""), flush=True)
  sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
  common.run(main)
