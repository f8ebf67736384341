"""FlexiViT training (Beyer et al. 2023; big_vision trainers/proj/flexi): one model for
every patch size. Each step cuts its images into patches of a size drawn from
`config.flexi.patch_sizes` with a generator seeded by (seed, step): every process draws
the same size, a resumed or rolled-back run the same sizes again. The model's kernel is
stored at `model.patch_size` and PI-resized to the drawn size (models/patch_embed.py);
one program is compiled per size, before the first step. Measured (BENCHMARKS.md
"FlexiViT", 2026-12-06, 2-core CPU): one ViT-digits trained on 24 px MNIST with sizes 4,
6, 8, 12 reaches 96.0-97.2% at every size; a ViT trained at one size 98%+ there and
9.7-88.0% at the others."""
from __future__ import annotations

from typing import Callable

import numpy as np

from vit_jax.errors import UserError
from vit_jax.models.patch_embed import uneven_patch_sizes


def patch_sizes(config) -> tuple[int, ...]:
  return tuple(int(s) for s in config.flexi.patch_sizes)


def check(config, model, image_shape: tuple[int, ...]) -> None:
  """Before compiling: every size cuts the training images into whole patches, the model
  is a plain ViT whose position embeddings have a grid of their own."""
  sizes = patch_sizes(config)
  if not sizes:
    return
  height, width = image_shape[:2]
  if not hasattr(model, "input_patch_size") or getattr(model, "resnet_layers", None):
    raise UserError(f"flexi.patch_sizes={sizes}: FlexiViT needs a plain ViT model "
                    f"(model_name={config.model_name!r} is not one).")
  bad = uneven_patch_sizes(sizes, height, width)
  if bad:
    divisors = [s for s in range(1, min(height, width) + 1)
                if not uneven_patch_sizes((s,), height, width)]
    raise UserError(f"flexi.patch_sizes: {bad} do not cut the {height}x{width} training "
                    f"images into whole patches; sizes that do: {divisors}.")
  weights = tuple(config.flexi.weights or ())
  if weights and (len(weights) != len(sizes) or min(weights) < 0 or not sum(weights)):
    raise UserError(f"flexi.weights={weights}: one non-negative weight per patch size "
                    f"{sizes}, not all zero (or () for uniform).")
  if model.posemb == "learned" and not model.posemb_grid:
    grid = (height // model.patch_size, width // model.patch_size)
    raise UserError(f"flexi.patch_sizes: learned position embeddings need a grid of their "
                    f"own, resampled to each size's: set --config.model.posemb_grid="
                    f"{grid[0]},{grid[1]} (FlexiViT: 7,7).")


def size_at(config, step: int) -> int:
  """The patch size of step `step` (0-based)."""
  sizes = patch_sizes(config)
  weights = np.asarray(config.flexi.weights or [1.0] * len(sizes), np.float64)
  rng = np.random.default_rng((max(int(config.seed), 0), int(step)))
  return int(rng.choice(sizes, p=weights / weights.sum()))


class Programs:
  """The compiled train step for each patch size (one program without FlexiViT)."""

  def __init__(self, config, programs: dict):
    self.config, self.programs = config, programs
    self.flexi = bool(patch_sizes(config))

  @property
  def base(self):
    """The program of the model's own patch size (or the first), for FLOP counts."""
    return next(iter(self.programs.values()))

  def at(self, step: int) -> Callable:
    return self.programs[size_at(self.config, step) if self.flexi else None]
