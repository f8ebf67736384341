r"""vit_jax's FlexiViT against big_vision's own model code (`models/proj/flexi/vit.py`:
PI-resize through TensorFlow's bilinear resize, position embeddings through
jax.image.resize), from a checkout given with --big_vision or cloned into a temporary
folder (needs the network); nothing of it is kept.

    python scripts/check_flexi_big_vision.py [--big_vision=PATH_TO_CHECKOUT]

A small FlexiViT as FlexiViT-B is built (32x32 base kernel, 7x7 learned position grid,
[class] token, 240 px inputs) with big_vision's random initialisation perturbed, read
through `vit_jax.convert` (a big_vision .npz named flexivit_*), and both models' logits
compared at every patch size of big_vision's i21k config: sequence sides 5..30 at 240 px,
patch sizes 48 down to 8. Prints the largest differences.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

from big_vision_side_by_side import _big_vision_checkout, loader_mismatches

SEQHW = (5, 6, 8, 10, 12, 15, 16, 20, 24, 30)   # big_vision configs/proj/flexivit/i21k_sup.py


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--big_vision", default=None, help="A big_vision checkout.")
  args = parser.parse_args()
  sys.path.insert(0, _big_vision_checkout(args.big_vision))
  import jax  # pylint: disable=import-outside-toplevel
  from big_vision.models.proj.flexi import vit as flexi  # pylint: disable=import-outside-toplevel
  from vit_jax import convert  # pylint: disable=import-outside-toplevel
  from vit_jax.models import create_model  # pylint: disable=import-outside-toplevel
  from vit_jax.models.params import flatten  # pylint: disable=import-outside-toplevel

  theirs = flexi.Model(num_classes=10, width=64, depth=2, num_heads=4, mlp_dim=128,
                       patch_size=(32, 32), posemb_size=(7, 7), pool_type="tok")
  images = np.random.default_rng(0).uniform(-1, 1, (2, 240, 240, 3)).astype(np.float32)
  init = theirs.init(jax.random.key(0), images[:1], seqhw=7)["params"]
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: np.asarray(x) * (1 + 0.2 * rng.standard_normal(x.shape))
                        + 0.05 * rng.standard_normal(x.shape), init)
  path = os.path.join(tempfile.mkdtemp(), "flexivit_test.npz")
  np.savez(path, **flatten(params))
  checkpoint = convert.read(path)
  arch = dict(checkpoint.arch)
  print(f"read as: {arch}; notes: {checkpoint.notes}")
  worst = 0.0
  for seqhw in SEQHW:
    patch = 240 // seqhw
    reference = np.asarray(jax.jit(lambda p, x, s=seqhw: theirs.apply(
        {"params": p}, x, seqhw=s)[0])(params, images))
    model = create_model(arch.pop("family") if "family" in arch else "vit", num_classes=10,
                         **{k: v for k, v in arch.items() if k != "family"},
                         input_patch_size=patch)
    ours = np.asarray(jax.jit(model.apply)({"params": checkpoint.params}, images))
    diff = float(np.abs(ours - reference).max())
    worst = max(worst, diff)
    print(f"patch {patch:2d} ({seqhw}x{seqhw} tokens): max |logit diff| {diff:.2e} "
          f"(logits up to {np.abs(reference).max():.2f})")
  # Written back (--to=big_vision): big_vision's FlexiViT loader reads it into its own
  # model and gets the same parameters.
  import ml_collections  # pylint: disable=import-outside-toplevel
  written = os.path.join(tempfile.mkdtemp(), "flexivit_written.npz")
  convert.write_big_vision(checkpoint, written)
  loaded = flexi.load(init, written, ml_collections.ConfigDict({"patch_size": (32, 32)}))
  worst = max(worst, loader_mismatches(flatten(params), flatten(loaded),
                                       "flexi.load reads our .npz", atol=1e-7))
  print(f"largest difference: {worst:.2e}")


if __name__ == "__main__":
  main()
