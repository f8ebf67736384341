"""FLOP counts and accelerator peaks, for MFU (model FLOPs utilisation).

A multiply-add counts as 2 FLOPs. Training = 3 x forward (forward + 2x for the backward),
without rematerialisation, as in the MFU definition of PaLM.
"""
from __future__ import annotations

from typing import Optional

import jax

# Dense bf16 peak FLOP/s per chip (vendor datasheets; TPU per chip, GPUs SXM).
PEAK_BF16_FLOPS = {
    "TPU v3": 123e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,   # v5e reports itself as 'TPU v5 lite'.
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "A100": 312e12,
    "H100": 989e12,
    "H200": 989e12,
}


def peak_flops(device: Optional[jax.Device] = None) -> Optional[float]:
  """Peak bf16 FLOP/s of one device, or None (CPU and unknown chips: MFU shown as n/a)."""
  kind = (device or jax.devices()[0]).device_kind
  for name in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
    if name.lower() in kind.lower():
      return PEAK_BF16_FLOPS[name]
  return None


def vit_forward_flops(model, image_size: tuple[int, int]) -> float:
  """Analytical forward FLOPs per image of a plain (non-hybrid) ViT (the MAP head's
  single query is left out: under 1% of any preset)."""
  if getattr(model, "resnet_layers", "other family") is not None:
    raise ValueError("The analytical count covers plain ViTs; use xla_flops for others.")
  p, d, mlp = model.patch_size, model.hidden_size, model.mlp_dim
  patches = (image_size[0] // p) * (image_size[1] // p)
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
