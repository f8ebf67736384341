"""A minimal, hand-written ViT forward pass over the published parameter layout, generic
over numpy and jax.numpy (`xp`).

Two uses: with numpy in float64 it is the independent reference the Flax model is tested
against; with jax.numpy it is the "no framework" baseline of the benchmark (its train step
measures what Flax, sharding annotations and our step cost on top of plain JAX).
"""
from __future__ import annotations

import numpy as np


def _layer_norm(xp, x, p, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / xp.sqrt(var + eps) * p["scale"] + p["bias"]


def _gelu_tanh(xp, x):
  return 0.5 * x * (1 + xp.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _softmax(xp, x):
  e = xp.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _attention(xp, x, p):
  q = xp.einsum("bld,dhk->blhk", x, p["query"]["kernel"]) + p["query"]["bias"]
  k = xp.einsum("bld,dhk->blhk", x, p["key"]["kernel"]) + p["key"]["bias"]
  v = xp.einsum("bld,dhk->blhk", x, p["value"]["kernel"]) + p["value"]["bias"]
  weights = _softmax(xp, xp.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1]))
  out = xp.einsum("bhqs,bshk->bqhk", weights, v)
  return xp.einsum("bqhk,hkd->bqd", out, p["out"]["kernel"]) + p["out"]["bias"]


def forward(params, images, *, patch_size, classifier="token", xp=np):
  """params: nested dict in the published layout; images: (B, H, W, C). Returns logits."""
  p = params
  x = images
  b, h, w, c = x.shape
  gh, gw = h // patch_size, w // patch_size
  patches = x.reshape(b, gh, patch_size, gw, patch_size, c).transpose(0, 1, 3, 2, 4, 5)
  patches = patches.reshape(b, gh * gw, patch_size * patch_size * c)
  kernel = p["embedding"]["kernel"]
  x = patches @ kernel.reshape(-1, kernel.shape[-1]) + p["embedding"]["bias"]
  if classifier == "token":
    x = xp.concatenate([xp.broadcast_to(p["cls"], (b, 1, x.shape[-1])), x], axis=1)
  encoder = p["Transformer"]
  x = x + encoder["posembed_input"]["pos_embedding"]
  i = 0
  while f"encoderblock_{i}" in encoder:
    block = encoder[f"encoderblock_{i}"]
    x = x + _attention(xp, _layer_norm(xp, x, block["LayerNorm_0"]),
                       block["MultiHeadDotProductAttention_1"])
    mlp = block["MlpBlock_3"]
    y = _layer_norm(xp, x, block["LayerNorm_2"])
    y = _gelu_tanh(xp, y @ mlp["Dense_0"]["kernel"] + mlp["Dense_0"]["bias"])
    x = x + y @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]
    i += 1
  x = _layer_norm(xp, x, encoder["encoder_norm"])
  x = x[:, 0] if classifier == "token" else x.mean(1)
  if "pre_logits" in p:
    x = xp.tanh(x @ p["pre_logits"]["kernel"] + p["pre_logits"]["bias"])
  return x @ p["head"]["kernel"] + p["head"]["bias"]


def numpy_reference(params, images, *, patch_size, classifier="token"):
  """float64 numpy forward: the test reference."""
  params64 = _tree_map(lambda v: np.asarray(v, np.float64), params)
  return forward(params64, np.asarray(images, np.float64), patch_size=patch_size,
                 classifier=classifier, xp=np)


def _tree_map(fn, tree):
  if isinstance(tree, dict):
    return {k: _tree_map(fn, v) for k, v in tree.items()}
  return fn(tree)
