"""Features out of a ViT in one call, as big_vision's `out` dict: the pooled feature, the
patch tokens after the encoder (prefix and register tokens apart), and the output of
chosen blocks. Read with Flax's `sow`, recorded only when asked: the model and its
parameters are the trained ones."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from vit_jax.errors import UserError


def num_prefix_tokens(model) -> int:
  """[class] / distillation tokens, then registers, before the patches."""
  return (int(getattr(model, "has_class_token", False))
          + int(bool(getattr(model, "distillation_token", False)))
          + int(getattr(model, "num_registers", 0) or 0))


def extract(model, params, images, *, blocks: Sequence[int] = ()) -> dict[str, Any]:
  """{'pooled': (B, D), 'patch_tokens': (B, N, D), 'prefix_tokens': (B, P, D),
  'block_<i>': (B, P + N, D) for i in `blocks` (negative: from the end)}, float32. A BiT
  ResNet: its final feature map's positions as patch tokens, its stages as blocks
  ('block_<i>': (B, H_i, W_i, C_i))."""
  if not hasattr(model, "has_class_token") and not hasattr(model, "block_sizes"):
    raise UserError(f"Features beyond the pooled one are for the ViT and BiT families; this "
                    f"model is a {type(model).__name__}: use --pooled_only.")
  pooled, state = model.apply({"params": params}, images, train=False,
                              return_representation=True, mutable=["intermediates"])
  found = state["intermediates"]
  if hasattr(model, "block_sizes"):
    return _resnet_features(model, pooled, found, blocks)
  tokens = found["tokens"][0]
  prefix = num_prefix_tokens(model)
  out = {"pooled": pooled, "patch_tokens": tokens[:, prefix:].astype(jnp.float32),
         "prefix_tokens": tokens[:, :prefix].astype(jnp.float32)}
  encoder = found["Transformer"]
  layers = model.num_layers
  for block in blocks:
    index = block % layers
    if not -layers <= block < layers:
      raise UserError(f"block {block}: the model has {layers} blocks (0..{layers - 1}).")
    if "encoderblock" in encoder:  # scanned: one stacked record.
      value = encoder["encoderblock"]["out"][0][index]
    else:
      value = encoder[f"encoderblock_{index}"]["out"][0]
    out[f"block_{index}"] = value.astype(jnp.float32)
  return jax.tree.map(jnp.asarray, out)


def _resnet_features(model, pooled, found, blocks: Sequence[int]) -> dict[str, Any]:
  stages = len(model.block_sizes)
  out = {"pooled": pooled, "patch_tokens": found["tokens"][0].astype(jnp.float32),
         "prefix_tokens": jnp.zeros((pooled.shape[0], 0, pooled.shape[-1]), jnp.float32)}
  for block in blocks:
    if not -stages <= block < stages:
      raise UserError(f"block {block}: the model has {stages} stages (0..{stages - 1}).")
    index = block % stages
    out[f"block_{index}"] = found[f"block{index + 1}"]["out"][0].astype(jnp.float32)
  return jax.tree.map(jnp.asarray, out)
