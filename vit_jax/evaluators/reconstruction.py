"""A self-supervised run's own loss on a held-out split (`objective` 'mae': the pixel error
on the masked patches; 'masked_patch_prediction': the colour cross-entropy and accuracy),
with fixed masks (the same at every evaluation, so the curve compares like with like),
and a picture of a few examples (MAE: original / masked / reconstructed) to TensorBoard and
figures/."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import sharding as sharding_lib
from vit_jax.evaluators.classification import summed


class Evaluator:
  """Settings: split ('' = test_split), pp ('' = pp_eval), batch_size (0 =
  eval_batch_size), num_images (the picture's rows; 0: none), seed (the masks). Results:
  loss (and the objective's other metrics), reconstruction (an image)."""

  def __init__(self, context, *, split: str = "", pp: str = "", batch_size: int = 0,
               num_images: int = 8, seed: int = 0):
    self.data = context.eval_data(split=split, pp=pp, batch_size=batch_size)
    self.mesh = context.built.mesh
    self.model, self.objective = context.model, context.built.objective
    self.key = jax.random.key(seed)

    def step(params, batch):
      values = self.objective.eval_losses(self.model, params, batch["image"], self.key)
      mask = batch["mask"]
      return {**{f"{k}_sum": jnp.sum(v * mask) for k, v in values.items()},
              "count": jnp.sum(mask)}
    self.step = context.built.jit_on_params(step)
    self.images = (context.example_images(num_images, split=split, pp=pp)
                   if num_images else None)

  def run(self, params) -> dict:
    totals = summed(self.step, params, self.data, self.mesh)
    count = max(float(totals.pop("count")), 1.0)
    results = {k.removesuffix("_sum"): float(v) / count for k, v in totals.items()}
    if self.images is not None:
      host = sharding_lib.to_host(params)  # every process takes part in the gather.
      if jax.process_index() == 0:
        picture = self.objective.figure(self.model, host, jnp.asarray(self.images), self.key)
        if picture is not None:
          results["reconstruction"] = np.asarray(picture, np.float32)
    return results
