"""Hugging Face `transformers` vision models: ViT, DeiT, DINOv2 (with registers), DINOv3
(hf_dinov3_format), MAE's encoder and the SigLIP, SigLIP 2 (NaFlex) and CLIP vision
towers, as a model
directory (config.json + model.safetensors or
pytorch_model.bin, optionally preprocessor_config.json).

The architecture and preprocessing come from the JSON files; transformers itself is not
needed.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from vit_jax.convert import hf_dinov3_format, hf_mae_format, layouts
from vit_jax.convert.layouts import Rule, dense, heads, norm
from vit_jax.convert.timm_format import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD,
                                         INCEPTION_MEAN, INCEPTION_STD)
from vit_jax.errors import UserError

MODEL_TYPES = ("vit", "deit", "dinov2", "dinov2_with_registers", hf_dinov3_format.KIND,
               "vit_mae", "siglip_vision_model", "siglip2_vision_model", "clip_vision_model")
# Full image-text models: their vision tower is read, the text tower ignored.
_TOWERS = {"siglip": "siglip_vision_model", "siglip2": "siglip2_vision_model",
           "clip": "clip_vision_model"}
# SigLIP's tower and SigLIP 2's NaFlex tower: the same blocks and MAP head.
_SIGLIPS = ("siglip_vision_model", "siglip2_vision_model")
_SIGLIP2_PATCHES = "embeddings.patch_embedding.weight"
# Activation names in HF configs -> ours.
_ACTIVATIONS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
                "gelu_fast": "gelu_tanh", "quick_gelu": "quick_gelu"}
_DEFAULT_NORMALISATION = {"vit": (INCEPTION_MEAN, INCEPTION_STD),
                          "siglip_vision_model": (INCEPTION_MEAN, INCEPTION_STD),
                          "siglip2_vision_model": (INCEPTION_MEAN, INCEPTION_STD),
                          "deit": (IMAGENET_MEAN, IMAGENET_STD),
                          "dinov2": (IMAGENET_MEAN, IMAGENET_STD),
                          "dinov2_with_registers": (IMAGENET_MEAN, IMAGENET_STD),
                          "vit_mae": (IMAGENET_MEAN, IMAGENET_STD),
                          hf_dinov3_format.KIND: (IMAGENET_MEAN, IMAGENET_STD),
                          "clip_vision_model": (CLIP_MEAN, CLIP_STD)}
_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


def vision_config(config: dict) -> dict:
  """The vision part of a config.json (a full SigLIP / CLIP model nests it)."""
  if config.get("model_type") in _TOWERS:
    return {**config["vision_config"], "model_type": _TOWERS[config["model_type"]]}
  if config.get("model_type") not in MODEL_TYPES:
    raise UserError(f"Hugging Face model_type {config.get('model_type')!r} is not supported; "
                    f"supported: {', '.join(MODEL_TYPES)}, {', '.join(_TOWERS)}.")
  return config


def _grid_side(config: dict) -> int:
  """The position grid's side: image_size / patch_size, or SigLIP 2's sqrt(num_patches)."""
  if config["model_type"] == "siglip2_vision_model":
    return math.isqrt(config.get("num_patches", 256))
  return config["image_size"] // config["patch_size"]


def arch_of(config: dict) -> dict[str, Any]:
  kind = config["model_type"]
  width, grid = config["hidden_size"], _grid_side(config)
  act = config.get("hidden_act", "gelu")
  if act not in _ACTIVATIONS:
    raise UserError(f"hidden_act={act!r} is not supported; supported: {sorted(_ACTIVATIONS)}.")
  mlp_dim = config.get("intermediate_size") or int(width * config.get("mlp_ratio", 4))
  arch = dict(family="vit", patch_size=config["patch_size"], hidden_size=width,
              num_layers=config["num_hidden_layers"], num_heads=config["num_attention_heads"],
              mlp_dim=mlp_dim, mlp_activation=_ACTIVATIONS[act],
              layernorm_epsilon=config.get("layer_norm_eps", 1e-12), posemb_grid=(grid, grid),
              posemb_resample="bicubic", posemb_antialias=False)
  if kind in _SIGLIPS:
    arch.update(classifier="map" if config.get("vision_use_head", True) else "gap",
                class_token=False, posemb_prefix=False)
    if kind == "siglip2_vision_model":  # the grid resized per image (NaFlex), antialiased.
      arch.update(posemb_resample="bilinear", posemb_antialias=True)
  elif kind == "clip_vision_model":  # pre-norm, a bias-free patch embedding.
    arch.update(classifier="token", class_token=True, posemb_prefix=True, pre_norm=True,
                patch_bias=False)
  else:
    arch.update(classifier="token", class_token=True, posemb_prefix=True)
  if kind == "deit":
    arch["distillation_token"] = True
  if kind.startswith("dinov2"):
    arch["layerscale_init"] = config.get("layerscale_value", 1.0)
    if config.get("use_swiglu_ffn"):
      hidden = int(width * config.get("mlp_ratio", 4))
      arch.update(mlp_activation="swiglu", mlp_dim=_swiglu_width(hidden))
    arch["num_registers"] = config.get("num_register_tokens", 0)
  return arch


def preprocessing(config: dict, processor: Optional[dict]) -> dict:
  mean, std = _DEFAULT_NORMALISATION[config["model_type"]]
  if config["model_type"] == "siglip2_vision_model":  # NaFlex: a patch budget, no size.
    processor = processor or {}
    patch = config["patch_size"]
    return {"resolution": _grid_side(config) * patch,
            "mean": tuple(processor.get("image_mean", mean)),
            "std": tuple(processor.get("image_std", std)),
            "resize": _PIL_RESAMPLE.get(processor.get("resample"), "bilinear"),
            "max_num_patches": int(processor.get("max_num_patches",
                                                 config.get("num_patches", 256))),
            "patch_size": int(processor.get("patch_size", patch))}
  resolution, resize, shorter = config["image_size"], "bilinear", None
  if processor:
    mean, std = processor.get("image_mean", mean), processor.get("image_std", std)
    crop = processor.get("crop_size") if processor.get("do_center_crop") else None
    size = crop or processor.get("size") or {}
    resolution = size.get("height", size.get("shortest_edge", resolution))
    resize = _PIL_RESAMPLE.get(processor.get("resample"), "bilinear")
    if crop and (processor.get("size") or {}).get("shortest_edge"):
      shorter = int(processor["size"]["shortest_edge"])  # resize the shorter side, crop.
  # A size the patches do not divide (SigLIP So400m/14 at 384: 27 patches of 14 cover
  # 378 px, the last 6 are cut by the convolution) becomes the size they cover.
  patch = config["patch_size"]
  record = {"resolution": int(resolution) // patch * patch, "mean": tuple(mean),
            "std": tuple(std), "resize": resize}
  return {**record, "resize_small": shorter} if shorter else record


def _prefix(kind: str, state: dict) -> str:
  candidates = {"vit": ("vit.", ""), "deit": ("deit.", ""), "dinov2": ("dinov2.", ""),
                "dinov2_with_registers": ("dinov2_with_registers.", ""),
                "vit_mae": ("vit.", ""), "siglip_vision_model": ("vision_model.", ""),
                "siglip2_vision_model": ("vision_model.", ""),
                "clip_vision_model": ("vision_model.", "")}[kind]
  for prefix in candidates:
    if any(key.startswith(prefix + "encoder.") for key in state):
      return prefix
  raise UserError(f"No {kind} encoder weights found (expected keys like "
                  f"'{candidates[0]}encoder.layer.0...').")


def _block(arch: dict, kind: str, p: str) -> list[tuple[str, str, str]]:
  ours = "Transformer/encoderblock_{i}"
  attention = f"{ours}/MultiHeadDotProductAttention_1"
  mlp = f"{ours}/MlpBlock_3"
  if kind in (*_SIGLIPS, "clip_vision_model"):
    theirs = p + "encoder.layers.{i}"
    return [*norm(f"{ours}/LayerNorm_0", f"{theirs}.layer_norm1"),
            *heads(f"{attention}/query", f"{theirs}.self_attn.q_proj"),
            *heads(f"{attention}/key", f"{theirs}.self_attn.k_proj"),
            *heads(f"{attention}/value", f"{theirs}.self_attn.v_proj"),
            *heads(f"{attention}/out", f"{theirs}.self_attn.out_proj", out=True),
            *norm(f"{ours}/LayerNorm_2", f"{theirs}.layer_norm2"),
            *dense(f"{mlp}/Dense_0", f"{theirs}.mlp.fc1"),
            *dense(f"{mlp}/Dense_1", f"{theirs}.mlp.fc2")]
  theirs = p + "encoder.layer.{i}"
  rules = [*heads(f"{attention}/query", f"{theirs}.attention.attention.query"),
           *heads(f"{attention}/key", f"{theirs}.attention.attention.key"),
           *heads(f"{attention}/value", f"{theirs}.attention.attention.value"),
           *heads(f"{attention}/out", f"{theirs}.attention.output.dense", out=True)]
  if kind.startswith("dinov2"):
    swiglu = arch["mlp_activation"] == "swiglu"
    fc1, fc2 = ("weights_in", "weights_out") if swiglu else ("fc1", "fc2")
    return rules + [*norm(f"{ours}/LayerNorm_0", f"{theirs}.norm1"),
                    *norm(f"{ours}/LayerNorm_2", f"{theirs}.norm2"),
                    *dense(f"{mlp}/Dense_0", f"{theirs}.mlp.{fc1}"),
                    *dense(f"{mlp}/Dense_1", f"{theirs}.mlp.{fc2}"),
                    (f"{ours}/LayerScale_attention/scale", f"{theirs}.layer_scale1.lambda1", "same"),
                    (f"{ours}/LayerScale_mlp/scale", f"{theirs}.layer_scale2.lambda1", "same")]
  return rules + [*norm(f"{ours}/LayerNorm_0", f"{theirs}.layernorm_before"),
                  *norm(f"{ours}/LayerNorm_2", f"{theirs}.layernorm_after"),
                  *dense(f"{mlp}/Dense_0", f"{theirs}.intermediate.dense"),
                  *dense(f"{mlp}/Dense_1", f"{theirs}.output.dense")]


def _top(arch: dict, kind: str, p: str, heads_present: tuple[str, ...]) -> list[tuple]:
  emb = p + "embeddings."
  if kind in _SIGLIPS:
    top = [("embedding/kernel", emb + "patch_embedding.weight", "conv"),
           ("embedding/bias", emb + "patch_embedding.bias", "same"),
           ("Transformer/posembed_input/pos_embedding", emb + "position_embedding.weight", "table"),
           *norm("Transformer/encoder_norm", p + "post_layernorm")]
    if arch["classifier"] == "map":
      attention = "MAPHead_0/MultiHeadDotProductAttention_0"
      top += [("MAPHead_0/probe", p + "head.probe", "same"),
              *heads(f"{attention}/query", p + "head.attention.q"),
              *heads(f"{attention}/key", p + "head.attention.k"),
              *heads(f"{attention}/value", p + "head.attention.v"),
              *heads(f"{attention}/out", p + "head.attention.out_proj", out=True),
              *norm("MAPHead_0/LayerNorm_0", p + "head.layernorm"),
              *dense("MAPHead_0/MlpBlock_0/Dense_0", p + "head.mlp.fc1"),
              *dense("MAPHead_0/MlpBlock_0/Dense_1", p + "head.mlp.fc2")]
    return top
  if kind == "clip_vision_model":
    top = [("embedding/kernel", emb + "patch_embedding.weight", "conv"),
           ("cls", emb + "class_embedding", "token"),
           ("Transformer/posembed_input/pos_embedding", emb + "position_embedding.weight", "table"),
           *norm("Transformer/pre_norm", p + "pre_layrnorm"),
           *norm("Transformer/encoder_norm", p + "post_layernorm")]
    if "visual_projection" in heads_present:  # CLIP's projection: a head without bias.
      top.append(("head/kernel", "visual_projection.weight", "linear"))
    return top
  top = [("embedding/kernel", emb + "patch_embeddings.projection.weight", "conv"),
         ("embedding/bias", emb + "patch_embeddings.projection.bias", "same"),
         ("cls", emb + "cls_token", "same"),
         ("Transformer/posembed_input/pos_embedding", emb + "position_embeddings", "same"),
         *norm("Transformer/encoder_norm", p + "layernorm")]
  if arch.get("distillation_token"):
    top.append(("dist", emb + "distillation_token", "same"))
  if arch.get("num_registers"):
    top.append(("registers", emb + "register_tokens", "same"))
  if arch.get("representation_size"):
    top += dense("pre_logits", p + "pooler.dense")
  names = {"head": ("classifier", "cls_classifier"), "head_dist": ("distillation_classifier",)}
  for ours, candidates in names.items():
    for theirs in candidates:
      if theirs in heads_present:
        top += dense(ours, theirs)
  return top


def rules(arch: dict, kind: str, prefix: str, heads_present: tuple[str, ...] = ()):
  all_rules = [Rule(*r) for r in _top(arch, kind, prefix, heads_present)]
  all_rules += layouts.block_rules(arch["num_layers"], _block(arch, kind, prefix))
  fused = [layouts.Fused(f"{prefix}head.attention.in_proj_{p}",
                         tuple(f"{prefix}head.attention.{n}.{p}" for n in "qkv"))
           for p in ("weight", "bias")]
  return all_rules, fused


def _ignored(key: str) -> bool:
  """Tensors that carry no weights of the image model (DINOv2's mask token for its
  pre-training, a full SigLIP's text tower and logit scale, position-id buffers)."""
  return (key.endswith(("mask_token", "position_ids"))
          or key.startswith(("text_model.", "logit_", "text_projection.", "decoder.")))


_POSEMB = "Transformer/posembed_input/pos_embedding"


def to_params(config: dict, state: dict[str, np.ndarray],
              processor: Optional[dict] = None) -> tuple[dict, dict, dict, list[str]]:
  """(arch, flat params, preprocessing, notes) of a transformers checkpoint."""
  config = vision_config(config)
  kind = config["model_type"]
  if kind == hf_dinov3_format.KIND:
    arch, flat = hf_dinov3_format.to_params(config, state)
    return arch, flat, preprocessing(config, processor), []
  arch = arch_of(config)
  prefix = _prefix(kind, state)
  notes = []
  if kind == "siglip2_vision_model":  # a Linear on flattened patches -> the conv layout.
    state = {**state, prefix + _SIGLIP2_PATCHES: layouts.patches_to_conv(
        state[prefix + _SIGLIP2_PATCHES], config.get("num_channels", 3))}
  if kind == "deit" and "classifier.weight" in state:
    raise UserError("DeiTForImageClassification's head reads the [class] token alone; "
                    "vit_jax's distilled DeiT averages both heads as DeiT does. Convert a "
                    "DeiTForImageClassificationWithTeacher or a DeiTModel.")
  if kind.startswith("dinov2") and "classifier.weight" in state:
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    notes.append("dropped Dinov2ForImageClassification's head (it reads [class] and the "
                 "mean patch token); the backbone is kept")
  if prefix + "pooler.dense.weight" in state:
    arch["representation_size"] = state[prefix + "pooler.dense.weight"].shape[0]
  present = tuple(k.removesuffix(".weight") for k in state
                  if k.endswith("classifier.weight") or k == "visual_projection.weight")
  if kind == "vit_mae" and any(k.startswith("decoder.") for k in state):
    notes.append("MAE's pre-training decoder kept apart (fine-tuning drops it; "
                 "objective='mae' continues with it)")
  rule_list, fused = rules(arch, kind, prefix, present)
  flat = layouts.import_state(state, rule_list, heads=arch["num_heads"], fused=fused,
                              ignore=_ignored, source=f"{kind} checkpoint")
  if kind == "clip_vision_model":
    flat = layouts.with_zero_head_bias(flat)
  if kind == "vit_mae" and hf_mae_format.is_mae_table(flat[_POSEMB][0], num_prefix=1):
    del flat[_POSEMB]  # MAE's fixed table: computed by the model, not a parameter.
    arch["posemb"] = "sincos2d_mae"
  return arch, flat, preprocessing(config, processor), notes


def export_kind(arch: dict) -> str:
  """The transformers model that represents our arch exactly."""
  if hf_dinov3_format.exportable(arch):
    return hf_dinov3_format.KIND
  if arch.get("rope", "none") != "none" or arch.get("mlp_norm"):
    raise UserError("transformers has rotary embeddings only in DINOv3's ViT (LayerScale, a "
                    "[class] token, no absolute embeddings); export this model to .npz instead.")
  cls = layouts.has_class_token(arch)
  token = arch.get("classifier", "token") == "token" and cls
  plain = not (arch.get("num_registers") or arch.get("qk_norm") or arch.get("distillation_token")
               or arch.get("layerscale_init") is not None or arch.get("mlp_activation") == "swiglu")
  if arch.get("posemb") == "sincos2d_mae":
    if token and plain and not arch.get("pre_norm") and arch.get("patch_bias", True):
      return "vit_mae"
    raise UserError("transformers has MAE's fixed position table only in ViTMAEModel (a "
                    "[class] token, a plain block); export this model to .npz instead.")
  if arch.get("pre_norm") or not arch.get("patch_bias", True):
    if (arch.get("pre_norm") and not arch.get("patch_bias", True) and token and plain
        and arch.get("posemb_prefix", True) and arch.get("posemb", "learned") == "learned"):
      return "clip_vision_model"
    raise UserError("transformers has a pre-norm ViT only as CLIP's (a [class] token, no "
                    "patch-embedding bias, no registers or LayerScale); export to .npz instead.")
  if arch.get("classifier") == "map" and not cls and not arch.get("posemb_prefix", True):
    return "siglip_vision_model"
  if token and arch.get("posemb_prefix", True) and arch.get("posemb", "learned") == "learned":
    if arch.get("distillation_token"):
      return "deit"
    if arch.get("layerscale_init") is not None:
      return "dinov2_with_registers" if arch.get("num_registers") else "dinov2"
    if not arch.get("num_registers") and not arch.get("qk_norm") and arch.get("mlp_activation") != "swiglu":
      return "vit"
  raise UserError("No transformers model has this architecture (e.g. registers without "
                  "LayerScale, sincos2d embeddings, qk-norm); export to timm or .npz instead.")


def _swiglu_width(hidden_features: int) -> int:
  """transformers' Dinov2SwiGLUFFN: 2/3 of the MLP width, rounded up to a multiple of 8."""
  return (int(hidden_features * 2 / 3) + 7) // 8 * 8


def _dinov2_mlp_ratio(arch: dict) -> int:
  """Dinov2Config holds an integer mlp_ratio, from which it derives the MLP width."""
  width = arch["hidden_size"]
  for ratio in range(1, 17):
    features = width * ratio
    if (_swiglu_width(features) if arch.get("mlp_activation") == "swiglu" else features) == arch["mlp_dim"]:
      return ratio
  raise UserError(f"mlp_dim={arch['mlp_dim']} is no integer mlp_ratio of width {width}: "
                  f"transformers' Dinov2Config cannot express it; export to timm instead.")


def from_params(arch: dict, flat: dict[str, np.ndarray], preprocess: dict) -> tuple[dict, dict, dict]:
  """(config.json, state dict, preprocessor_config.json) of our params."""
  kind = export_kind(arch)
  if kind == "siglip_vision_model" and preprocess.get("max_num_patches"):
    kind = "siglip2_vision_model"  # trained on NaFlex patch sequences.
  if kind == hf_dinov3_format.KIND:  # a backbone: any classification head stays behind.
    config, state = hf_dinov3_format.from_params(
        arch, {k: v for k, v in flat.items() if not k.startswith("head")})
    return config, state, _processor(preprocess)
  grid = arch.get("posemb_grid") or (14, 14)
  act = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "swiglu": "gelu",
         "quick_gelu": "quick_gelu"}
  config = {"model_type": kind, "hidden_size": arch["hidden_size"],
            "num_hidden_layers": arch["num_layers"],
            "num_attention_heads": arch["num_heads"], "intermediate_size": arch["mlp_dim"],
            "hidden_act": act[arch.get("mlp_activation", "gelu_tanh")],
            "layer_norm_eps": arch.get("layernorm_epsilon", 1e-6),
            "image_size": grid[0] * arch["patch_size"], "patch_size": arch["patch_size"],
            "num_channels": 3, "qkv_bias": True}
  has_head = "head/kernel" in flat
  if kind == "siglip2_vision_model":
    if grid[0] != grid[1]:
      raise UserError(f"SigLIP 2 keeps a square position grid, not {tuple(grid)}; export "
                      f"to .npz instead.")
    del config["image_size"]
    config.update(num_patches=grid[0] * grid[1],
                  vision_use_head=arch.get("classifier") == "map")
  if kind == "vit_mae":  # the encoder, as MAE's pre-training leaves it (no head).
    flat = {**{k: v for k, v in flat.items() if not k.startswith("head")},
            _POSEMB: hf_mae_format.mae_table(tuple(grid), arch["hidden_size"])}
    config.update(mask_ratio=0.75, norm_pix_loss=True)
    has_head = False
  if kind.startswith("dinov2"):
    config.update(layerscale_value=arch["layerscale_init"],
                  mlp_ratio=_dinov2_mlp_ratio(arch),
                  use_swiglu_ffn=arch.get("mlp_activation") == "swiglu",
                  num_register_tokens=arch.get("num_registers", 0))
    has_head = False
  if kind == "clip_vision_model" and has_head:
    flat = layouts.without_head_bias(flat, "CLIP's visual")
    config["projection_dim"] = flat["head/kernel"].shape[-1]
  prefix = {"siglip_vision_model": "vision_model.", "siglip2_vision_model": "vision_model.",
            "clip_vision_model": "vision_model.",
            "vit": "vit." if has_head else "",
            "deit": "deit." if has_head else ""}.get(kind, "")
  architecture = {"vit": "ViTForImageClassification" if has_head else "ViTModel",
                  "deit": "DeiTForImageClassificationWithTeacher" if has_head else "DeiTModel",
                  "dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel",
                  "siglip_vision_model": "SiglipVisionModel",
                  "siglip2_vision_model": "Siglip2VisionModel", "vit_mae": "ViTMAEModel",
                  "clip_vision_model": "CLIPVisionModelWithProjection" if has_head
                  else "CLIPVisionModel"}[kind]
  config["architectures"] = [architecture]
  if has_head and kind != "clip_vision_model":
    config["num_labels"] = flat["head/kernel"].shape[-1]
  flat = {k: v for k, v in flat.items() if has_head or not k.startswith("head")}
  present = ({"deit": ("cls_classifier", "distillation_classifier"),
              "clip_vision_model": ("visual_projection",)}.get(kind, ("classifier",))
             if has_head else ())
  rule_list, fused = rules(arch, kind, prefix, present)
  state = layouts.export_state(flat, rule_list, heads=arch["num_heads"], fused=fused)
  if kind == "siglip2_vision_model":
    state[prefix + _SIGLIP2_PATCHES] = layouts.conv_to_patches(state[prefix + _SIGLIP2_PATCHES])
  return config, state, _processor(preprocess)


def _processor(preprocess: dict) -> dict:
  """preprocessor_config.json of our preprocessing record."""
  if preprocess.get("max_num_patches"):
    return {"image_processor_type": "Siglip2ImageProcessor",
            "image_mean": list(preprocess["mean"]), "image_std": list(preprocess["std"]),
            "do_resize": True, "do_normalize": True, "do_rescale": True,
            "rescale_factor": 1 / 255, "patch_size": preprocess["patch_size"],
            "max_num_patches": preprocess["max_num_patches"],
            "resample": {v: k for k, v in _PIL_RESAMPLE.items()}[preprocess.get("resize", "bilinear")]}
  return {"image_mean": list(preprocess["mean"]), "image_std": list(preprocess["std"]),
          "size": {"height": preprocess["resolution"], "width": preprocess["resolution"]},
          "do_resize": True, "do_normalize": True, "do_rescale": True,
          "rescale_factor": 1 / 255,
          "resample": {v: k for k, v in _PIL_RESAMPLE.items()}[preprocess.get("resize", "bilinear")]}
