"""The published ViT checkpoint format (`.npz`, flat '/'-joined keys) and fine-tuning surgery.

This is the *exchange* format (Google's released files, timm, the official code). Training
state (optimizer, step, RNG) lives in orbax checkpoints: see `vit_jax.checkpoints`.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from vit_jax.errors import UserError
from vit_jax.models import posemb as posemb_lib
from vit_jax.sharding import to_host

Params = Mapping[str, Any]

# Current Flax auto-naming numbers modules per type; the published files number them per
# block. We keep the published (older) names in memory and on disk.
_NEW_TO_OLD_BLOCK_NAMES = {
    "LayerNorm_0": "LayerNorm_0",
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}
POS_EMBEDDING_KEY = "Transformer/posembed_input/pos_embedding"


def uses_new_block_names(flat: Mapping[str, Any]) -> bool:
  return any("/MlpBlock_0/" in key for key in flat)


def to_old_block_names(flat: dict[str, Any]) -> dict[str, Any]:
  renamed = {}
  for key, value in flat.items():
    parts = key.split("/")
    for i, part in enumerate(parts[:-1]):
      if part.startswith("encoderblock_") and i + 1 < len(parts):
        parts[i + 1] = _NEW_TO_OLD_BLOCK_NAMES.get(parts[i + 1], parts[i + 1])
    renamed["/".join(parts)] = value
  return renamed


def flatten(params: Params) -> dict[str, Any]:
  return traverse_util.flatten_dict(nn.unbox(dict(params)), sep="/")


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  return traverse_util.unflatten_dict(dict(flat), sep="/")


def is_scanned(params: Params) -> bool:
  return "encoderblock" in params.get("Transformer", {})


def unscan_params(params: Params) -> dict[str, Any]:
  """Scanned layout (Transformer/encoderblock with a leading layer axis) -> one
  Transformer/encoderblock_{i} per layer, as in the published files."""
  if not is_scanned(params):
    return dict(params)
  encoder = dict(params["Transformer"])
  stacked = encoder.pop("encoderblock")
  num_layers = jax.tree.leaves(stacked)[0].shape[0]
  for i in range(num_layers):
    encoder[f"encoderblock_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return {**params, "Transformer": encoder}


def scan_params(params: Params) -> dict[str, Any]:
  """Per-layer layout -> scanned layout (the inverse of `unscan_params`)."""
  if is_scanned(params):
    return dict(params)
  encoder = dict(params["Transformer"])
  num_layers = sum(key.startswith("encoderblock_") for key in encoder)
  blocks = [encoder.pop(f"encoderblock_{i}") for i in range(num_layers)]
  encoder["encoderblock"] = jax.tree.map(lambda *xs: np.stack(xs), *blocks)
  return {**params, "Transformer": encoder}


# Keys under this prefix describe the model (architecture, preprocessing) as plain
# arrays: no pickled objects, so every reader loads the file with allow_pickle=False.
META_PREFIX = "vit_jax_meta/"


def _meta_array(value) -> np.ndarray:
  if isinstance(value, str):
    return np.array(value)  # a '<U' string array, not an object array.
  return np.asarray(value)


def _meta_value(array: np.ndarray):
  if array.dtype.kind == "U":
    return str(array)
  if array.ndim == 0:
    return array.item()
  return tuple(array.tolist())


def encode_meta(meta: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
  """{'arch': {...}, 'preprocessing': {...}} -> flat plain arrays (None values left out)."""
  return {f"{META_PREFIX}{section}/{key}": _meta_array(value)
          for section, values in meta.items() for key, value in values.items()
          if value is not None}


def decode_meta(flat: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
  meta: dict[str, dict[str, Any]] = {}
  for key, value in flat.items():
    if key.startswith(META_PREFIX):
      section, name = key[len(META_PREFIX):].split("/", 1)
      meta.setdefault(section, {})[name] = _meta_value(np.asarray(value))
  return meta


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Every array of an .npz, flat, or one clear error."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise UserError(f"Checkpoint file {path!r} does not exist.")
  try:
    with np.load(path, allow_pickle=False) as data:
      flat = {key: np.asarray(data[key]) for key in data.files}
  except (ValueError, OSError) as e:
    raise UserError(f"{path!r} is not a readable .npz checkpoint: {e}") from None
  if not flat:
    raise UserError(f"Checkpoint {path!r} holds no arrays.")
  return flat


def load_npz_with_meta(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, dict]]:
  """(params, meta) of an .npz; meta is empty for files without a description."""
  return split_meta(read_npz(path))


def split_meta(flat: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict]]:
  """(params, meta) of an .npz's flat arrays (as `read_npz` gives them)."""
  meta = decode_meta(flat)
  flat = {k: v for k, v in flat.items() if not k.startswith(META_PREFIX)}
  if uses_new_block_names(flat):
    flat = to_old_block_names(flat)
  return unflatten(flat), meta


