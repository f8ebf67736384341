"""OpenCLIP image towers (`visual.*` of an OpenCLIP / OpenAI CLIP state dict).

OpenCLIP's VisionTransformer is this package's ViT with a LayerNorm before the blocks
(`ln_pre`), a bias-free patch embedding (`conv1`), torch's fused attention projection
(`in_proj_weight`), LayerNorm eps 1e-5 and a bias-free projection (`proj`), which becomes
the head (bias zero). The text tower is ignored. What tensors cannot tell (heads,
QuickGELU, the preprocessing) comes from the `open_clip_config.json` the Hub ships beside
the weights; without it: 64-wide heads, GELU, CLIP's mean/std.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from vit_jax.convert import layouts
from vit_jax.convert.layouts import Rule, dense, heads, norm
from vit_jax.convert.timm_format import CLIP_MEAN, CLIP_STD
from vit_jax.errors import UserError

WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def is_openclip(state: dict) -> bool:
  return "visual.conv1.weight" in state


def infer_arch(state: dict[str, np.ndarray], config: Optional[dict] = None,
               num_heads: Optional[int] = None) -> dict[str, Any]:
  model_cfg = (config or {}).get("model_cfg") or {}
  vision = model_cfg.get("vision_cfg") or {}
  width, _, patch, _ = state["visual.conv1.weight"].shape
  layers = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
  head_width = int(vision.get("head_width", 64))
  if vision.get("attentional_pool") or vision.get("pool_type", "tok") != "tok":
    raise UserError(f"OpenCLIP vision pool_type={vision.get('pool_type')!r} / attentional "
                    f"pooling is not supported; supported: the [class] token ('tok').")
  grid = int(round(np.sqrt(state["visual.positional_embedding"].shape[0] - 1)))
  return dict(family="vit", patch_size=patch, hidden_size=width, num_layers=layers,
              num_heads=num_heads or width // head_width,
              mlp_dim=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
              mlp_activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
              layernorm_epsilon=1e-5, classifier="token", class_token=True,
              posemb_prefix=True, posemb_grid=(grid, grid), pre_norm=True, patch_bias=False,
              layerscale_init=(1e-5 if "visual.transformer.resblocks.0.ls_1.gamma" in state
                               else None),
              posemb_resample="bicubic", posemb_antialias=True)  # its resize_pos_embed.


def preprocessing(arch: dict, config: Optional[dict] = None) -> dict:
  """OpenCLIP's eval transform: the shorter side resized (bicubic), the centre cropped."""
  cfg = (config or {}).get("preprocess_cfg") or {}
  resolution = arch["posemb_grid"][0] * arch["patch_size"]
  return {"resolution": resolution, "mean": tuple(cfg.get("mean", CLIP_MEAN)),
          "std": tuple(cfg.get("std", CLIP_STD)),
          "resize": cfg.get("interpolation", "bicubic"), "resize_small": resolution}


