"""Checkpoints by name on the Hugging Face Hub: `hf-hub:ORG/NAME[@REVISION]` (any
transformers model directory or timm repository) and `timm/NAME` (timm's own repositories).
Resolved through `huggingface_hub`'s cache (`HF_HOME` / `HF_HUB_CACHE`); with
`HF_HUB_OFFLINE=1` a cached model needs no network, and one not cached is one line."""
from __future__ import annotations

import os

from vit_jax import storage
from vit_jax.errors import UserError

PREFIX = "hf-hub:"


def is_hub_name(name: str) -> bool:
  name = os.fspath(name)
  return name.startswith(PREFIX) or (name.startswith("timm/")
                                     and not storage.path(name).exists())


def _offline() -> bool:
  from huggingface_hub import constants  # pylint: disable=g-import-not-at-top
  value = os.environ.get("HF_HUB_OFFLINE")
  return constants.HF_HUB_OFFLINE if value is None else value.upper() in ("1", "ON", "YES",
                                                                           "TRUE")


def snapshot(name: str) -> str:
  """The local directory of a Hub model's weights and configs (downloaded when online)."""
  try:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
    from huggingface_hub import errors  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f"{name!r} is a Hub name; pip install huggingface_hub.") from None
  repo, _, revision = os.fspath(name).removeprefix(PREFIX).partition("@")
  offline = _offline()
  try:
    return huggingface_hub.snapshot_download(
        repo, revision=revision or None, cache_dir=os.environ.get("HF_HUB_CACHE"),
        allow_patterns=["*.json", "*.safetensors", "*.txt"], local_files_only=offline)
  except errors.LocalEntryNotFoundError:
    where = os.environ.get("HF_HUB_CACHE") or huggingface_hub.constants.HF_HUB_CACHE
    raise UserError(f"{name!r} is not in the Hub cache ({where})" + (
        " and HF_HUB_OFFLINE=1: run once online, or unset HF_HUB_OFFLINE." if offline else
        ": the Hub could not be reached.")) from None
  except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as e:
    raise UserError(f"{name!r}: no such model on the Hub ({type(e).__name__}).") from None


# Pretrained names whose architecture the readers handle (each family checked offline
# against timm / transformers on random weights, tests/test_convert.py; DINOv2's real
# weights reproduced to 1e-5): (name, family, source). `python -m vit_jax.models --list`.
KNOWN_NAMES = (
    *((f"timm/vit_{size}_patch16_224.augreg_in21k_ft_in1k", "ViT (AugReg)", "timm")
      for size in ("tiny", "small", "large")),
    ("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", "ViT (AugReg)", "timm"),
    ("timm/vit_base_patch16_224.augreg_in21k", "ViT (AugReg, ImageNet-21k)", "timm"),
    ("timm/deit3_small_patch16_224.fb_in1k", "DeiT III", "timm"),
    ("timm/deit3_base_patch16_224.fb_in22k_ft_in1k", "DeiT III", "timm"),
    ("timm/deit_base_distilled_patch16_224.fb_in1k", "DeiT (distilled)", "timm"),
    *((f"timm/vit_{size}_patch14_dinov2.lvd142m", "DINOv2", "timm")
      for size in ("small", "base", "large", "giant")),
    ("timm/vit_base_patch14_reg4_dinov2.lvd142m", "DINOv2 + registers", "timm"),
    ("timm/vit_base_patch16_siglip_224.webli", "SigLIP image tower", "timm"),
    # timm runs OpenAI's CLIP weights under these names with GELU (as this reader does);
    # QuickGELU, as they were trained: timm_model="vit_base_patch16_clip_quickgelu_224".
    *((f"timm/vit_{size}_clip_224.openai", "CLIP image tower (OpenAI)", "timm")
      for size in ("base_patch16", "large_patch14")),
    ("timm/vit_base_patch16_clip_224.laion2b", "CLIP image tower (LAION-2B)", "timm"),
    *((f"timm/vit_{size}_patch16_224.mae", "MAE encoder", "timm") for size in ("base", "large")),
    *((f"timm/vit_{size}_patch16_dinov3.lvd1689m", "DINOv3", "timm")
      for size in ("small", "small_plus", "base", "large")),
    *((f"timm/eva02_{size}_patch14_224.mim_in22k", "EVA-02", "timm")
      for size in ("tiny", "small", "base", "large")),
    ("timm/eva02_base_patch14_448.mim_in22k_ft_in22k_in1k", "EVA-02 (ImageNet fine-tuned)",
     "timm"),
    # BiT-M (ImageNet-21k) and its ImageNet-1k fine-tunes, the paper's baseline.
    *((f"timm/resnetv2_{size}_bit.goog_in21k{tag}", "BiT" + (" (ImageNet-1k fine-tuned)"
                                                           if tag else " (ImageNet-21k)"),
       "timm")
      for size in ("50x1", "50x3", "101x1", "101x3", "152x2", "152x4")
      for tag in ("", "_ft_in1k")),
    ("hf-hub:google/vit-base-patch16-224", "ViT", "transformers"),
    ("hf-hub:google/vit-base-patch16-224-in21k", "ViT (ImageNet-21k)", "transformers"),
    ("hf-hub:facebook/deit-base-distilled-patch16-224", "DeiT (distilled)", "transformers"),
    *((f"hf-hub:facebook/dinov2-{size}", "DINOv2", "transformers")
      for size in ("small", "base", "large", "giant")),
    ("hf-hub:facebook/dinov2-with-registers-base", "DINOv2 + registers", "transformers"),
    *((f"hf-hub:facebook/dinov3-vit{size}16-pretrain-lvd1689m", "DINOv3", "transformers")
      for size in ("s", "b", "l")),
    ("hf-hub:facebook/vit-mae-base", "MAE encoder", "transformers"),
    *((f"hf-hub:openai/clip-vit-{size}", "CLIP image tower (OpenAI)", "transformers")
      for size in ("base-patch16", "large-patch14")),
    ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "CLIP image tower (OpenCLIP)",
     "transformers / OpenCLIP"),
)


