"""transformers' ViTMAEForPreTraining beyond its encoder (which `hf_format` reads as a
ViT): the decoder as vit_jax's `decoder/` parameters (vit_jax.models.mae), its settings as
`config.mae`, and MAE's fixed position table recognised as `posemb='sincos2d_mae'`.

The decoder's blocks are stored as `decoder.decoder_layers.{i}.attention.attention.query`
on the Hub (transformers 4) and as `decoder.decoder_encoder.layer.{i}....` by
transformers 5's save_pretrained; both are read. Written: the 4.x names, which both load.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from vit_jax.convert import layouts
from vit_jax.convert.layouts import Rule, dense, heads, norm
from vit_jax.models import posemb as posemb_lib

_BLOCK_PREFIXES = ("decoder.decoder_layers.{i}", "decoder.decoder_encoder.layer.{i}")


def _block_prefix(state) -> str:
  for prefix in _BLOCK_PREFIXES:
    if any(k.startswith(prefix.format(i=0) + ".") for k in state):
      return prefix
  return _BLOCK_PREFIXES[0]


def decoder_settings(config: dict, state) -> dict:
  """config.mae.decoder of a ViTMAEConfig and its decoder's position table (MAE's fixed
  one, or any other: learned)."""
  table = np.asarray(state["decoder.decoder_pos_embed"])[0]
  return {"width": config["decoder_hidden_size"], "depth": config["decoder_num_hidden_layers"],
          "heads": config["decoder_num_attention_heads"],
          "mlp_dim": config["decoder_intermediate_size"],
          "posemb": "sincos2d_mae" if is_mae_table(table, num_prefix=1) else "learned"}


def objective_of(config: dict, state) -> Optional[dict]:
  """{'mae': settings} of a checkpoint with MAE's decoder, else None."""
  if config.get("model_type") != "vit_mae" or not any(k.startswith("decoder.") for k in state):
    return None
  return {"mae": {"decoder": decoder_settings(config, state),
                  "norm_pix_loss": bool(config.get("norm_pix_loss", False))}}


def _rules(config: dict, state_keys) -> list[Rule]:
  ours, theirs = "decoder/decoderblock_{i}", _block_prefix(state_keys)
  attention = f"{ours}/MultiHeadDotProductAttention_1"
  per_block = [*heads(f"{attention}/query", f"{theirs}.attention.attention.query"),
               *heads(f"{attention}/key", f"{theirs}.attention.attention.key"),
               *heads(f"{attention}/value", f"{theirs}.attention.attention.value"),
               *heads(f"{attention}/out", f"{theirs}.attention.output.dense", out=True),
               *norm(f"{ours}/LayerNorm_0", f"{theirs}.layernorm_before"),
               *norm(f"{ours}/LayerNorm_2", f"{theirs}.layernorm_after"),
               *dense(f"{ours}/MlpBlock_3/Dense_0", f"{theirs}.intermediate.dense"),
               *dense(f"{ours}/MlpBlock_3/Dense_1", f"{theirs}.output.dense")]
  top = [*dense("decoder/decoder_embed", "decoder.decoder_embed"),
         ("decoder/mask_token", "decoder.mask_token", "same"),
         *norm("decoder/decoder_norm", "decoder.decoder_norm"),
         *dense("decoder/decoder_pred", "decoder.decoder_pred")]
  return [Rule(*r) for r in top] + layouts.block_rules(config["decoder_num_hidden_layers"],
                                                       per_block)


def decoder_params(config: dict, state) -> dict[str, np.ndarray]:
  """The decoder's flat parameters (`decoder/...`); MAE's fixed position table is computed
  by the decoder, any other is its learned `pos_embedding` ([class] row included)."""
  decoder = {k: v for k, v in state.items() if k.startswith("decoder.")}
  table = np.asarray(decoder.pop("decoder.decoder_pos_embed"))[0]
  flat = layouts.import_state(decoder, _rules(config, decoder),
                              heads=config["decoder_num_attention_heads"],
                              source="MAE decoder")
  if not is_mae_table(table, num_prefix=1):
    flat["decoder/pos_embedding"] = table
  return flat


def is_mae_table(table: np.ndarray, *, num_prefix: int) -> bool:
  """(prefix + N, D) position embeddings equal MAE's fixed table (zero prefix rows) on a
  square grid."""
  patches = table.shape[0] - num_prefix
  side = int(round(patches ** 0.5))
  if side * side != patches or table.shape[1] % 4:
    return False
  expected = posemb_lib.sincos_2d(side, side, table.shape[1], mae=True)
  return (np.allclose(table[num_prefix:], expected, atol=1e-5)
          and np.allclose(table[:num_prefix], 0.0, atol=1e-6))


def mae_table(grid: tuple[int, int], width: int) -> np.ndarray:
  """(1, 1 + N, D): the [class] token's zero row, then MAE's table."""
  table = posemb_lib.sincos_2d(*grid, width, mae=True)
  return np.concatenate([np.zeros((1, width), np.float32), table])[None]
