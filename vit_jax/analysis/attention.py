"""What the model learns (the paper's analysis figures), as numbers: attention rollout,
mean attention distance, position-embedding similarity, patch-embedding PCA.

Plain numpy, independent of plotting (`vit_jax.analysis.figures` draws them). Attention weights
come from `attention_maps`, which reads what the attention layers `sow` when asked; the
trained model and its training step are untouched.
"""
from __future__ import annotations

import numpy as np

from vit_jax.models.vit_layout import unscan_params


def attention_maps(model, params, images) -> list[np.ndarray]:
  """Per layer, attention weights (batch, heads, tokens, tokens) for `images`."""
  # The 'einsum' implementation is the one that materialises (and sows) the weights; the
  # per-layer layout gives one entry per layer.
  model = model.clone(attention_implementation="einsum", scan_layers=False)
  _, state = model.apply({"params": unscan_params(params)}, images, train=False,
                         mutable=["intermediates"])
  encoder = state["intermediates"]["Transformer"]
  return [np.asarray(encoder[f"encoderblock_{i}"]["MultiHeadDotProductAttention_1"]
                     ["attention_weights"][0]) for i in range(model.num_layers)]


def attention_rollout(attentions: list[np.ndarray]) -> np.ndarray:
  """Abnar & Zuidema (2020): per layer, average over heads, add the identity for the
  residual connection, renormalise rows; multiply across layers (first layer rightmost).
  attentions: per layer (batch, heads, T, T). Returns (batch, T, T), rows summing to 1."""
  rollout = None
  for layer in attentions:
    a = layer.astype(np.float64).mean(axis=1)
    a = a + np.eye(a.shape[-1])
    a = a / a.sum(axis=-1, keepdims=True)
    rollout = a if rollout is None else a @ rollout
  return rollout


def rollout_map(rollout: np.ndarray, grid: tuple[int, int], num_prefix_tokens: int) -> np.ndarray:
  """(batch, T, T) rollout -> (batch, gh, gw) map: the class token's row, or, for models
  without a class token (gap), the mean over all tokens' rows."""
  if num_prefix_tokens:
    rows = rollout[:, 0, num_prefix_tokens:]
  else:
    rows = rollout.mean(axis=1)
  return rows.reshape(rows.shape[0], *grid)


def _patch_positions(grid: tuple[int, int], patch_size: int) -> np.ndarray:
  rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
  return np.stack([rows.ravel(), cols.ravel()], axis=-1) * float(patch_size)


def mean_attention_distance(attention: np.ndarray, *, grid: tuple[int, int], patch_size: int,
                            num_prefix_tokens: int) -> np.ndarray:
  """Per head, the attention-weighted image-space distance (pixels) between a query patch
  and the patches it attends to, averaged over queries and the batch (class token left
  out; patch-to-patch weights renormalised). attention: (batch, heads, T, T) -> (heads,)."""
  a = attention[:, :, num_prefix_tokens:, num_prefix_tokens:].astype(np.float64)
  a = a / a.sum(axis=-1, keepdims=True)
  positions = _patch_positions(grid, patch_size)
  distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)  # (N, N)
  per_query = (a * distances).sum(axis=-1)  # (batch, heads, N)
  return per_query.mean(axis=(0, 2))


def posemb_similarity(posemb: np.ndarray, *, num_prefix_tokens: int) -> np.ndarray:
  """Cosine similarity between every pair of patch position embeddings: (N, N)."""
  x = np.asarray(posemb, np.float64).reshape(-1, posemb.shape[-1])[num_prefix_tokens:]
  x = x / np.linalg.norm(x, axis=-1, keepdims=True)
  return x @ x.T


def patch_embedding_pca(kernel: np.ndarray, num_components: int) -> tuple[np.ndarray, np.ndarray]:
  """Principal components of the patch-embedding filters (the D columns of the
  (p*p*C, D) kernel). Returns components (k, p, p, C), orthonormal as vectors, and the
  fraction of variance each explains."""
  p1, p2, channels, dim = kernel.shape
  filters = np.asarray(kernel, np.float64).reshape(-1, dim).T  # (D, p*p*C)
  filters = filters - filters.mean(axis=0, keepdims=True)
  _, singular, axes = np.linalg.svd(filters, full_matrices=False)
  k = min(num_components, axes.shape[0])
  variance = singular**2 / np.sum(singular**2)
  return axes[:k].reshape(k, p1, p2, channels), variance[:k]