# The published weights a preset name loads (`load_pretrained("ViT-B_16")`,
# `--config.pretrained=ViT-B_16`): a name of KNOWN_NAMES, through the Hub cache.
PRESET_WEIGHTS = {
    "ViT-Ti_16": "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    "ViT-S_16": "timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
    "ViT-B_16": "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
    "ViT-L_16": "timm/vit_large_patch16_224.augreg_in21k_ft_in1k",
    "DeiT3-S_16": "timm/deit3_small_patch16_224.fb_in1k",
    "DeiT3-B_16": "timm/deit3_base_patch16_224.fb_in22k_ft_in1k",
    "DINOv2-S_14": "timm/vit_small_patch14_dinov2.lvd142m",
    "DINOv2-B_14": "timm/vit_base_patch14_dinov2.lvd142m",
    "DINOv2-L_14": "timm/vit_large_patch14_dinov2.lvd142m",
    "DINOv2-g_14": "timm/vit_giant_patch14_dinov2.lvd142m",
    "DINOv2-B_14-reg4": "timm/vit_base_patch14_reg4_dinov2.lvd142m",
    "SigLIP-B_16": "timm/vit_base_patch16_siglip_224.webli",
    **{f"BiT-R{size}": f"timm/resnetv2_{size}_bit.goog_in21k"
       for size in ("50x1", "50x3", "101x1", "101x3", "152x2", "152x4")},
}


def weights_of(name: str) -> str:
  """`name`, or the Hub name of a preset's published weights when `name` is a preset
  (full or short, 'ViT-B_16' / 'b16') and no file or folder of that name exists."""
  from vit_jax.models.presets import resolve_model_name  # pylint: disable=g-import-not-at-top
  name = os.fspath(name)
  if is_hub_name(name) or storage.path(name).exists():
    return name
  try:
    preset = resolve_model_name(name)
  except UserError:
    return name
  if preset not in PRESET_WEIGHTS:
    raise UserError(f"{name!r} is a model preset without published weights here; presets "
                    f"with weights: {', '.join(PRESET_WEIGHTS)} (or give a checkpoint path "
                    f"or Hub name: python -m vit_jax.models --list).")
  return PRESET_WEIGHTS[preset]
