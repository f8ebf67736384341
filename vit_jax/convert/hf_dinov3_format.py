"""transformers' DINOv3 ViT (`dinov3_vit`: DINOv3ViTModel), read and written.

Its layout differs from the other transformers ViTs: `layer.{i}` blocks with separate
q/k/v projections (no key bias by default: a key bias shifts all of a query's logits
equally, so softmax ignores it; it is zero here and dropped on export), LayerScale,
rotary embeddings (rope_theta) instead of absolute ones, registers, and a gated MLP
(gate_proj / up_proj, SiLU) for the larger sizes, packed here as [gate, value]. The
model is a backbone: its pooled output is the [class] token.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vit_jax.convert import layouts
from vit_jax.convert.layouts import Rule, dense, heads, norm
from vit_jax.errors import UserError

KIND = "dinov3_vit"
_BLOCK = "layer.{i}"  # as saved; transformers 5 names it model.layer.{i} in memory.


def arch_of(config: dict) -> dict[str, Any]:
  gated = config.get("use_gated_mlp", False)
  act = config.get("hidden_act", "gelu")
  if (gated and act != "silu") or (not gated and act != "gelu"):
    raise UserError(f"DINOv3 hidden_act={act!r} with use_gated_mlp={gated} is not supported; "
                    f"supported: gelu, or silu gated (SwiGLU).")
  return dict(family="vit", patch_size=config["patch_size"], hidden_size=config["hidden_size"],
              num_layers=config["num_hidden_layers"], num_heads=config["num_attention_heads"],
              mlp_dim=config["intermediate_size"],
              mlp_activation="swiglu" if gated else "gelu",
              layernorm_epsilon=config.get("layer_norm_eps", 1e-5), classifier="token",
              class_token=True, num_registers=config.get("num_register_tokens", 0),
              layerscale_init=config.get("layerscale_value", 1.0), posemb="none",
              rope="dinov3", rope_temperature=float(config.get("rope_theta", 100.0)))


def rules(arch: dict) -> list[Rule]:
  top = [("embedding/kernel", "embeddings.patch_embeddings.weight", "conv"),
         ("embedding/bias", "embeddings.patch_embeddings.bias", "same"),
         ("cls", "embeddings.cls_token", "same"),
         *norm("Transformer/encoder_norm", "norm")]
  if arch.get("num_registers"):
    top.append(("registers", "embeddings.register_tokens", "same"))
  ours, theirs = "Transformer/encoderblock_{i}", _BLOCK
  attention = f"{ours}/MultiHeadDotProductAttention_1"
  up = "gate_up_proj" if arch["mlp_activation"] == "swiglu" else "up_proj"
  block = [*norm(f"{ours}/LayerNorm_0", f"{theirs}.norm1"),
           *heads(f"{attention}/query", f"{theirs}.attention.q_proj"),
           *heads(f"{attention}/key", f"{theirs}.attention.k_proj"),
           *heads(f"{attention}/value", f"{theirs}.attention.v_proj"),
           *heads(f"{attention}/out", f"{theirs}.attention.o_proj", out=True),
           *norm(f"{ours}/LayerNorm_2", f"{theirs}.norm2"),
           *dense(f"{ours}/MlpBlock_3/Dense_0", f"{theirs}.mlp.{up}"),
           *dense(f"{ours}/MlpBlock_3/Dense_1", f"{theirs}.mlp.down_proj"),
           (f"{ours}/LayerScale_attention/scale", f"{theirs}.layer_scale1.lambda1", "same"),
           (f"{ours}/LayerScale_mlp/scale", f"{theirs}.layer_scale2.lambda1", "same")]
  return [Rule(*r) for r in top] + layouts.block_rules(arch["num_layers"], block)


def _complete(state: dict, arch: dict) -> dict:
  """Missing projection biases as zeros; gate and up projections packed as [gate, up]."""
  state = {k.removeprefix("model."): v for k, v in state.items()}
  for i in range(arch["num_layers"]):
    block = _BLOCK.format(i=i)
    for name in ("attention.q_proj", "attention.k_proj", "attention.v_proj",
                 "attention.o_proj", "mlp.up_proj", "mlp.down_proj", "mlp.gate_proj"):
      if f"{block}.{name}.weight" in state:
        state.setdefault(f"{block}.{name}.bias",
                         np.zeros(state[f"{block}.{name}.weight"].shape[0], np.float32))
    mlp = f"{block}.mlp"
    if f"{mlp}.gate_proj.weight" in state:
      for p in ("weight", "bias"):
        state[f"{mlp}.gate_up_proj.{p}"] = np.concatenate(
            [state.pop(f"{mlp}.gate_proj.{p}"), state.pop(f"{mlp}.up_proj.{p}")])
  return state


def to_params(config: dict, state: dict[str, np.ndarray]) -> tuple[dict, dict]:
  arch = arch_of(config)
  flat = layouts.import_state(_complete(state, arch), rules(arch), heads=arch["num_heads"],
                              ignore=lambda k: k.endswith("mask_token") or (
                                  k.endswith("register_tokens") and not arch["num_registers"]),
                              source="DINOv3 checkpoint")
  return arch, flat


def from_params(arch: dict, flat: dict[str, np.ndarray]) -> tuple[dict, dict]:
  """(config.json, state dict) of a DINOv3ViTModel."""
  state = layouts.export_state(flat, rules(arch), heads=arch["num_heads"])
  for i in range(arch["num_layers"]):
    block = _BLOCK.format(i=i)
    state.pop(f"{block}.attention.k_proj.bias")  # softmax ignores it: exact.
    if f"{block}.mlp.gate_up_proj.weight" in state:
      for p in ("weight", "bias"):
        state[f"{block}.mlp.gate_proj.{p}"], state[f"{block}.mlp.up_proj.{p}"] = np.split(
            state.pop(f"{block}.mlp.gate_up_proj.{p}"), 2)
  state["embeddings.mask_token"] = np.zeros((1, 1, arch["hidden_size"]), np.float32)
  if not arch.get("num_registers"):
    state["embeddings.register_tokens"] = np.zeros((1, 0, arch["hidden_size"]), np.float32)
  swiglu = arch["mlp_activation"] == "swiglu"
  config = {"model_type": KIND, "architectures": ["DINOv3ViTModel"],
            "hidden_size": arch["hidden_size"], "num_hidden_layers": arch["num_layers"],
            "num_attention_heads": arch["num_heads"], "intermediate_size": arch["mlp_dim"],
            "hidden_act": "silu" if swiglu else "gelu", "use_gated_mlp": swiglu,
            "layer_norm_eps": arch.get("layernorm_epsilon", 1e-5),
            "layerscale_value": arch.get("layerscale_init") or 1.0,
            "num_register_tokens": arch.get("num_registers", 0), "patch_size": arch["patch_size"],
            "image_size": 224, "rope_theta": arch.get("rope_temperature") or 100.0,
            "query_bias": True, "key_bias": False, "value_bias": True, "proj_bias": True,
            "mlp_bias": True, "num_channels": 3}
  return config, state


def exportable(arch: dict) -> bool:
  """DINOv3ViTModel computes this arch's tokens exactly (the pooling aside: it is a
  backbone whose pooled output is the [class] token)."""
  return (arch.get("rope") == "dinov3" and arch.get("posemb") == "none"
          and layouts.has_class_token(arch) and arch.get("layerscale_init") is not None
          and not arch.get("distillation_token") and not arch.get("qk_norm")
          and not arch.get("pre_norm") and not arch.get("fc_norm")
          and not arch.get("mlp_norm") and arch.get("patch_bias", True)
          and arch.get("mlp_activation") in ("gelu", "swiglu"))
