"""The paper's figures of what the model learned, as TensorBoard images: attention rollout
over test images, position-embedding similarity, mean attention distance and the RGB
embedding filters (see `vit_jax.analysis.figures`)."""
from __future__ import annotations

import jax
import numpy as np

from vit_jax import sharding as sharding_lib


class Evaluator:
  """Settings: num_images, split ('' = test_split), pp ('' = pp_eval). Results: one image
  per figure (drawn on process 0 only)."""

  def __init__(self, context, *, num_images: int = 4, split: str = "", pp: str = ""):
    self.images = context.example_images(num_images, split=split, pp=pp)
    self.model = context.model

  def run(self, params) -> dict[str, np.ndarray]:
    params = sharding_lib.to_host(params)  # every process takes part in the gather.
    if jax.process_index() != 0:
      return {}
    from vit_jax.analysis import figures  # pylint: disable=g-import-not-at-top  (matplotlib)
    drawn = figures.make_figures(self.model, params, self.images)
    return {name: figures.figure_to_array(fig)[None] for name, fig in drawn.items()}
