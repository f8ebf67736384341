"""What every objective provides (see the package docstring); the defaults are those of
supervised classification."""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import numpy as np

from vit_jax.errors import UserError

# Evaluators that read a classifier's logits: they need an objective that trains one.
CLASSIFIER_EVALUATORS = ("classification", "real")


class Objective:
  name = "classification"
  own_params: tuple[str, ...] = ()   # top-level parameter names that are not the backbone's.
  config_section: Optional[str] = None  # its settings' config field ('mae'), if any.
  classifies = True                  # the model ends in a class head (logits).
  description = "a class head"       # what `own_params` are, for notes.

  def __init__(self, config):
    self.config = config

  def check(self, config) -> None:
    """Before any JAX work: the objective's settings, and evaluators that need logits."""
    if self.classifies:
      return
    if config.get("max_num_patches") is not None:
      raise UserError(f"objective={self.name!r} masks and predicts patches of square images; "
                      f"max_num_patches={config.max_num_patches} (NaFlex sequences) works "
                      f"with objective='classification': leave it unset.")
    if config.get("lora") and config.lora.get("rank"):
      raise UserError(f"lora.rank={config.lora.rank}: LoRA adapts a backbone for a task; "
                      f"objective={self.name!r} pre-trains the whole model (set "
                      f"--config.lora.rank=0).")
    for name in sorted(config.evals):
      kind = dict(config.evals[name]).get("type")
      if kind in CLASSIFIER_EVALUATORS and int(dict(config.evals[name]).get("every", 0)) >= 0:
        raise UserError(
            f"evals.{name} is a {kind!r} evaluator, but objective={self.name!r} trains no "
            f"classifier: use 'reconstruction', 'knn' or 'fewshot' (or set "
            f"--config.evals.{name}.every=-1).")

  def check_model(self, model, mesh, image_shape) -> None:
    """After the model is made, before compiling (e.g. a decoder the mesh cannot split)."""

  def wrap(self, model):
    """The family's model -> the model the train step runs."""
    return model

  def backbone(self, model):
    """`wrap`'s inverse: the family's model inside the one the train step runs."""
    return model

  def batch_loss(self, model) -> Callable[..., jax.Array]:
    """(params, images, labels, rng) -> the batch's mean loss."""
    raise NotImplementedError

  def chance_loss(self, num_classes: Optional[int]) -> Optional[float]:
    """The loss of a blind guess (a loss far above it is divergence), or None."""
    return None

  # The `reconstruction` evaluator's two hooks (objectives without labels).
  def eval_losses(self, model, params, images, rng) -> dict[str, jax.Array]:
    """Per-example values (batch,) on a fixed mask `rng`: 'loss' and any other metric."""
    raise UserError(f"objective={self.name!r} has no reconstruction evaluation.")

  def figure(self, model, params, images, rng) -> Optional[np.ndarray]:
    """A (1, H, W, 3) picture of what the model does on `images`, or None."""
    return None


def check_share(field: str, value: float, meaning: str) -> None:
  """A share strictly between 0 and 1, or one line naming it and what it means."""
  if not 0 < value < 1:
    raise UserError(f"{field}={value} must be in (0, 1): {meaning}.")


def split_own(params: dict, own: tuple[str, ...]) -> tuple[dict, dict]:
  """(backbone parameters, the objective's own) of a nested parameter tree."""
  backbone = {k: v for k, v in params.items() if k not in own}
  return backbone, {k: v for k, v in params.items() if k in own}


def images01(images: jax.Array, pp: str) -> jax.Array:
  """Model inputs -> the [0, 1] pixels they were made from, by inverting `pp`'s final
  value map (value_range / normalize); without one the inputs are 0..255."""
  from vit_jax.pp import builder  # pylint: disable=g-import-not-at-top
  spec = builder.final_affine(pp)
  if spec is None:
    return images / 255.0
  affine: Any = spec.make()
  return (images - affine.offset) / (affine.scale * 255.0)


def image_grid(columns, scale: int = 0) -> np.ndarray:
  """A list of (B, H, W, C) [0, 1] batches -> one (1, B*H', len*W', 3) picture: a row per
  example, a column per batch, 2-pixel white gaps; each image scaled up to about 64 px."""
  columns = [np.asarray(c, np.float32) for c in columns]
  height = columns[0].shape[1]
  scale = scale or max(1, 64 // height)
  rows = []
  for i in range(columns[0].shape[0]):
    cells = []
    for c in columns:
      cell = c[i] if c.shape[-1] == 3 else np.repeat(c[i], 3, axis=-1)
      cell = np.kron(cell, np.ones((scale, scale, 1), np.float32))
      cells += [cell, np.ones((cell.shape[0], 2, 3), np.float32)]
    row = np.concatenate(cells[:-1], axis=1)
    rows += [row, np.ones((2, row.shape[1], 3), np.float32)]
  return np.concatenate(rows[:-1], axis=0)[None]
