r"""vit_jax's BiT against big_vision's own BiT code (`big_vision/models/bit_paper.py`, the
BiT paper's ResNet-v2), from a checkout given with --big_vision or cloned into a temporary
folder (needs the network); nothing of it is kept.

    python scripts/check_bit_big_vision.py [--big_vision=PATH_TO_CHECKOUT]

For a small BiT (one unit per stage) and BiT-R50x1, big_vision's randomly initialised
parameters (GroupNorm scales and biases randomised too) are read through
`vit_jax.convert.bit_format.from_big_vision`, and both models' logits compared at two
input sizes; then big_vision's loader of the published files
(`maybe_convert_big_transfer_format`) reads what `bit_format.to_published` writes, and
must give back the same parameters. Prints the largest differences.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from big_vision_side_by_side import _big_vision_checkout, loader_mismatches


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--big_vision", default=None, help="A big_vision checkout.")
  args = parser.parse_args()
  sys.path.insert(0, _big_vision_checkout(args.big_vision))
  import jax  # pylint: disable=import-outside-toplevel
  from big_vision.models import bit_paper  # pylint: disable=import-outside-toplevel
  from vit_jax.convert import bit_format  # pylint: disable=import-outside-toplevel
  from vit_jax.models import create_model  # pylint: disable=import-outside-toplevel
  from vit_jax.models.params import flatten  # pylint: disable=import-outside-toplevel

  worst = 0.0
  for depth, width in (((1, 1, 1, 1), 0.5), (50, 1)):
    theirs = bit_paper.Model(num_classes=10, width=width, depth=depth, head_zeroinit=False)
    init = jax.jit(theirs.init)(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: np.asarray(x) * (1 + 0.3 * rng.standard_normal(x.shape))
                          + 0.1 * rng.standard_normal(x.shape), init["params"])
    arch, ours, _ = bit_format.from_big_vision(flatten(params))
    model = create_model("bit", num_classes=10, **{k: v for k, v in arch.items()
                                                   if k != "family"})
    for size in (64, 96):
      images = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
      reference = np.asarray(jax.jit(theirs.apply)({"params": params}, images)[0])
      got = np.asarray(jax.jit(model.apply)({"params": ours}, images))
      diff = float(np.abs(got - reference).max())
      worst = max(worst, diff)
      print(f"depth {depth}, width {width}, {size} px: max |logit diff| {diff:.2e} "
            f"(logits up to {np.abs(reference).max():.2f})")
    published = bit_format.to_published(ours)
    nested = {}
    for key, value in published.items():
      node = nested
      *parents, leaf = key.split("/")
      for parent in parents:
        node = node.setdefault(parent, {})
      node[leaf] = value
    loaded = flatten(bit_paper.maybe_convert_big_transfer_format(nested))
    worst = max(worst, loader_mismatches(flatten(params), loaded,
                                         "loader reads our published layout"))
  print(f"largest difference: {worst:.2e}")


if __name__ == "__main__":
  main()
