"""timm's VisionTransformer (and VisionTransformerDistilled) state dicts, and its Eva
class's EVA-02 and DINOv3 (rotary embeddings; renamed to the VisionTransformer layout
first: `gamma_1` LayerScales, separate q / v biases, no key bias).

The architecture is read off the tensors (width, depth, patch, tokens, LayerScale,
qk-norm, SwiGLU, MAP pooling, fc_norm). What tensors cannot tell (attention heads, the
activation, the preprocessing) comes from the timm model name: the `--timm_model` flag,
or the `architecture` in a `config.json` beside the file, as the Hub ships it. timm
itself is not needed.
"""
from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np

from vit_jax.convert import bit_format, layouts
from vit_jax.convert.layouts import Rule, dense, heads, norm
from vit_jax.errors import UserError

# Attention heads by width, for the ViT sizes timm ships (head_dim 64 except H, g, So400m).
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1152: 16, 1280: 16, 1408: 16,
                  1536: 24, 1664: 16}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# timm model-name fragments whose pretrained config uses CLIP's or ImageNet's mean/std
# (the default for vit_* is the inception [-1, 1] range); first match wins. A Hub
# config.json's pretrained_cfg overrides all of these.
_NORMALISATION = (("eva02", (CLIP_MEAN, CLIP_STD)), ("_clip", (CLIP_MEAN, CLIP_STD)),
                  *((fragment, (IMAGENET_MEAN, IMAGENET_STD))
                    for fragment in ("dinov", "deit", "beit", "eva", "dino", "mae")))
# EVA-02 was pre-trained at 224 px: its rotary angles are rescaled onto that grid.
EVA02_PRETRAIN_SIZE = 224


# The patch budget a NaFlexViT checkpoint is read with (timm's NaFlex loaders default to
# sequences of 256 to 576 patches; SigLIP 2's processor to 256).
NAFLEX_SEQUENCE = 256


def _count(state, pattern: str) -> int:
  return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def infer_arch(state: dict[str, np.ndarray], name: Optional[str] = None,
               num_heads: Optional[int] = None) -> dict[str, Any]:
  """Our ViT hyper-parameters from a timm state dict (and the model name, if known)."""
  if "patch_embed.proj.weight" not in state:
    raise UserError("Not a timm VisionTransformer state dict (no patch_embed.proj.weight).")
  width, _, patch, _ = state["patch_embed.proj.weight"].shape
  layers = _count(state, r"blocks\.(\d+)\.")
  fc1 = state["blocks.0.mlp.fc1.weight" if "blocks.0.mlp.fc1.weight" in state
              else "blocks.0.mlp.fc1_g.weight"].shape[0]
  fc2_in = state["blocks.0.mlp.fc2.weight"].shape[1]
  swiglu = "blocks.0.mlp.fc1_g.weight" in state or fc1 == 2 * fc2_in
  name = name or ""
  # timm's ports use exact GELU; OpenAI CLIP weights under a *_quickgelu_* name were
  # trained with QuickGELU (timm also serves them under plain names, with GELU).
  act = "swiglu" if swiglu else ("quick_gelu" if "quickgelu" in name else "gelu")
  arch = dict(family="vit", patch_size=patch, hidden_size=width, num_layers=layers,
              num_heads=num_heads or HEADS_BY_WIDTH.get(width), mlp_dim=fc2_in,
              mlp_activation=act, layernorm_epsilon=1e-5 if "_clip" in name else 1e-6,
              posemb_resample="bicubic", posemb_antialias=True)
  if arch["num_heads"] is None:
    raise UserError(f"Cannot tell the attention heads of a width-{width} timm model; pass "
                    f"--num_heads.")
  has_cls = "cls_token" in state
  arch["class_token"] = has_cls
  arch["distillation_token"] = "dist_token" in state
  arch["num_registers"] = state["reg_token"].shape[1] if "reg_token" in state else 0
  arch["layerscale_init"] = 1e-5 if "blocks.0.ls1.gamma" in state else None
  arch["qk_norm"] = "blocks.0.attn.q_norm.weight" in state
  arch["fc_norm"] = "fc_norm.weight" in state
  arch["mlp_norm"] = "blocks.0.mlp.norm.weight" in state
  arch["pre_norm"] = "norm_pre.weight" in state  # CLIP towers: and no patch bias.
  arch["patch_bias"] = "patch_embed.proj.bias" in state
  if "dinov3" in name:  # timm pools DINOv3 by averaging (upstream: the [class] token).
    arch.update(rope="dinov3", layernorm_epsilon=1e-5)
  elif "eva02" in name:
    side = EVA02_PRETRAIN_SIZE // patch
    arch.update(rope="eva", rope_grid=(side, side))
  if "attn_pool.latent" in state:
    arch["classifier"] = "map"
    # timm's attention pooling reads the patches only (pool_include_prefix=False).
    arch["map_pool_prefix"] = False
  elif (arch["fc_norm"] or not has_cls or "gap" in name or "avg" in name
        or "dinov3" in name):
    arch["classifier"] = "gap"
  else:
    arch["classifier"] = "token"
  if "pos_embed" in state:
    positions = state["pos_embed"].shape[1]
    prefix = int(has_cls) + int(arch["distillation_token"])
    side = int(round(np.sqrt(positions)))
    arch["posemb_prefix"] = side * side != positions
    grid = positions - (prefix if arch["posemb_prefix"] else 0)
    side = int(round(np.sqrt(grid)))
    if side * side != grid:
      raise UserError(f"pos_embed has {positions} positions: not a square grid plus "
                      f"{prefix} prefix token(s).")
    arch["posemb_grid"] = (side, side)
  else:
    arch["posemb"] = "none"
  return arch


