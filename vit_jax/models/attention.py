"""Exact attention kernels, softmax(Q K^T / sqrt(d)) V on (batch, tokens, heads, head_dim),
and the rule that picks the fastest one for the accelerator.

- 'einsum': spelled out (the reference; attention dropout and attention maps need it).
- 'xla' / 'cudnn': `jax.nn.dot_product_attention` (cuDNN's flash attention on a GPU).
- 'pallas': the Pallas TPU flash attention kernel (`jax.experimental.pallas.ops.tpu`),
  run per shard inside `jax.shard_map` (Mosaic kernels are not partitioned by XLA).
- 'auto': 'pallas' on TPU for sequences of PALLAS_MIN_TOKENS or more, 'cudnn' on GPU for
  half-precision activations, else 'einsum'.

The fused kernels take only some sequence lengths (cuDNN in training: multiples of 8;
the TPU kernel: multiples of its 128-token blocks), and ViT's 1 + 14 * 14 = 197 tokens are
none of them: tokens are padded and the padded keys masked out, which leaves the result
unchanged (tests check each path against 'einsum').
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn", "pallas")
# cuDNN's flash attention in training (jax 0.11: even lengths). Measured on an H100 (B/16,
# batch 256): a multiple of 8 (200 tokens) 3,129 img/s, of 2 the same, of 64 (256) 3,077.
CUDNN_SEQUENCE_MULTIPLE = 8
# The TPU kernel's blocks along the sequence (the lane width of a TPU vector register).
PALLAS_BLOCK = 128
# Where the TPU kernel pays (the TPU compiler's view, B/16 pre-training step, batch 16 per
# v5e chip, 2026-12-06, BENCHMARKS.md): at 224 px (197 tokens, padded to 256) it reads 7%
# more bytes and holds 28% more HBM than einsum; at 384 px (577 tokens) 18% fewer bytes
# (roofline +21% img/s) for 13% more HBM (its softmax statistics are lane-padded).
PALLAS_MIN_TOKENS = 512


def resolve(implementation: str, *, platform: str, dtype, num_tokens: int,
            attention_dropout: bool = False) -> str:
  """The kernel 'auto' stands for on `platform` ('tpu', 'gpu', 'cpu') for `num_tokens`
  tokens of `dtype` ('einsum' where attention dropout needs it); other choices are kept."""
  if implementation != "auto":
    return implementation
  if attention_dropout:
    return "einsum"
  if platform == "tpu":
    return "pallas" if num_tokens >= PALLAS_MIN_TOKENS else "einsum"
  if platform in ("gpu", "cuda") and jnp.dtype(dtype).itemsize == 2:
    return "cudnn"  # cuDNN's flash attention takes float16 / bfloat16 only.
  return "einsum"


def key_mask(kv_lengths, num_keys: int):
  """(B, K) True on each sequence's first `kv_lengths` keys (its padding comes last)."""
  return jnp.arange(num_keys) < kv_lengths[:, None]


def einsum_attention(query, key, value, *, dtype, dropout=None, kv_lengths=None):
  """The reference. `dropout(weights)` is applied to the attention weights when given;
  `kv_lengths` (B,): only each sequence's first keys are attended to (NaFlex padding).
  Returns (output, float32 weights)."""
  query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
  logits = jnp.einsum("bqhd,bkhd->bhqk", query, key)
  if kv_lengths is not None:
    logits = jnp.where(key_mask(kv_lengths, key.shape[1])[:, None, None, :], logits,
                       jnp.finfo(logits.dtype).min)
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  kept = weights if dropout is None else dropout(weights)
  return jnp.einsum("bhqk,bkhd->bqhd", kept.astype(dtype), value), weights


def _pad_tokens(x, length: int):
  return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, 0)))


def fused_attention(query, key, value, *, implementation: str, pad_to: int | None = None,
                    kv_lengths=None):
  """`jax.nn.dot_product_attention` ('xla' or 'cudnn'), the tokens padded to a multiple
  of `pad_to` (default: 8 for cuDNN, none for XLA) and the padded keys masked out (and
  those past `kv_lengths`, NaFlex padding)."""
  length = query.shape[1]
  multiple = pad_to or (CUDNN_SEQUENCE_MULTIPLE if implementation == "cudnn" else 1)
  padded = -(-length // multiple) * multiple
  if padded == length:
    return jax.nn.dot_product_attention(query, key, value, implementation=implementation,
                                        key_value_seq_lengths=kv_lengths)
  lengths = (jnp.full((query.shape[0],), key.shape[1], jnp.int32) if kv_lengths is None
             else kv_lengths)
  out = jax.nn.dot_product_attention(
      _pad_tokens(query, padded), _pad_tokens(key, padded), _pad_tokens(value, padded),
      key_value_seq_lengths=lengths, implementation=implementation)
  return out[:, :length]


def _pallas_kernel(query, key, value, kv_lengths):
  """The TPU kernel on one shard: (B, T, H, D) in, tokens padded to whole blocks, keys
  past each sequence's `kv_lengths` (B,) masked by segment ids (keys: real 1, padding 0;
  every query 1, so a padding query attends to the real keys and stays finite)."""
  from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash  # pylint: disable=g-import-not-at-top
  batch, length, _, head_dim = query.shape
  padded = -(-max(length, key.shape[1]) // PALLAS_BLOCK) * PALLAS_BLOCK
  to_kernel = lambda x: _pad_tokens(x, padded).transpose(0, 2, 1, 3)  # noqa: E731
  segments = key_mask(kv_lengths, padded).astype(jnp.int32)
  queries = jnp.ones((batch, padded), jnp.int32)
  block = min(PALLAS_BLOCK, padded)
  sizes = tpu_flash.BlockSizes(
      block_q=block, block_k_major=block, block_k=block, block_b=1,
      block_q_major_dkv=block, block_k_major_dkv=block, block_k_dkv=block,
      block_q_dkv=block, block_k_major_dq=block, block_k_dq=block, block_q_dq=block)
  out = tpu_flash.flash_attention(
      to_kernel(query), to_kernel(key), to_kernel(value),
      segment_ids=tpu_flash.SegmentIds(q=queries, kv=segments),
      sm_scale=float(head_dim) ** -0.5, block_sizes=sizes)
  return out.transpose(0, 2, 1, 3)[:, :length]


def pallas_attention(query, key, value, kv_lengths=None):
  """The Pallas TPU flash attention kernel. Under a mesh (the trainer's abstract mesh),
  each device runs it on its own examples and heads, placed as the 'act_batch' and
  'act_heads' rules say; tokens and head dimensions stay whole per device."""
  if kv_lengths is None:
    kv_lengths = jnp.full((query.shape[0],), key.shape[1], jnp.int32)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return _pallas_kernel(query, key, value, kv_lengths)
  batch_axes, _, heads_axes, _ = nn.logical_to_mesh_axes(
      ("act_batch", "act_length", "act_heads", "act_kv"))
  spec = PartitionSpec(batch_axes, None, heads_axes, None)
  return jax.shard_map(_pallas_kernel, mesh=mesh,
                       in_specs=(spec, spec, spec, PartitionSpec(batch_axes)),
                       out_specs=spec, check_vma=False)(query, key, value, kv_lengths)