def load_npz(path: str | os.PathLike) -> dict[str, Any]:
  """Loads a published (or `save_npz`-written) checkpoint as a nested params dict.

  Accepts both the older block naming (LayerNorm_0, MultiHeadDotProductAttention_1,
  LayerNorm_2, MlpBlock_3) and the current Flax naming (..._0, ..._1); returns the older.
  """
  return load_npz_with_meta(path)[0]


def _to_host(x) -> np.ndarray:
  x = to_host(x)
  # bfloat16 has no portable .npz encoding: store float32 so every reader can load it.
  return x.astype(np.float32) if x.dtype.kind == "V" or x.dtype.name == "bfloat16" else x


def save_npz(params: Params, path: str | os.PathLike,
             meta: Mapping[str, Mapping[str, Any]] | None = None) -> None:
  """Writes params in the published layout (older naming), readable by the official code
  and by timm, with `meta` (architecture, preprocessing) as plain arrays when given.
  Written to a temporary file first so an interrupted save never leaves a truncated
  checkpoint behind."""
  flat = {key: _to_host(value) for key, value in flatten(unscan_params(params)).items()}
  if uses_new_block_names(flat):
    flat = to_old_block_names(flat)
  flat.update(encode_meta(meta or {}))
  if jax.process_index() != 0:
    return
  path = os.fspath(path)
  tmp = path + ".tmp.npz"
  np.savez(tmp, **flat)
  os.replace(tmp, path)


# --- Fine-tuning surgery ----------------------------------------------------------------
def _square_grid(num_patches: int, what: str) -> tuple[int, int]:
  side = math.isqrt(num_patches)
  if side * side != num_patches:
    raise UserError(f"{what} has {num_patches} patch positions, not a square grid; pass "
                     f"the grid shape explicitly.")
  return side, side


def resize_posemb(posemb: np.ndarray, *, target_grid: tuple[int, int],
                  source_grid: tuple[int, int] | None = None, num_prefix_tokens: int = 1,
                  method: str = "bilinear", antialias: bool = False) -> np.ndarray:
  """Resamples (1, prefix + gh*gw, D) position embeddings to a new patch grid (as
  torch.nn.functional.interpolate would); the prefix-token embeddings are kept as they are."""
  posemb = np.asarray(posemb)
  prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
  if source_grid is None:
    source_grid = _square_grid(grid.shape[0], "The source position embedding")
  if source_grid[0] * source_grid[1] != grid.shape[0]:
    raise UserError(f"source_grid={source_grid} does not match {grid.shape[0]} positions.")
  grid = grid.reshape(*source_grid, -1).astype(np.float64)
  resized = posemb_lib.resample_grid(grid, tuple(target_grid), method=method,
                                     antialias=antialias).reshape(1, -1, grid.shape[-1])
  return np.concatenate([prefix, resized.astype(posemb.dtype)], axis=1)


