"""Models: `create_model(name, *, num_classes, **overrides)` is the one entry point."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from vit_jax.models.presets import MODEL_PRESETS, resolve_model_name
from vit_jax.models.vit import (ATTENTION_IMPLEMENTATIONS, CLASSIFIERS, REMAT_POLICIES,
                                VisionTransformer)

__all__ = ["create_model", "MODEL_PRESETS", "VisionTransformer", "resolve_model_name",
           "pixels_per_patch", "patch_grid"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _as_dtype(value, field: str):
  if isinstance(value, str):
    if value not in _DTYPES:
      raise ValueError(f"{field}={value!r} is not a dtype; use one of {list(_DTYPES)}.")
    return _DTYPES[value]
  return value


def pixels_per_patch(model: VisionTransformer) -> int:
  """Input pixels along each side of one token: the patch size, times the hybrid's 16x
  ResNet downsampling."""
  return model.patch_size * (16 if model.resnet_layers is not None else 1)


def patch_grid(model: VisionTransformer, height: int, width: int) -> tuple[int, int]:
  """The (rows, columns) token grid for images of this size."""
  return height // pixels_per_patch(model), width // pixels_per_patch(model)


def create_model(name: str, *, num_classes: int | None, **overrides) -> VisionTransformer:
  """The named ViT variant with any hyper-parameter overridden.

  >>> model = create_model("ViT-B_16", num_classes=10, dtype="bfloat16")
  """
  hparams = dict(MODEL_PRESETS[resolve_model_name(name)])
  fields = {f.name for f in dataclasses.fields(VisionTransformer)} - {"parent", "name"}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"Unknown model hyper-parameter(s) {unknown} for {name!r}; valid: "
                     f"{sorted(fields - {'num_classes'})}.")
  hparams.update(overrides)
  for field in ("dtype", "param_dtype"):
    if field in hparams:
      hparams[field] = _as_dtype(hparams[field], field)
  if hparams["hidden_size"] % hparams["num_heads"]:
    raise ValueError(f"hidden_size={hparams['hidden_size']} is not divisible by "
                     f"num_heads={hparams['num_heads']}.")
  choices = {"classifier": CLASSIFIERS, "attention_implementation": ATTENTION_IMPLEMENTATIONS,
             "remat_policy": tuple(REMAT_POLICIES)}
  for field, valid in choices.items():
    if field in hparams and hparams[field] not in valid:
      raise ValueError(f"{field}={hparams[field]!r} is not one of {list(valid)}.")
  if hparams.get("resnet_layers") is not None:
    hparams["resnet_layers"] = tuple(hparams["resnet_layers"])
  return VisionTransformer(num_classes=num_classes, **hparams)
