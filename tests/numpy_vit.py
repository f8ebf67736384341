"""An independent ViT forward pass in plain numpy (float64), written from the paper and the
published checkpoint layout: the reference the Flax model is checked against."""
import numpy as np


def _layer_norm(x, p, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _attention(x, p):
  q = np.einsum("bld,dhk->blhk", x, p["query"]["kernel"]) + p["query"]["bias"]
  k = np.einsum("bld,dhk->blhk", x, p["key"]["kernel"]) + p["key"]["bias"]
  v = np.einsum("bld,dhk->blhk", x, p["value"]["kernel"]) + p["value"]["bias"]
  weights = _softmax(np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1]))
  out = np.einsum("bhqs,bshk->bqhk", weights, v)
  return np.einsum("bqhk,hkd->bqd", out, p["out"]["kernel"]) + p["out"]["bias"]


def forward(params, images, *, patch_size, classifier="token"):
  """params: nested dict in the published layout; images: (B, H, W, C)."""
  p = {k: v for k, v in params.items()}
  x = np.asarray(images, np.float64)
  b, h, w, c = x.shape
  gh, gw = h // patch_size, w // patch_size
  patches = x.reshape(b, gh, patch_size, gw, patch_size, c).transpose(0, 1, 3, 2, 4, 5)
  patches = patches.reshape(b, gh * gw, patch_size * patch_size * c)
  kernel = np.asarray(p["embedding"]["kernel"], np.float64).reshape(-1,
                                                                    p["embedding"]["kernel"].shape[-1])
  x = patches @ kernel + p["embedding"]["bias"]
  if classifier == "token":
    x = np.concatenate([np.broadcast_to(p["cls"], (b, 1, x.shape[-1])), x], axis=1)
  enc = p["Transformer"]
  x = x + enc["posembed_input"]["pos_embedding"]
  i = 0
  while f"encoderblock_{i}" in enc:
    blk = enc[f"encoderblock_{i}"]
    x = x + _attention(_layer_norm(x, blk["LayerNorm_0"]), blk["MultiHeadDotProductAttention_1"])
    mlp = blk["MlpBlock_3"]
    y = _layer_norm(x, blk["LayerNorm_2"])
    y = _gelu_tanh(y @ mlp["Dense_0"]["kernel"] + mlp["Dense_0"]["bias"])
    x = x + y @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]
    i += 1
  x = _layer_norm(x, enc["encoder_norm"])
  x = x[:, 0] if classifier == "token" else x.mean(1)
  if "pre_logits" in p:
    x = np.tanh(x @ p["pre_logits"]["kernel"] + p["pre_logits"]["bias"])
  return x @ p["head"]["kernel"] + p["head"]["bias"]