def rules(arch: dict, *, head: bool) -> tuple[list[Rule], list[layouts.Fused]]:
  top = [("embedding/kernel", "visual.conv1.weight", "conv"),
         ("cls", "visual.class_embedding", "token"),
         ("Transformer/posembed_input/pos_embedding", "visual.positional_embedding", "table"),
         *norm("Transformer/pre_norm", "visual.ln_pre"),
         *norm("Transformer/encoder_norm", "visual.ln_post")]
  if head:
    top.append(("head/kernel", "visual.proj", "same"))  # (width, embed_dim) as ours.
  ours, theirs = "Transformer/encoderblock_{i}", "visual.transformer.resblocks.{i}"
  attention = f"{ours}/MultiHeadDotProductAttention_1"
  block = [*norm(f"{ours}/LayerNorm_0", f"{theirs}.ln_1"),
           *heads(f"{attention}/query", f"{theirs}.attn.q"),
           *heads(f"{attention}/key", f"{theirs}.attn.k"),
           *heads(f"{attention}/value", f"{theirs}.attn.v"),
           *heads(f"{attention}/out", f"{theirs}.attn.out_proj", out=True),
           *norm(f"{ours}/LayerNorm_2", f"{theirs}.ln_2"),
           *dense(f"{ours}/MlpBlock_3/Dense_0", f"{theirs}.mlp.c_fc"),
           *dense(f"{ours}/MlpBlock_3/Dense_1", f"{theirs}.mlp.c_proj")]
  if arch.get("layerscale_init") is not None:
    block += [(f"{ours}/LayerScale_attention/scale", f"{theirs}.ls_1.gamma", "same"),
              (f"{ours}/LayerScale_mlp/scale", f"{theirs}.ls_2.gamma", "same")]
  fused = [layouts.Fused(f"visual.transformer.resblocks.{i}.attn.in_proj_{p}",
                         tuple(f"visual.transformer.resblocks.{i}.attn.{n}.{p}"
                               for n in "qkv"))
           for i in range(arch["num_layers"]) for p in ("weight", "bias")]
  return [Rule(*r) for r in top] + layouts.block_rules(arch["num_layers"], block), fused


def to_params(state: dict[str, np.ndarray], config: Optional[dict] = None,
              num_heads: Optional[int] = None) -> tuple[dict, dict, dict]:
  """(arch, flat params, preprocessing) of an OpenCLIP state dict's image tower."""
  arch = infer_arch(state, config, num_heads)
  rule_list, fused = rules(arch, head="visual.proj" in state)
  flat = layouts.import_state(state, rule_list, heads=arch["num_heads"], fused=fused,
                              ignore=lambda k: not k.startswith("visual."),
                              source="OpenCLIP state dict")
  return arch, layouts.with_zero_head_bias(flat), preprocessing(arch, config)


def from_params(arch: dict, flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The `visual.*` state dict of an OpenCLIP model (load it into `model.visual` after
  stripping the prefix, or merge it into a full CLIP state dict)."""
  supported = (arch.get("pre_norm") and not arch.get("patch_bias", True)
               and layouts.has_class_token(arch) and arch.get("classifier") == "token"
               and arch.get("posemb_prefix", True) and not arch.get("num_registers")
               and not arch.get("qk_norm") and not arch.get("distillation_token")
               and arch.get("mlp_activation") in ("gelu", "quick_gelu"))
  if not supported:
    raise UserError("OpenCLIP's image tower is a pre-norm ViT with a [class] token, no "
                    "patch-embedding bias and a (Quick)GELU MLP; export this model to timm "
                    "or .npz instead.")
  flat = layouts.without_head_bias(flat, "OpenCLIP")
  rule_list, fused = rules(arch, head="head/kernel" in flat)
  return layouts.export_state(flat, rule_list, heads=arch["num_heads"], fused=fused)


def openclip_code(arch: dict, num_classes: int, weights: str) -> str:
  """One line of Python, runnable as printed, that builds OpenCLIP's image tower for
  `arch` (its projection to `num_classes` dimensions) and loads the `visual.*` weights."""
  grid = arch.get("posemb_grid") or (14, 14)
  act = ("open_clip.transformer.QuickGELU" if arch.get("mlp_activation") == "quick_gelu"
         else "torch.nn.GELU")
  return (f"import open_clip, safetensors.torch, torch; "
          f"visual = open_clip.transformer.VisionTransformer(image_size="
          f"{grid[0] * arch['patch_size']}, patch_size={arch['patch_size']}, "
          f"width={arch['hidden_size']}, layers={arch['num_layers']}, "
          f"heads={arch['num_heads']}, mlp_ratio={arch['mlp_dim'] / arch['hidden_size']}, "
          f"ls_init_value={arch.get('layerscale_init')}, output_dim={num_classes}, "
          f"act_layer={act}); visual.load_state_dict({{k.removeprefix('visual.'): v for k, v "
          f"in safetensors.torch.load_file({weights!r}).items()}})")
