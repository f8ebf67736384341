"""Writing a `Checkpoint` out: vit_jax's `.npz` (architecture and preprocessing recorded),
a timm state dict, a Hugging Face model directory, an OpenCLIP image tower."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from vit_jax import storage
from vit_jax.convert import (big_vision_format, bit_format, hf_format, npz_format,
                             openclip_format, timm_format)
from vit_jax.convert.checkpoint import Checkpoint
from vit_jax.errors import UserError
from vit_jax.models import vit_layout
from vit_jax.models.params import flatten


def write_npz(checkpoint: Checkpoint, path: str) -> None:
  npz_format.save_npz(checkpoint.params, path, meta=checkpoint.meta)


def _save_safetensors(state: dict[str, np.ndarray], path) -> None:
  from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
  storage.write_bytes(path, save({k: np.ascontiguousarray(v, np.float32)
                                  for k, v in state.items()}))


def _arch_with_grid(checkpoint: Checkpoint) -> dict[str, Any]:
  """The architecture with its position-embedding grid read off the parameters when it
  does not say (a run's arch leaves it to the input size): other frameworks store it."""
  arch = dict(checkpoint.arch)
  if arch.get("family") == "vit" and not arch.get("posemb_grid"):
    grid = vit_layout.posemb_grid(checkpoint.params)
    resolution = checkpoint.preprocessing.get("resolution")
    if grid is None and resolution:  # a fixed table: the grid of the trained input size.
      side = int(resolution) // arch["patch_size"]
      grid = (side, side)
    if grid is not None:
      arch["posemb_grid"] = tuple(grid)
  return arch


def write_timm(checkpoint: Checkpoint, path: str) -> dict[str, Any]:
  """A timm state dict as .safetensors; returns the kwargs to build its model
  (`timm_format.timm_code` prints the line)."""
  if checkpoint.arch.get("family") == "bit":
    _save_safetensors(bit_format.to_timm(checkpoint.params), path)
    return {"num_classes": checkpoint.num_classes or 0}
  arch, flat = timm_format.timm_compatible(_arch_with_grid(checkpoint),
                                           flatten(checkpoint.params))
  _save_safetensors(timm_format.from_params(arch, flat), path)
  return timm_format.timm_kwargs(arch, checkpoint.num_classes or 0)


def write_big_vision(checkpoint: Checkpoint, path: str) -> None:
  """A ViT in big_vision's `.npz` layout (its models/vit.py and FlexiViT load it)."""
  npz_format.save_arrays(big_vision_format.from_params(checkpoint.arch, checkpoint.params),
                         path)


def write_bit_published(checkpoint: Checkpoint, path: str) -> None:
  """A BiT model in the published BiT `.npz` layout (`resnet/...`)."""
  if checkpoint.arch.get("family") != "bit":
    raise UserError(f"--to=bit_published writes BiT models; this is a "
                    f"{checkpoint.arch.get('family')} model (use --to=npz).")
  npz_format.save_arrays(bit_format.to_published(checkpoint.params), path)


def write_hf(checkpoint: Checkpoint, directory: str) -> str:
  """A transformers model directory; returns its architecture class name."""
  config, state, processor = hf_format.from_params(_arch_with_grid(checkpoint),
                                                   flatten(checkpoint.params),
                                                   checkpoint.preprocessing)
  directory = storage.path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  _save_safetensors(state, directory / "model.safetensors")
  for name, content in (("config.json", config), ("preprocessor_config.json", processor)):
    storage.write_text(directory / name, json.dumps(content, indent=2))
  return config["architectures"][0]


def write_openclip(checkpoint: Checkpoint, path: str) -> None:
  """The `visual.*` tensors of an OpenCLIP model, as .safetensors."""
  _save_safetensors(openclip_format.from_params(_arch_with_grid(checkpoint),
                                                flatten(checkpoint.params)), path)
