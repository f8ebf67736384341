"""Named model variants: the single place where model sizes are defined (plain Python).

Names follow the published checkpoints: `ViT-{size}_{patch}` and `R50+ViT-B_16`.
Ti and S come from DeiT/AugReg; g and G from "Scaling Vision Transformers" (Zhai et al.).
Each preset names its family module (`vit_jax.models.<family>`) and its hyper-parameters.
"""
from __future__ import annotations

from vit_jax.errors import UserError

# size -> (hidden_size, num_layers, num_heads, mlp_dim)
_SIZES = {
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
    "g": (1408, 40, 16, 6144),
    "G": (1664, 48, 16, 8192),
}
_PATCHES = {
    "Ti": (32, 16, 8), "S": (32, 16, 8), "B": (32, 16, 8), "L": (32, 16),
    "H": (14,), "g": (14,), "G": (14,),
}


def _vit(size: str, patch: int) -> dict:
  hidden, layers, heads, mlp = _SIZES[size]
  return dict(family="vit", patch_size=patch, hidden_size=hidden, num_layers=layers,
              num_heads=heads, mlp_dim=mlp)


MODEL_PRESETS: dict[str, dict] = {
    f"ViT-{size}_{patch}": _vit(size, patch)
    for size, patches in _PATCHES.items() for patch in patches
}
# Hybrid: ResNet-50 whose stage 4 is folded into stage 3 -> (3, 4, 9) units, 16x down-
# sampling, then 1x1 "patches" on the feature map.
MODEL_PRESETS["R50+ViT-B_16"] = dict(_vit("B", 1), resnet_layers=(3, 4, 9))

# Tiny models for CPU runs (quickstart on 8x8 digits, tests).
MODEL_PRESETS["ViT-digits"] = dict(family="vit", patch_size=2, hidden_size=64, num_layers=4,
                                   num_heads=4, mlp_dim=128)
MODEL_PRESETS["ViT-test"] = dict(family="vit", patch_size=4, hidden_size=32, num_layers=2,
                                 num_heads=2, mlp_dim=64)

# Short names used on config command lines: `configs/finetune.py:b16,cifar10`.
SHORT_NAMES = {
    name.removeprefix("ViT-").replace("_", "").lower() if name[4] not in "gG"
    else name.removeprefix("ViT-").replace("_", ""): name
    for name in MODEL_PRESETS if name.startswith("ViT-") and "_" in name
}
SHORT_NAMES["r50b16"] = "R50+ViT-B_16"


def resolve_model_name(name: str) -> str:
  """Accepts a full preset name ('ViT-B_16') or a short one ('b16', 'ti16', 'g14')."""
  if name in MODEL_PRESETS:
    return name
  if name in SHORT_NAMES:
    return SHORT_NAMES[name]
  raise UserError(
      f"Unknown model name {name!r}. Valid names: {', '.join(sorted(MODEL_PRESETS))} "
      f"(short forms: {', '.join(sorted(SHORT_NAMES))}).")
