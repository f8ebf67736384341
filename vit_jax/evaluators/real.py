"""ImageNet-ReaL top-1 ("Are we done with ImageNet?", Beyer et al. 2020): a prediction is
correct when it is any of the image's re-assessed labels; images left with no label are
not counted. The paper's second ImageNet metric.

TFDS `imagenet2012_real` holds the 50,000 validation images with `real_label`, a list of
classes; the settings below read it as such (any dataset with a multi-label feature works).
"""
from __future__ import annotations

import jax.numpy as jnp

from vit_jax.evaluators.classification import summed
from vit_jax.losses import correct_predictions
from vit_jax.models import naflex


def make_real_step(model):
  """(params, batch with multi-hot 'label' and 'mask') -> hits and counted examples."""
  def step(params, batch):
    logits = model.apply({"params": params}, naflex.model_input(batch), train=False)
    labels = batch["label"]
    counted = (jnp.sum(labels, axis=-1) > 0) * batch["mask"]
    hit = correct_predictions(logits, labels)
    return {"correct_sum": jnp.sum(hit * counted), "count": jnp.sum(counted),
            "unlabelled": jnp.sum((1 - (jnp.sum(labels, axis=-1) > 0)) * batch["mask"])}
  return step


class Evaluator:
  """Settings: dataset, split, label_key (the multi-label feature), num_classes, pp (''
  = the run's pp_eval; the labels are made multi-hot after it), batch_size (0 =
  eval_batch_size). Results: accuracy (ReaL top-1), examples (counted), unlabelled."""

  def __init__(self, context, *, dataset: str = "imagenet2012_real",
               split: str = "validation", label_key: str = "real_label",
               num_classes: int = 1000, pp: str = "", batch_size: int = 0):
    pp = f"{pp or context.config.pp_eval}|multi_hot({num_classes})"
    self.data = context.eval_data(dataset=dataset, split=split, pp=pp, batch_size=batch_size,
                                  label_key=label_key)
    self.mesh = context.built.mesh
    self.step = context.built.jit_on_params(make_real_step(context.model))

  def run(self, params) -> dict[str, float]:
    totals = summed(self.step, params, self.data, self.mesh)
    count = float(totals["count"])
    return {"accuracy": float(totals["correct_sum"]) / max(count, 1.0), "examples": count,
            "unlabelled": float(totals["unlabelled"])}
