"""Writing a `Checkpoint` out: vit_jax's `.npz` (architecture and preprocessing recorded),
a timm state dict, a Hugging Face model directory."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from vit_jax import storage
from vit_jax.convert import hf_format, npz_format, timm_format
from vit_jax.convert.checkpoint import Checkpoint
from vit_jax.models.params import flatten


def write_npz(checkpoint: Checkpoint, path: str) -> None:
  npz_format.save_npz(checkpoint.params, path, meta=checkpoint.meta)


def _save_safetensors(state: dict[str, np.ndarray], path) -> None:
  from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
  storage.write_bytes(path, save({k: np.ascontiguousarray(v, np.float32)
                                  for k, v in state.items()}))


def write_timm(checkpoint: Checkpoint, path: str) -> dict[str, Any]:
  """A timm state dict as .safetensors; returns the VisionTransformer kwargs to build it."""
  arch, flat = timm_format.timm_compatible(checkpoint.arch, flatten(checkpoint.params))
  _save_safetensors(timm_format.from_params(arch, flat), path)
  return timm_format.timm_kwargs(arch, checkpoint.num_classes or 0)


def write_hf(checkpoint: Checkpoint, directory: str) -> str:
  """A transformers model directory; returns its architecture class name."""
  config, state, processor = hf_format.from_params(checkpoint.arch, flatten(checkpoint.params),
                                                   checkpoint.preprocessing)
  directory = storage.path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  _save_safetensors(state, directory / "model.safetensors")
  for name, content in (("config.json", config), ("preprocessor_config.json", processor)):
    storage.write_text(directory / name, json.dumps(content, indent=2))
  return config["architectures"][0]
