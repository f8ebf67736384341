"""FLOP counts of a model's forward pass, for MFU (model FLOPs utilisation; the chips'
peaks are in `vit_jax.runtime.accelerators`).

A multiply-add counts as 2 FLOPs. Training = 3 x forward (forward + 2x for the backward),
without rematerialisation, as in the MFU definition of PaLM.
"""
from __future__ import annotations

from typing import Optional


def vit_forward_flops(model, image_size: tuple[int, int], *,
                      num_patches: Optional[int] = None) -> float:
  """Analytical forward FLOPs per image of a plain (non-hybrid) ViT (the MAP head's
  single query is left out: under 1% of any preset); `num_patches` instead of the
  image's: NaFlex sequences (padding included: it is computed)."""
  if getattr(model, "resnet_layers", "other family") is not None:
    raise ValueError("The analytical count covers plain ViTs; use xla_flops for others.")
  p, d, mlp = model.patch_size, model.hidden_size, model.mlp_dim
  patches = num_patches or (image_size[0] // p) * (image_size[1] // p)
  tokens = patches + model.num_prefix_tokens
  embed = 2 * patches * (p * p * 3) * d
  attention = 2 * tokens * d * 3 * d + 2 * 2 * tokens * tokens * d + 2 * tokens * d * d
  mlp_flops = 2 * (3 if model.mlp_activation == "swiglu" else 2) * tokens * d * mlp
  head_in = model.representation_size or d
  head = 2 * d * model.representation_size if model.representation_size else 0
  head += 2 * head_in * (model.num_classes or 0)
  return float(embed + model.num_layers * (attention + mlp_flops) + head)


def xla_flops(compiled) -> Optional[float]:
  """FLOPs of a compiled computation as XLA counts them (None if unavailable)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return float(analysis["flops"]) if analysis and "flops" in analysis else None
