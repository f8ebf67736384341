"""The ViT's parameter layout, as the family contract asks for it (`family.py`): the
published block names, scanned vs per-layer blocks, the architecture read off a
checkpoint's shapes, and fitting a checkpoint to a model (position embeddings resampled
with the model's own method)."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import numpy as np

from vit_jax.errors import UserError
from vit_jax.models import naflex
from vit_jax.models import posemb as posemb_lib
from vit_jax.models.params import fit_params

Params = Mapping[str, Any]
POS_EMBEDDING_KEY = "Transformer/posembed_input/pos_embedding"

# Current Flax auto-naming numbers modules per type; the published files number them per
# block. We keep the published (older) names in memory and on disk.
NEW_TO_OLD_BLOCK_NAMES = {
    "LayerNorm_0": "LayerNorm_0",
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}


def uses_new_block_names(flat: Mapping[str, Any]) -> bool:
  return any("/MlpBlock_0/" in key and "encoderblock" in key for key in flat)


def to_old_block_names(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Flat params with big_vision's / current Flax's block names -> the published ones."""
  renamed = {}
  for key, value in flat.items():
    parts = key.split("/")
    for i, part in enumerate(parts[:-1]):
      if part.startswith("encoderblock_") and i + 1 < len(parts):
        parts[i + 1] = NEW_TO_OLD_BLOCK_NAMES.get(parts[i + 1], parts[i + 1])
    renamed["/".join(parts)] = value
  return renamed


def is_scanned(params: Params) -> bool:
  return "encoderblock" in params.get("Transformer", {})


def unscan_params(params: Params) -> dict[str, Any]:
  """Scanned layout (Transformer/encoderblock with a leading layer axis) -> one
  Transformer/encoderblock_{i} per layer, as in the published files."""
  if not is_scanned(params):
    return dict(params)
  encoder = dict(params["Transformer"])
  stacked = encoder.pop("encoderblock")
  num_layers = jax.tree.leaves(stacked)[0].shape[0]
  for i in range(num_layers):
    encoder[f"encoderblock_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return {**params, "Transformer": encoder}


def scan_params(params: Params) -> dict[str, Any]:
  """Per-layer layout -> scanned layout (the inverse of `unscan_params`)."""
  if is_scanned(params):
    return dict(params)
  encoder = dict(params["Transformer"])
  num_layers = sum(key.startswith("encoderblock_") for key in encoder)
  blocks = [encoder.pop(f"encoderblock_{i}") for i in range(num_layers)]
  encoder["encoderblock"] = jax.tree.map(lambda *xs: np.stack(xs), *blocks)
  return {**params, "Transformer": encoder}


def per_layer_params(params: Params) -> dict[str, Any]:
  """The contract's exchange layout: per-layer blocks, published names."""
  return unscan_params(params)


def posemb_grid(params: Params, num_prefix_tokens: int | None = None) -> tuple[int, int] | None:
  """The square grid of a checkpoint's learned position embeddings (None: it has none).
  `num_prefix_tokens` defaults to the published layout's: 1 with a [class] token."""
  posemb = params.get("Transformer", {}).get("posembed_input", {}).get("pos_embedding")
  if posemb is None:
    return None
  if num_prefix_tokens is None:
    num_prefix_tokens = 1 if "cls" in params else 0
  return posemb_lib.square_grid(posemb.shape[1] - num_prefix_tokens,
                                "The checkpoint's position embedding")


def model_overrides(params: Params) -> dict[str, Any]:
  """What a checkpoint's parameter shapes say about the pooling ([class] token or average
  pooling) and the pre-logits width."""
  overrides: dict[str, Any] = {"classifier": "token" if "cls" in params else "gap"}
  if "pre_logits" in params:
    overrides["representation_size"] = params["pre_logits"]["kernel"].shape[-1]
  return overrides


def arch_from_params(params: Params) -> Optional[dict[str, Any]]:
  """The architecture of a published ViT `.npz` read off its shapes (None: not a ViT).
  The R50 hybrids need their preset's name (their ResNet's depth is not in one shape)."""
  if "conv_root" in params:
    raise UserError("A hybrid (R50+ViT) .npz needs its preset name: --model=R50+ViT-B_16.")
  if "Transformer" not in params or "embedding" not in params:
    return None
  encoder = unscan_params(params)["Transformer"]
  block = encoder["encoderblock_0"]
  query = block["MultiHeadDotProductAttention_1"]["query"]["kernel"]
  kernel = params["embedding"]["kernel"]
  return dict(family="vit", patch_size=kernel.shape[0], hidden_size=kernel.shape[-1],
              num_layers=sum(k.startswith("encoderblock_") for k in encoder),
              num_heads=query.shape[1], mlp_dim=block["MlpBlock_3"]["Dense_0"]["kernel"].shape[-1],
              **model_overrides(params))


def adapt_pretrained(restored: Params, init: Params, *, model, image_shape: tuple[int, ...],
                     reset_head: bool, notes: list[str]) -> dict[str, Any]:
  """The family contract's fine-tuning surgery: `restored` (either block layout) fitted
  to `model`'s fresh `init` params: position embeddings resampled to the model's grid
  with its own method, pre-logits dropped when the model has none, the head replaced."""
  restored = scan_params(restored) if is_scanned(init) else unscan_params(restored)
  fixed_grid = tuple(model.posemb_grid) if model.posemb_grid else None
  # NaFlex patches have no grid of their own: the fixed grid is resized per image.
  grid = (fixed_grid if naflex.is_sequence_shape(image_shape)
          else model.patch_grid(*image_shape[:2]))
  prefix = model.num_posemb_prefix_tokens

  def resize(key, value, init_value):
    if key != POS_EMBEDDING_KEY:
      return None
    target = fixed_grid or grid
    method = model.posemb_resample
    notes.append(f"resampled the position embeddings from {value.shape[1] - prefix} to "
                 f"{target[0]}x{target[1]} patches "
                 f"({method}{', antialiased' if model.posemb_antialias else ''})")
    return posemb_lib.resize_posemb(value, target_grid=target, num_prefix_tokens=prefix,
                                    method=method, antialias=model.posemb_antialias)

  adapted = fit_params(restored, init, reset_head=reset_head, notes=notes, resize=resize,
                       droppable={"pre_logits/": "dropped the pre-logits layer (the model "
                                                 "has none)"})
  if fixed_grid and fixed_grid != tuple(grid) and model.posemb == "learned":
    notes.append(f"its {fixed_grid[0]}x{fixed_grid[1]} position embeddings are resampled to "
                 f"the {grid[0]}x{grid[1]} input grid at run time ({model.posemb_resample}"
                 f"{', antialiased' if model.posemb_antialias else ''})")
  return adapted