def preprocessing(arch: dict, name: Optional[str] = None) -> dict:
  mean, std = next((stats for fragment, stats in _NORMALISATION if fragment in (name or "")),
                   (INCEPTION_MEAN, INCEPTION_STD))
  grid = arch.get("posemb_grid") or (14, 14)
  return {"resolution": grid[0] * arch["patch_size"], "mean": mean, "std": std,
          "resize": "bicubic"}


def _block(arch: dict) -> list[tuple[str, str, str]]:
  ours, theirs = "Transformer/encoderblock_{i}", "blocks.{i}"
  attention = f"{ours}/MultiHeadDotProductAttention_1"
  rules = [*norm(f"{ours}/LayerNorm_0", f"{theirs}.norm1"),
           *heads(f"{attention}/query", f"{theirs}.attn.q"),
           *heads(f"{attention}/key", f"{theirs}.attn.k"),
           *heads(f"{attention}/value", f"{theirs}.attn.v"),
           *heads(f"{attention}/out", f"{theirs}.attn.proj", out=True),
           *norm(f"{ours}/LayerNorm_2", f"{theirs}.norm2"),
           *dense(f"{ours}/MlpBlock_3/Dense_0", f"{theirs}.mlp.fc1"),
           *dense(f"{ours}/MlpBlock_3/Dense_1", f"{theirs}.mlp.fc2")]
  if arch.get("mlp_norm"):
    rules += norm(f"{ours}/MlpBlock_3/norm", f"{theirs}.mlp.norm")
  if arch.get("qk_norm"):
    rules += [*norm(f"{attention}/query_norm", f"{theirs}.attn.q_norm"),
              *norm(f"{attention}/key_norm", f"{theirs}.attn.k_norm")]
  if arch.get("layerscale_init") is not None:
    rules += [(f"{ours}/LayerScale_attention/scale", f"{theirs}.ls1.gamma", "same"),
              (f"{ours}/LayerScale_mlp/scale", f"{theirs}.ls2.gamma", "same")]
  return rules


