r"""Features of images from any checkpoint, batched, to one .npz.

    python -m vit_jax.cli.features --checkpoint=hf-hub:facebook/dinov2-small \
        --out=features.npz --blocks=-1,-4 /data/photos/ '/data/more/*.jpg'

Writes `paths` (the readable images, in input order), `pooled` (N, D), `patch_tokens`
(N, patches, D) unless --pooled_only, and `block_<i>` (N, tokens, D) for each of --blocks
(ViT family); a NaFlex model (SigLIP 2, max_num_patches) also `patch_coords` (N, patches,
2): each patch token's (row, column), -1 on the padding. `--checkpoint` is anything vit_jax reads, by path or Hub name. Unreadable
images get one line each and are left out. Full flag list: --helpfull.
"""
import sys

from absl import flags

from vit_jax.cli import common

flags.DEFINE_string("checkpoint", None, "A run's workdir, .npz, timm file, Hugging Face "
                    "directory or Hub name.", required=True)
flags.DEFINE_string("out", None, "Output .npz (local or gs://).", required=True)
flags.DEFINE_list("blocks", [], "Blocks whose outputs to keep (negative: from the end).")
flags.DEFINE_bool("pooled_only", False, "Only the pooled features (any family).")
flags.DEFINE_integer("batch_size", 64, "Images per device batch.")
flags.DEFINE_string("model", None, "Model name, only where the file cannot tell.")
common.define_max_num_patches()
FLAGS = flags.FLAGS


def main(argv):
  import io  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vit_jax import storage  # pylint: disable=g-import-not-at-top
  from vit_jax.analysis import features  # pylint: disable=g-import-not-at-top
  from vit_jax.convert import inference  # pylint: disable=g-import-not-at-top
  from vit_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  from vit_jax.models import naflex  # pylint: disable=g-import-not-at-top
  if len(argv) < 2:
    raise UserError("give at least one image file, folder or glob after the flags.")
  if storage.path(FLAGS.out).exists():
    raise UserError(f"--out={FLAGS.out} already exists; choose another name.")
  try:
    blocks = tuple(int(b) for b in FLAGS.blocks)
  except ValueError:
    raise UserError(f"--blocks={','.join(FLAGS.blocks)}: integers, e.g. -1,-4.") from None
  paths = inference.image_paths(argv[1:])
  loaded = inference.load(FLAGS.checkpoint, model_name=FLAGS.model,
                          max_num_patches=FLAGS.max_num_patches)
  if FLAGS.pooled_only:
    run = jax.jit(lambda p, x: {"pooled": loaded.model.apply(
        {"params": p}, x, train=False, return_representation=True)})
  else:
    run = jax.jit(lambda p, x: features.extract(loaded.model, p, x, blocks=blocks))
  collected, kept, failed = {}, [], 0
  for images, _, ok_paths, errors in inference.padded_batches(paths, loaded.pp,
                                                              FLAGS.batch_size, progress=True):
    for path, error in errors.items():
      print(f"{path}: error: {error}", file=sys.stderr, flush=True)
    failed += len(errors)
    if ok_paths:
      outputs = jax.device_get(run(loaded.params, images))
      if isinstance(images, naflex.Patches):  # which tokens are the image's.
        outputs["patch_coords"] = images.coords
      for key, value in outputs.items():
        collected.setdefault(key, []).append(np.asarray(value)[:len(ok_paths)])
      kept += ok_paths
  arrays = {key: np.concatenate(values) for key, values in collected.items()}
  buffer = io.BytesIO()
  np.savez(buffer, paths=np.array(kept), **arrays)
  storage.write_bytes(FLAGS.out, buffer.getvalue())
  shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
  print(f"Wrote {FLAGS.out}: {len(kept):,} images ({shapes})"
        + (f"; {failed} unreadable" if failed else ""), flush=True)
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  common.run(main)
