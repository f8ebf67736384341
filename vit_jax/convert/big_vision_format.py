"""big_vision ViT checkpoints (`.npz`; SigLIP image towers under `img/`).

big_vision's ViT is this package's ViT with the current Flax block names (LayerNorm_0/1,
MultiHeadDotProductAttention_0, MlpBlock_0), the position embedding at the root and
over the patches only, optionally scanned layers, and tanh GELU. Position embeddings are
resampled the way big_vision's `models/vit.py:load()` does (`scipy.ndimage.zoom`, order
1: linear with the corners aligned, no antialiasing).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from vit_jax.models.params import flatten, unflatten
from vit_jax.models.vit_layout import (NEW_TO_OLD_BLOCK_NAMES, posemb_grid,
                                       to_old_block_names, unscan_params)
from vit_jax.errors import UserError

_TOWER_PREFIXES = ("params/", "img/")


def strip_towers(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  for prefix in _TOWER_PREFIXES:
    if any(k.startswith(prefix) for k in flat):
      flat = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
  return flat


def is_big_vision(flat: dict[str, np.ndarray]) -> bool:
  flat = strip_towers(flat)
  return "pos_embedding" in flat or any("/MlpBlock_0/" in k and "encoderblock" in k
                                        for k in flat)


def to_params(flat: dict[str, np.ndarray], *,
              num_heads: Optional[int] = None) -> tuple[dict, dict, dict]:
  """(arch, nested params in our layout, preprocessing)."""
  flat = strip_towers(flat)
  posemb = flat.pop("pos_embedding", None)
  params = unscan_params(unflatten(flat))
  flat = flatten(params)
  flat = to_old_block_names(flat)
  if posemb is not None:
    flat["Transformer/posembed_input/pos_embedding"] = posemb
  params = unflatten(flat)
  if "embedding" not in params or "Transformer" not in params:
    raise UserError("Not a big_vision ViT checkpoint (no embedding / Transformer).")
  block = params["Transformer"]["encoderblock_0"]
  query = block["MultiHeadDotProductAttention_1"]["query"]["kernel"]
  kernel = params["embedding"]["kernel"]
  arch: dict[str, Any] = dict(
      family="vit", patch_size=kernel.shape[0], hidden_size=kernel.shape[-1],
      num_layers=sum(k.startswith("encoderblock_") for k in params["Transformer"]),
      num_heads=num_heads or query.shape[1],
      mlp_dim=block["MlpBlock_3"]["Dense_0"]["kernel"].shape[-1],
      class_token="cls" in params, posemb_prefix=False,
      posemb_resample="bilinear_align_corners", posemb_antialias=False)
  arch["classifier"] = "map" if "MAPHead_0" in params else ("token" if "cls" in params else "gap")
  if "pre_logits" in params:
    arch["representation_size"] = params["pre_logits"]["kernel"].shape[-1]
  grid = posemb_grid(params, num_prefix_tokens=0)
  if grid:
    arch["posemb_grid"] = grid
  else:
    arch["posemb"] = "sincos2d"  # big_vision's fixed alternative leaves no parameter.
  resolution = (grid[0] if grid else 14) * arch["patch_size"]
  return arch, params, {"resolution": resolution, "mean": (0.5, 0.5, 0.5),
                        "std": (0.5, 0.5, 0.5), "resize": "bilinear"}


def from_params(arch: dict, params: dict) -> dict[str, np.ndarray]:
  """Our ViT parameters -> the flat arrays big_vision's ViT (and FlexiViT) loads:
  current Flax block names, `pos_embedding` at the root. big_vision's position
  embeddings cover the patches only: a [class] token's own embedding is added to the
  token (as big_vision's fix_old_checkpoints does; the same sum enters the blocks)."""
  if arch.get("family") != "vit" or arch.get("resnet_layers") or arch.get("num_registers") \
      or arch.get("distillation_token"):
    raise UserError("--to=big_vision writes plain ViTs (no hybrid stem, registers or "
                    "distillation token): write --to=npz instead.")
  old_to_new = {old: new for new, old in NEW_TO_OLD_BLOCK_NAMES.items()}
  flat = {}
  source = flatten(unscan_params(params))
  posemb = source.pop("Transformer/posembed_input/pos_embedding", None)
  if posemb is not None:
    posemb = np.asarray(posemb)
    if arch.get("posemb_prefix", True) and "cls" in source:  # [class] covered.
      source["cls"] = np.asarray(source["cls"]) + posemb[:, :1]
      posemb = posemb[:, 1:]
    flat["pos_embedding"] = posemb
  for key, value in source.items():
    parts = key.split("/")
    for i, part in enumerate(parts[:-1]):
      if part.startswith("encoderblock_") and i + 1 < len(parts):
        parts[i + 1] = old_to_new.get(parts[i + 1], parts[i + 1])
    flat["/".join(parts)] = np.asarray(value)
  return flat