def rules(arch: dict, *, head: bool, head_dist: bool = False) -> tuple[list[Rule], list[layouts.Fused]]:
  top = [("embedding/kernel", "patch_embed.proj.weight", "conv")]
  if arch.get("patch_bias", True):
    top.append(("embedding/bias", "patch_embed.proj.bias", "same"))
  if arch.get("pre_norm"):
    top += norm("Transformer/pre_norm", "norm_pre")
  if layouts.has_class_token(arch):
    top.append(("cls", "cls_token", "same"))
  if arch.get("distillation_token"):
    top.append(("dist", "dist_token", "same"))
  if arch.get("num_registers"):
    top.append(("registers", "reg_token", "same"))
  if arch.get("posemb", "learned") == "learned":
    top.append(("Transformer/posembed_input/pos_embedding", "pos_embed", "same"))
  top += norm("fc_norm" if arch.get("fc_norm") else "Transformer/encoder_norm",
              "fc_norm" if arch.get("fc_norm") else "norm")
  if arch.get("classifier") == "map":
    attention = "MAPHead_0/MultiHeadDotProductAttention_0"
    top += [("MAPHead_0/probe", "attn_pool.latent", "same"),
            *heads(f"{attention}/query", "attn_pool.q"),
            *heads(f"{attention}/key", "attn_pool.k"),
            *heads(f"{attention}/value", "attn_pool.v"),
            *heads(f"{attention}/out", "attn_pool.proj", out=True),
            *norm("MAPHead_0/LayerNorm_0", "attn_pool.norm"),
            *dense("MAPHead_0/MlpBlock_0/Dense_0", "attn_pool.mlp.fc1"),
            *dense("MAPHead_0/MlpBlock_0/Dense_1", "attn_pool.mlp.fc2")]
  if head:
    top += dense("head", "head")
  if head_dist:
    top += dense("head_dist", "head_dist")
  all_rules = [Rule(*r) for r in top] + layouts.block_rules(arch["num_layers"], _block(arch))
  fused = [layouts.Fused(f"blocks.{i}.attn.qkv.{p}", tuple(f"blocks.{i}.attn.{n}.{p}"
                                                           for n in "qkv"))
           for i in range(arch["num_layers"]) for p in ("weight", "bias")]
  fused += [layouts.Fused(f"attn_pool.kv.{p}", (f"attn_pool.k.{p}", f"attn_pool.v.{p}"))
            for p in ("weight", "bias")]
  return all_rules, fused


def _unpack_swiglu(state: dict) -> dict:
  """timm's unpacked SwiGLU (fc1_g gates, fc1_x values) -> the packed [gate, value] fc1."""
  state = dict(state)
  for key in [k for k in state if k.endswith(".mlp.fc1_g.weight") or k.endswith(".mlp.fc1_g.bias")]:
    other = key.replace("fc1_g", "fc1_x")
    state[key.replace("fc1_g", "fc1")] = np.concatenate([state.pop(key), state.pop(other)])
  return state


_EVA_BLOCK = re.compile(r"^blocks\.\d+\.(gamma_[12]|attn\.(q_bias|v_bias|q_proj\.weight))$")


def is_eva(state: dict) -> bool:
  """timm's Eva class (EVA-02, DINOv3) rather than its VisionTransformer."""
  return any(_EVA_BLOCK.match(k) for k in state)