def adapt_for_finetuning(restored: Params, init: Params, *,
                         target_grid: tuple[int, int] | None = None,
                         reset_head: bool = False,
                         notes: list[str] | None = None,
                         num_prefix_tokens: int | None = None,
                         method: str = "bilinear", antialias: bool = False) -> dict[str, Any]:
  """Fits restored (pre-trained) params to a freshly initialised model's params.

  - position embeddings are resized to the new patch grid;
  - `pre_logits` is dropped when the new model has none;
  - the head is replaced by the fresh (zero-initialised) one when the class count differs,
    is missing, or `reset_head`;
  - anything else that does not fit raises one error listing every missing key,
    unexpected key and shape mismatch.
  Each change made is described in `notes` (when given), for the run's log.
  """
  # Either layer layout (per-layer as published, or scanned) fits either model.
  restored = scan_params(restored) if is_scanned(init) else unscan_params(restored)
  restored_flat, init_flat = flatten(restored), flatten(init)
  result, problems, changes = {}, [], set()
  for key, init_value in init_flat.items():
    is_head = key.startswith(("head/", "head_dist/"))
    if key not in restored_flat:
      if is_head:
        result[key] = init_value
        changes.add(f"new head {tuple(init_flat['head/kernel'].shape)} (the checkpoint has none)")
      else:
        problems.append(f"missing {key} {tuple(init_value.shape)}")
      continue
    value = np.asarray(restored_flat[key])
    if is_head and (reset_head or value.shape != tuple(init_value.shape)):
      value = init_value
      changes.add(f"replaced the head {tuple(restored_flat['head/kernel'].shape)} by a fresh "
                  f"{tuple(init_flat['head/kernel'].shape)}")
    elif key == POS_EMBEDDING_KEY and value.shape != tuple(init_value.shape):
      prefix = (1 if "cls" in init_flat else 0) if num_prefix_tokens is None else num_prefix_tokens
      grid = target_grid or _square_grid(init_value.shape[1] - prefix, "The model")
      changes.add(f"resampled the position embeddings from {value.shape[1] - prefix} to "
                  f"{grid[0]}x{grid[1]} patches ({method}{', antialiased' if antialias else ''})")
      value = resize_posemb(value, target_grid=grid, num_prefix_tokens=prefix, method=method,
                            antialias=antialias)
    if tuple(value.shape) != tuple(init_value.shape):
      problems.append(f"shape mismatch {key}: checkpoint {tuple(value.shape)} vs model "
                      f"{tuple(init_value.shape)}")
      continue
    result[key] = np.asarray(value, dtype=init_value.dtype)
  for key in restored_flat.keys() - init_flat.keys():
    if not key.startswith("pre_logits/"):
      problems.append(f"unexpected {key} {tuple(np.shape(restored_flat[key]))}")
    else:
      changes.add("dropped the pre-logits layer (the model has none)")
  if problems:
    raise UserError("Checkpoint does not fit the model: " + "; ".join(sorted(problems)))
  if notes is not None:
    notes.extend(sorted(changes))
  return unflatten(result)


def posemb_grid(params: Params, num_prefix_tokens: int | None = None) -> tuple[int, int] | None:
  """The square grid of a checkpoint's learned position embeddings (None: it has none).
  `num_prefix_tokens` defaults to the published layout's: 1 with a [class] token."""
  posemb = params.get("Transformer", {}).get("posembed_input", {}).get("pos_embedding")
  if posemb is None:
    return None
  if num_prefix_tokens is None:
    num_prefix_tokens = 1 if "cls" in params else 0
  return _square_grid(posemb.shape[1] - num_prefix_tokens, "The checkpoint's position embedding")


def head_classes(params: Params) -> int | None:
  """The classes of a checkpoint's head (None: a headless, feature-only checkpoint)."""
  return params["head"]["kernel"].shape[-1] if "head" in params else None


def model_overrides(params: Params) -> dict[str, Any]:
  """What a checkpoint's parameter shapes say about the model: the classifier ([class]
  token or average pooling) and the pre-logits width."""
  overrides: dict[str, Any] = {"classifier": "token" if "cls" in params else "gap"}
  if "pre_logits" in params:
    overrides["representation_size"] = params["pre_logits"]["kernel"].shape[-1]
  return overrides
