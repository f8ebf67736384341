"""Named model variants: the single place where model sizes are defined (plain Python).

Names follow the published checkpoints: `ViT-{size}_{patch}` and `R50+ViT-B_16` (the
2020 ViT; AugReg checkpoints are these too), `Mixer-{size}_{patch}`, and the backbones
fine-tuned today: `DeiT3-*` (DeiT III), `DINOv2-*` (with `-reg4`: registers), `SigLIP-*`
(image towers). Ti and S come from DeiT/AugReg; g and G from "Scaling Vision
Transformers" (Zhai et al.); So400m from "Getting ViT in Shape" (Alabdulmohsin et al.).
Each preset names its family module (`vit_jax.models.<family>`) and its hyper-parameters;
`python -m vit_jax.models --list` prints them with parameter counts.
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
# ViT-digits' size as a DINOv2-style model (LayerScale, exact GELU, 4 registers, a 4x4
# learned grid resampled bicubically): the offline checkpoint round trip's model.
MODEL_PRESETS["DINOv2-digits"] = dict(family="vit", patch_size=4, hidden_size=64, num_layers=4,
                                      num_heads=4, mlp_dim=128, mlp_activation="gelu",
                                      layerscale_init=1e-5, num_registers=4,
                                      posemb_grid=(4, 4), posemb_resample="bicubic")
MODEL_PRESETS["ViT-test"] = dict(family="vit", patch_size=4, hidden_size=32, num_layers=2,
                                 num_heads=2, mlp_dim=64)

# SigLIP So400m/14 shape; also ViT-{S,B,L}_14 for patch-14 checkpoints of the plain ViT.
MODEL_PRESETS["ViT-So400m_14"] = dict(family="vit", patch_size=14, hidden_size=1152,
                                      num_layers=27, num_heads=16, mlp_dim=4304)
for _size in ("S", "B", "L"):
  MODEL_PRESETS[f"ViT-{_size}_14"] = _vit(_size, 14)

# DeiT III (Touvron et al. 2022): LayerScale, exact GELU, position embeddings on the
# patches only; ImageNet mean/std inputs at 224.
for _size in ("S", "B", "L"):
  MODEL_PRESETS[f"DeiT3-{_size}_16"] = dict(
      _vit(_size, 16), layerscale_init=1e-6, mlp_activation="gelu", posemb_prefix=False,
      posemb_resample="bicubic", posemb_antialias=True)

# DINOv2 (Oquab et al. 2023): LayerScale, exact GELU (SwiGLU for g), a 37x37 learned grid
# (518 px) resampled bicubically to the input; -reg4: four registers (Darcet et al. 2024).
_DINOV2 = {"S": (384, 12, 6, 1536, "gelu"), "B": (768, 12, 12, 3072, "gelu"),
           "L": (1024, 24, 16, 4096, "gelu"), "g": (1536, 40, 24, 4096, "swiglu")}
for _size, (_hidden, _layers, _heads, _mlp, _act) in _DINOV2.items():
  for _suffix, _registers in (("", 0), ("-reg4", 4)):
    MODEL_PRESETS[f"DINOv2-{_size}_14{_suffix}"] = dict(
        family="vit", patch_size=14, hidden_size=_hidden, num_layers=_layers,
        num_heads=_heads, mlp_dim=_mlp, mlp_activation=_act, layerscale_init=1e-5,
        num_registers=_registers, posemb_grid=(37, 37), posemb_resample="bicubic")

# SigLIP image towers (Zhai et al. 2023): no [class] token, MAP pooling, tanh GELU.
for _name, _base, _grid in (("B_16", _vit("B", 16), 14), ("L_16", _vit("L", 16), 16),
                            ("So400m_14", MODEL_PRESETS["ViT-So400m_14"], 27)):
  MODEL_PRESETS[f"SigLIP-{_name}"] = dict(_base, classifier="map", posemb_grid=(_grid, _grid))

# MLP-Mixer (Tolstikhin et al. 2021): size -> (hidden, blocks, tokens MLP, channels MLP).
_MIXER_SIZES = {"S": (512, 8, 256, 2048), "B": (768, 12, 384, 3072),
                "L": (1024, 24, 512, 4096)}
for _size, (_hidden, _blocks, _tokens, _channels) in _MIXER_SIZES.items():
  for _patch in (16, 32):
    MODEL_PRESETS[f"Mixer-{_size}_{_patch}"] = dict(
        family="mixer", patch_size=_patch, hidden_size=_hidden, num_layers=_blocks,
        tokens_mlp_dim=_tokens, channels_mlp_dim=_channels)

# BiT (Kolesnikov et al. 2020), the paper's baseline: ResNet-v2 with weight-standardised
# convolutions and GroupNorm, units per stage by depth, widths x1..x4 (vit_jax/models/bit.py).
BIT_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
for _depth, _width in ((50, 1), (50, 3), (101, 1), (101, 3), (152, 2), (152, 4)):
  MODEL_PRESETS[f"BiT-R{_depth}x{_width}"] = dict(family="bit", block_sizes=BIT_DEPTHS[_depth],
                                                  width_factor=_width)
# BiTs for CPU runs and tests: one unit per stage, 32 root channels; BiT-digits, 16 root
# channels and 8 groups, has ViT-digits' forward FLOPs on 16 px MNIST (scripts/bit_vs_vit.py).
MODEL_PRESETS["BiT-test"] = dict(family="bit", block_sizes=(1, 1, 1, 1), width_factor=0.5)
MODEL_PRESETS["BiT-digits"] = dict(family="bit", block_sizes=(1, 1, 1, 1), width_factor=0.25,
                                   norm_groups=8)

# Short names used on config command lines: `configs/finetune.py:b16,cifar10`.
SHORT_NAMES = {
    name.removeprefix("ViT-").replace("_", "").lower() if name[4] not in "gG"
    else name.removeprefix("ViT-").replace("_", ""): name
    for name in MODEL_PRESETS if name.startswith("ViT-") and "_" in name
}
SHORT_NAMES["r50b16"] = "R50+ViT-B_16"
# Other families: lower case without punctuation ('dinov2s14reg4', 'mixerb16', 'deit3s16').
SHORT_NAMES.update({name.lower().replace("-", "").replace("_", ""): name
                    for name in MODEL_PRESETS if not name.startswith(("ViT-", "R50"))})
SHORT_NAMES.update({name.lower(): name for name in MODEL_PRESETS if name.startswith("BiT-")})


def resolve_model_name(name: str) -> str:
  """Accepts a full preset name ('ViT-B_16') or a short one ('b16', 'ti16', 'g14')."""
  if name in MODEL_PRESETS:
    return name
  if name in SHORT_NAMES:
    return SHORT_NAMES[name]
  import difflib  # pylint: disable=g-import-not-at-top
  close = difflib.get_close_matches(name, [*MODEL_PRESETS, *SHORT_NAMES], n=3, cutoff=0.75)
  # Only the best matches ('ViT-digit': ViT-digits, not also BiT-digits).
  score = lambda c: difflib.SequenceMatcher(None, name, c).ratio()  # noqa: E731
  close = [c for c in close if score(c) >= score(close[0]) - 0.05] if close else close
  hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
  raise UserError(
      f"Unknown model name {name!r}.{hint} Valid names: {', '.join(sorted(MODEL_PRESETS))} "
      f"(short forms: {', '.join(sorted(SHORT_NAMES))}).")