def _from_eva(state: dict) -> dict:
  """An Eva state dict in VisionTransformer's names: LayerScale `gamma_i` -> `lsi.gamma`,
  separate q/k/v projections or a bias-free qkv with `q_bias` / `v_bias` -> one qkv with
  a bias (the key's zero: a key bias shifts every logit of a query equally, so softmax
  ignores it)."""
  out = {}
  for key, value in state.items():
    key = re.sub(r"\.gamma_([12])$", r".ls\1.gamma", key)
    key = re.sub(r"\.attn\.([qkv])_proj\.", r".attn.\1.", key)
    out[key] = value
  for prefix in sorted({k.rsplit(".attn.", 1)[0] for k in out if ".attn." in k}):
    attn = f"{prefix}.attn"
    fused = f"{attn}.qkv.weight" in out
    width = (out[f"{attn}.qkv.weight"].shape[0] // 3 if fused
             else out[f"{attn}.q.weight"].shape[0])
    biases = [out.pop(f"{attn}.{n}_bias", None) if fused else out.pop(f"{attn}.{n}.bias", None)
              for n in "qkv"]
    biases = [np.zeros(width, np.float32) if b is None else b for b in biases]
    if fused:
      out[f"{attn}.qkv.bias"] = np.concatenate(biases)
    else:
      for n, bias in zip("qkv", biases):
        out[f"{attn}.{n}.bias"] = bias
  return out


def _to_eva(state: dict, arch: dict) -> dict:
  """VisionTransformer names -> Eva's (the inverse of `_from_eva`): q / v biases, the
  key's dropped (exact, see above); with the MLP sub-LN, SwiGLU's separate fc1_g / fc1_x."""
  out = {}
  for key, value in state.items():
    key = re.sub(r"\.ls([12])\.gamma$", r".gamma_\1", key)
    if key.endswith(".attn.qkv.bias"):
      q, _, v = np.split(value, 3)
      out[key.replace("qkv.bias", "q_bias")], out[key.replace("qkv.bias", "v_bias")] = q, v
      continue
    if arch.get("mlp_norm") and re.search(r"\.mlp\.fc1\.(weight|bias)$", key):
      gate, x = np.split(value, 2)
      out[key.replace("fc1", "fc1_g")], out[key.replace("fc1", "fc1_x")] = gate, x
      continue
    out[key] = value
  return out


def _head_size(state: dict, key: str) -> bool:
  return key in state and state[key].size > 0


def is_naflex(state: dict) -> bool:
  """timm's NaFlexViT (its embeddings under `embeds.`, a 2-D position grid)."""
  return "embeds.pos_embed" in state or "embeds.proj.weight" in state


def _from_naflex(state: dict) -> tuple[dict, tuple[int, int] | None]:
  """A NaFlexViT state dict in VisionTransformer's names (its blocks and heads are
  VisionTransformer's): the patch Linear as the convolution, the (1, h, w, D) grid
  flattened; and the grid's shape."""
  out, grid = {}, None
  for key, value in state.items():
    if key == "embeds.proj.weight" and value.ndim == 2:
      value = layouts.patches_to_conv(value)
    if key == "embeds.pos_embed":
      grid = tuple(value.shape[1:3])
      value = value.reshape(1, -1, value.shape[-1])
    moved = "patch_embed." if key.startswith("embeds.proj.") else ""
    out[moved + key.removeprefix("embeds.")] = value
  return out, grid


def to_params(state: dict[str, np.ndarray], *, name: Optional[str] = None,
              num_heads: Optional[int] = None) -> tuple[dict, dict, dict]:
  """(arch, flat params, preprocessing) of a timm ViT state dict."""
  naflex_grid = None
  if is_naflex(state):
    state, naflex_grid = _from_naflex(state)
  if is_eva(state):
    if not any(kind in (name or "") for kind in ("eva02", "dinov3")):
      raise UserError(f"A timm Eva state dict (EVA-02 / DINOv3: rotary embeddings) needs its "
                      f"model name to tell which; got {name!r}. Pass --timm_model, e.g. "
                      f"vit_small_patch16_dinov3 or eva02_tiny_patch14_224.")
    state = _from_eva(state)
  state = _unpack_swiglu(state)
  arch = infer_arch(state, name, num_heads)
  rule_list, fused = rules(arch, head=_head_size(state, "head.weight"),
                           head_dist=_head_size(state, "head_dist.weight"))
  flat = layouts.import_state(state, rule_list, heads=arch["num_heads"], fused=fused,
                              source="timm state dict")
  record = preprocessing(arch, name)
  if naflex_grid is not None:  # NaFlex inputs: timm's default sequence of 256 patches.
    arch.update(posemb_grid=naflex_grid, posemb_prefix=False)
    record.update(max_num_patches=NAFLEX_SEQUENCE, patch_size=arch["patch_size"],
                  resize="bilinear")
  return arch, flat, record


