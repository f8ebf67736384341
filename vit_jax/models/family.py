"""The model-family contract: what a family module provides so that the trainer, fine-
tuning, the checkpoint readers and writers and the tools take its models like any other.

A family is a module (`vit_jax.models.vit`, `vit_jax.models.mixer`, or your own
`my_pkg.my_family`, named as `config.model_name`). Required:

    def create(*, num_classes: int | None, **hparams) -> flax.linen.Module

The module's `__call__(images, *, train=False, return_representation=False)` takes NHWC
images and returns float32 logits (or the pooled features). A head named `head` (and
`head_dist`) is what fine-tuning replaces.

Optional (the defaults below serve any family whose parameters need no resampling):

    def adapt_pretrained(restored, init, *, model, image_shape, reset_head, notes) -> params
        a checkpoint's parameters fitted to `model` (e.g. position embeddings resampled);
    def arch_from_params(params) -> dict | None
        the architecture read off a published checkpoint's shapes (None: not this family);
    def per_layer_params(params) -> params
        the layout written to `.npz` and to other frameworks (e.g. scanned layers unrolled);
    NAMES: vit_jax.param_names.FamilyNames
        what its parameter names mean: the blocks (layer decay, `train_last_blocks`),
        what comes after them, LoRA's default targets (default: no blocks).

Everything else that describes a run's model (its hyper-parameters) comes from the config
and is recorded in the checkpoint, so an outside family is fine-tuned from its own run
and saved to / loaded from `.npz` with no code of ours knowing it.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Optional, Protocol, runtime_checkable

from vit_jax.models.params import fit_params
from vit_jax.param_names import FamilyNames


@runtime_checkable
class Family(Protocol):
  """A model family module (see the module docstring)."""

  def create(self, *, num_classes: Optional[int], **hparams) -> Any:
    ...


def adapt_pretrained(family: ModuleType, restored, init, *, model, image_shape,
                     reset_head: bool, notes: list[str]) -> Any:
  """The family's own surgery, or the shared one: fit by name and shape, head replaced."""
  own = getattr(family, "adapt_pretrained", None)
  if own is not None:
    return own(restored, init, model=model, image_shape=image_shape, reset_head=reset_head,
               notes=notes)
  return fit_params(restored, init, reset_head=reset_head, notes=notes)


def per_layer_params(family: ModuleType, params) -> Any:
  own = getattr(family, "per_layer_params", None)
  return dict(params) if own is None else own(params)


def arch_from_params(family: ModuleType, params) -> Optional[dict]:
  own = getattr(family, "arch_from_params", None)
  return None if own is None else own(params)


def names(family: ModuleType) -> FamilyNames:
  return getattr(family, "NAMES", None) or FamilyNames()
