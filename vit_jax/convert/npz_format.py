"""The published checkpoint file format: `.npz`, flat '/'-joined keys, plus (in files we
write) the architecture and preprocessing as plain arrays under `vit_jax_meta/`.

This is the *exchange* format (Google's released files, timm, the official code). Training
state (optimizer, step, RNG) lives in orbax checkpoints (`vit_jax.trainer.checkpointer`).
"""
from __future__ import annotations

import io
import os
from typing import Any, Mapping

import jax
import numpy as np

from vit_jax import storage
from vit_jax.errors import UserError
from vit_jax.models.params import flatten, unflatten
from vit_jax.models.vit_layout import to_old_block_names, unscan_params, uses_new_block_names
from vit_jax.sharding import to_host

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


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Every array of an .npz (local or in a bucket), flat, or one clear error."""
  path = storage.path(path)
  if not path.exists():
    raise UserError(f"Checkpoint file {os.fspath(path)!r} does not exist.")
  try:
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as data:
      flat = {key: np.asarray(data[key]) for key in data.files}
  except (ValueError, OSError) as e:
    raise UserError(f"{os.fspath(path)!r} is not a readable .npz checkpoint: {e}") from None
  if not flat:
    raise UserError(f"Checkpoint {os.fspath(path)!r} holds no arrays.")
  return flat


def split_meta(flat: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict]]:
  """(nested params, meta) of an .npz's flat arrays; either block naming is read as the
  published one."""
  meta = decode_meta(flat)
  flat = {k: v for k, v in flat.items() if not k.startswith(META_PREFIX)}
  if uses_new_block_names(flat):
    flat = to_old_block_names(flat)
  return unflatten(flat), meta


def load_npz(path: str | os.PathLike) -> dict[str, Any]:
  """A published (or `save_npz`-written) checkpoint's parameters, nested, in the older
  block naming (LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3)
  whichever naming the file has. (`vit_jax.convert.read` also reads its description.)"""
  return split_meta(read_arrays(path))[0]


def _to_host(x) -> np.ndarray:
  x = to_host(x)
  # bfloat16 has no portable .npz encoding: store float32 so every reader can load it.
  return x.astype(np.float32) if x.dtype.kind == "V" or x.dtype.name == "bfloat16" else x


def save_npz(params: Mapping[str, Any], path: str | os.PathLike,
             meta: Mapping[str, Mapping[str, Any]] | None = None) -> None:
  """Writes params in the published layout (per-layer blocks, older naming), readable by
  the official code and by timm, with `meta` (architecture, preprocessing) as plain arrays
  when given. Written to a temporary file first so an interrupted save never leaves a
  truncated checkpoint behind."""
  flat = {key: _to_host(value) for key, value in flatten(unscan_params(params)).items()}
  if uses_new_block_names(flat):
    flat = to_old_block_names(flat)
  flat.update(encode_meta(meta or {}))
  save_arrays(flat, path)


def save_arrays(flat: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Flat named arrays as an `.npz` (process 0 writes; local or in a bucket), in one
  write so that an interrupted save never leaves a truncated file behind."""
  if jax.process_index() != 0:
    return
  buffer = io.BytesIO()
  np.savez(buffer, **{key: _to_host(value) for key, value in flat.items()})
  storage.write_bytes(path, buffer.getvalue())