def timm_compatible(arch: dict, flat: dict[str, np.ndarray]) -> tuple[dict, dict]:
  """timm's position embeddings cover all prefix tokens (registers too) or none: a model
  whose embeddings cover the [class] token but not the registers (DINOv2-reg as
  published) gets the [class] embedding folded into the token itself, which computes
  exactly the same function."""
  key = "Transformer/posembed_input/pos_embedding"
  if not (arch.get("num_registers") and arch.get("posemb_prefix", True) and key in flat):
    return arch, flat
  flat = dict(flat)
  tokens = [name for name in ("cls", "dist") if name in flat]
  for i, name in enumerate(tokens):
    flat[name] = flat[name] + flat[key][:, i:i + 1]
  flat[key] = flat[key][:, len(tokens):]
  return {**arch, "posemb_prefix": False}, flat


def from_params(arch: dict, flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A timm state dict (for timm.create_model(..., pretrained_cfg_overlay=dict(file=...)))
  of our params."""
  if str(arch.get("posemb")).startswith("sincos2d") or arch.get("representation_size"):
    raise UserError("timm's VisionTransformer has no sincos2d position embeddings or "
                    "pre-logits layer; export this model to .npz instead.")
  if arch.get("pre_norm", False) == arch.get("patch_bias", True):
    raise UserError("timm's VisionTransformer has a patch-embedding bias exactly when it "
                    "has no pre-norm (pre_norm=True: CLIP, no bias); export this model to "
                    ".npz instead.")
  rule_list, fused = rules(arch, head="head/kernel" in flat, head_dist="head_dist/kernel" in flat)
  state = layouts.export_state(flat, rule_list, heads=arch["num_heads"], fused=fused)
  return _to_eva(state, arch) if arch.get("rope", "none") != "none" else state


def timm_class(arch: dict) -> str:
  """The timm class that builds this arch from `timm_kwargs`: rotary models are Eva's."""
  return "timm.models.eva.Eva" if arch.get("rope", "none") != "none" else (
      "timm.models.vision_transformer.VisionTransformer")


def _eva_kwargs(arch: dict, num_classes: int) -> dict[str, Any]:
  grid = arch.get("posemb_grid") or (14, 14)
  swiglu = arch.get("mlp_activation") == "swiglu"
  if arch.get("mlp_activation") not in ("gelu", "swiglu") or arch.get("pre_norm") or (
      arch.get("distillation_token") or arch.get("classifier") == "map"):
    raise UserError("timm's Eva has exact GELU or SwiGLU MLPs, no pre-norm, distillation "
                    "token or MAP head; export this model to .npz instead.")
  return dict(img_size=grid[0] * arch["patch_size"], patch_size=arch["patch_size"],
              embed_dim=arch["hidden_size"], depth=arch["num_layers"],
              num_heads=arch["num_heads"], num_classes=num_classes,
              # Eva takes int(width * mlp_ratio): half a unit above keeps it exact.
              mlp_ratio=(arch["mlp_dim"] + 0.5) / arch["hidden_size"], swiglu_mlp=swiglu,
              scale_mlp=arch.get("mlp_norm", False), qk_norm=arch.get("qk_norm", False),
              init_values=arch.get("layerscale_init"),
              class_token=layouts.has_class_token(arch),
              num_reg_tokens=arch.get("num_registers", 0),
              use_abs_pos_emb=arch.get("posemb", "learned") == "learned",
              no_embed_class=not arch.get("posemb_prefix", True), use_rot_pos_emb=True,
              rope_type="cat" if arch["rope"] == "eva" else "dinov3",
              rope_rotate_half=arch["rope"] == "dinov3",
              rope_temperature=arch.get("rope_temperature") or (
                  10_000.0 if arch["rope"] == "eva" else 100.0),
              ref_feat_shape=tuple(arch["rope_grid"]) if arch.get("rope_grid") else None,
              global_pool={"token": "token", "gap": "avg"}[arch.get("classifier", "token")],
              use_fc_norm=arch.get("fc_norm", False), dynamic_img_size=True)


def timm_kwargs(arch: dict, num_classes: int) -> dict[str, Any]:
  """`timm_class(arch)(**kwargs)` for our arch: VisionTransformer, or Eva for rotary
  embeddings."""
  if arch.get("rope", "none") != "none":
    return _eva_kwargs(arch, num_classes)
  grid = arch.get("posemb_grid") or (14, 14)
  kwargs = dict(img_size=grid[0] * arch["patch_size"], patch_size=arch["patch_size"],
                embed_dim=arch["hidden_size"], depth=arch["num_layers"],
                num_heads=arch["num_heads"], mlp_ratio=arch["mlp_dim"] / arch["hidden_size"],
                num_classes=num_classes, class_token=layouts.has_class_token(arch),
                reg_tokens=arch.get("num_registers", 0),
                no_embed_class=not arch.get("posemb_prefix", True),
                init_values=arch.get("layerscale_init"), qk_norm=arch.get("qk_norm", False),
                fc_norm=arch.get("fc_norm", False),
                global_pool={"token": "token", "gap": "avg", "map": "map"}[
                    arch.get("classifier", "token")],
                pos_embed="learn" if arch.get("posemb", "learned") == "learned" else "none",
                pre_norm=arch.get("pre_norm", False), dynamic_img_size=True)
  if arch.get("classifier") == "map" and arch.get("map_pool_prefix", True):
    kwargs["pool_include_prefix"] = True  # ours, as big_vision's, reads the prefix too.
  if arch.get("mlp_activation") == "swiglu":  # caller adds mlp_layer=SwiGLUPacked.
    kwargs.update(mlp_ratio=2 * kwargs["mlp_ratio"], act_layer="silu")
  else:
    kwargs["act_layer"] = {"gelu_tanh": "gelu_tanh", "quick_gelu": "quick_gelu"}.get(
        arch.get("mlp_activation", "gelu_tanh"), "gelu")  # unset: the model default, tanh.
  return kwargs


def timm_code(arch: dict, kwargs: dict[str, Any], weights: str) -> str:
  """One line of Python, runnable as printed, that builds the timm model of `arch` from
  `kwargs` (timm_kwargs) and loads the state dict written to `weights`."""
  if arch.get("family") == "bit":
    return bit_format.timm_code(arch, kwargs["num_classes"], weights)
  extra = ""
  eps = norm_epsilon(arch)
  if eps != 1e-6:
    extra += f", norm_layer=functools.partial(torch.nn.LayerNorm, eps={eps})"
  if arch.get("mlp_activation") == "swiglu" and arch.get("rope", "none") == "none":
    extra += ", mlp_layer=timm.layers.SwiGLUPacked"
  return (f"import functools, safetensors.torch, timm, torch; "
          f"model = {timm_class(arch)}(**{kwargs!r}{extra}); "
          f"model.load_state_dict(safetensors.torch.load_file({weights!r}))")


def norm_epsilon(arch: dict) -> float:
  """The LayerNorm epsilon, which timm takes as `norm_layer=partial(nn.LayerNorm, eps=...)`
  (a callable, so not among the kwargs): timm's default is 1e-6, CLIP's 1e-5."""
  return arch.get("layernorm_epsilon", 1e-6)
