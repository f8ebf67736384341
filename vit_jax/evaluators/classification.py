"""Loss and top-1 accuracy over a whole split: padded batches, every example counted once."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.data import device_feed
from vit_jax.errors import UserError
from vit_jax.evaluators.common import at_patch_sizes
from vit_jax.losses import correct_predictions, loss_fn
from vit_jax.models.patch_embed import uneven_patch_sizes
from vit_jax.models import naflex


def summed(step, params, data, mesh) -> dict:
  """step(params, batch)'s outputs, summed over every batch of `data`, on the host."""
  totals = None
  for batch in device_feed.prefetch_to_mesh(data, mesh):
    out = step(params, batch)
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  return jax.device_get(totals)


def make_eval_step(model, *, loss: str, confusion: bool = False):
  """(params, batch with 'mask') -> summed loss, hits and count over the real examples
  (`confusion`: and the confusion matrix, true class x predicted class)."""

  def eval_step(params, batch):
    logits = model.apply({"params": params}, naflex.model_input(batch), train=False)
    mask = batch["mask"]
    losses = loss_fn(logits, batch["label"], kind=loss)
    out = {"loss_sum": jnp.sum(losses * mask),
           "correct_sum": jnp.sum(correct_predictions(logits, batch["label"]) * mask),
           "count": jnp.sum(mask)}
    if confusion:
      classes = logits.shape[-1]
      truth = jax.nn.one_hot(batch["label"], classes) * mask[:, None]
      predicted = jax.nn.one_hot(jnp.argmax(logits, -1), classes)
      out["confusion"] = truth.T @ predicted
    return out

  return eval_step


def confusion_image(confusion: np.ndarray, min_size: int = 256) -> np.ndarray:
  """Row-normalised confusion matrix as a (1, H, W, 3) image: white 0 to dark blue 1,
  each cell a square of pixels."""
  rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
  cell = max(1, min_size // len(rows))
  grid = np.kron(rows, np.ones((cell, cell)))
  white, blue = np.array([1.0, 1.0, 1.0]), np.array([0.03, 0.19, 0.42])
  return (white + grid[..., None] * (blue - white))[None].astype(np.float32)


class Evaluator:
  """Settings: dataset ('' = the run's), split ('' = test_split), pp ('' = pp_eval),
  batch_size (0 = eval_batch_size), per_class, patch_sizes (FlexiViT: the results at each
  of these patch sizes, as p<size>_loss and p<size>_accuracy; () the model's own).
  Results: loss, accuracy, examples (and
  skipped_examples where unreadable images left the split short; an error with the
  config's `strict_eval`); with
  `per_class`, also worst_class_accuracy, the confusion matrix as a table (written to
  `<name>_confusion.csv` in the workdir, with each class's accuracy) and as an image."""

  def __init__(self, context, *, dataset: str = "", split: str = "", pp: str = "",
               batch_size: int = 0, per_class: bool = False, patch_sizes=()):
    self.data = context.eval_data(dataset=dataset, split=split, pp=pp, batch_size=batch_size)
    self.mesh = context.built.mesh
    self.per_class = per_class
    self.label_names = getattr(context.source(dataset), "label_names", None)
    self.strict = bool(context.config.get("strict_eval", False))
    self.split = split or context.config.test_split
    side = context.built.image_shape[:2]
    uneven = uneven_patch_sizes(patch_sizes, *side)
    if uneven:
      raise UserError(f"patch_sizes: {uneven} do not cut the {side[0]}x{side[1]} eval "
                      f"images into whole patches.")
    self._at_sizes = at_patch_sizes(patch_sizes, lambda size: context.built.jit_on_params(
        make_eval_step(context.built.at_patch_size(size), loss=context.config.loss,
                       confusion=per_class)), self._run)

  def run(self, params) -> dict:
    return self._at_sizes(params)

  def _run(self, eval_step, params) -> dict:
    totals = summed(eval_step, params, self.data, self.mesh)
    count = max(float(totals["count"]), 1.0)
    results = {"loss": float(totals["loss_sum"]) / count,
               "accuracy": float(totals["correct_sum"]) / count,
               "examples": float(totals["count"])}
    expected = getattr(self.data, "num_examples", None)
    if expected is not None and totals["count"] < expected:
      missing = expected - int(round(float(totals["count"])))
      if self.strict:
        raise UserError(f"strict_eval=True: {missing} of the {expected} examples of split "
                        f"{self.split!r} are unreadable (named in the warnings above); fix "
                        f"or remove them, or set --config.strict_eval=False to evaluate "
                        f"on the rest.")
      results["skipped_examples"] = float(missing)  # said in the eval line and summary.
    if self.per_class:
      confusion = np.asarray(totals["confusion"]).round().astype(np.int64)
      present = confusion.sum(1) > 0
      accuracy = np.diag(confusion) / np.maximum(confusion.sum(1), 1)
      results["worst_class_accuracy"] = float(accuracy[present].min()) if present.any() else 0.0
      results["confusion"] = confusion                      # a table (2-D).
      results["confusion_image"] = confusion_image(confusion)  # TensorBoard.
    return results
