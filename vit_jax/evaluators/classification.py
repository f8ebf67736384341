"""Loss and top-1 accuracy over a whole split: padded batches, every example counted once."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vit_jax.data import device_feed
from vit_jax.losses import correct_predictions, loss_fn


def summed(step, params, data, mesh) -> dict:
  """step(params, batch)'s outputs, summed over every batch of `data`, on the host."""
  totals = None
  for batch in device_feed.prefetch_to_mesh(data, mesh):
    out = step(params, batch)
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  return jax.device_get(totals)


def make_eval_step(model, *, loss: str):
  """(params, batch with 'mask') -> summed loss, hits and count over the real examples."""

  def eval_step(params, batch):
    logits = model.apply({"params": params}, batch["image"], train=False)
    mask = batch["mask"]
    losses = loss_fn(logits, batch["label"], kind=loss)
    return {"loss_sum": jnp.sum(losses * mask),
            "correct_sum": jnp.sum(correct_predictions(logits, batch["label"]) * mask),
            "count": jnp.sum(mask)}

  return eval_step


class Evaluator:
  """Settings: dataset ('' = the run's), split ('' = test_split), pp ('' = pp_eval),
  batch_size (0 = eval_batch_size). Results: loss, accuracy, examples."""

  def __init__(self, context, *, dataset: str = "", split: str = "", pp: str = "",
               batch_size: int = 0):
    self.data = context.eval_data(dataset=dataset, split=split, pp=pp, batch_size=batch_size)
    self.mesh = context.built.mesh
    self.eval_step = context.built.jit_on_params(
        make_eval_step(context.model, loss=context.config.loss))

  def run(self, params) -> dict[str, float]:
    totals = summed(self.eval_step, params, self.data, self.mesh)
    count = max(float(totals["count"]), 1.0)
    return {"loss": float(totals["loss_sum"]) / count,
            "accuracy": float(totals["correct_sum"]) / count,
            "examples": float(totals["count"])}
