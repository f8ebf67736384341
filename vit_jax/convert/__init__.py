"""Checkpoints from everywhere, as one thing: architecture, parameters, preprocessing.

`read(path)` takes a published or converted `.npz`, a big_vision `.npz`, a Hugging Face
model directory, a timm `.safetensors` / `.pth` file, or a vit_jax run's workdir, and
returns a `Checkpoint` whose params are in vit_jax's layout. `write_npz`, `write_timm`
and `write_hf` save one. Nothing here needs torch, timm or transformers, except `.pth`
and `pytorch_model.bin` files (torch pickles), which need torch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Optional

import numpy as np

from vit_jax import npz_format
from vit_jax.config import pp_resolution
from vit_jax.convert import big_vision_format, hf_format, timm_format
from vit_jax.errors import UserError

# The preprocessing of the published ViT / Mixer files and of big_vision: [-1, 1] inputs.
INCEPTION = {"mean": timm_format.INCEPTION_MEAN, "std": timm_format.INCEPTION_STD,
             "resize": "bilinear"}


@dataclasses.dataclass
class Checkpoint:
  arch: dict[str, Any]            # family + hyper-parameters for vit_jax.models.create_model.
  params: dict[str, Any]          # nested, vit_jax layout (per-layer blocks).
  preprocessing: dict[str, Any]   # resolution, mean, std, resize.
  source: str                     # what it was read from, for the log.
  notes: list[str] = dataclasses.field(default_factory=list)
  # The source states its architecture and preprocessing (converted .npz, timm, Hugging
  # Face, big_vision, a run's config.json); a published .npz's are inferred or named.
  self_described: bool = True

  @property
  def meta(self) -> dict[str, dict[str, Any]]:
    return {"arch": self.arch, "preprocessing": self.preprocessing}

  @property
  def num_classes(self) -> Optional[int]:
    return npz_format.head_classes(self.params)


def _load_tensors(path: str) -> dict[str, np.ndarray]:
  """A .safetensors (numpy, no torch) or a torch pickle (.pth, .bin, .pt)."""
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return load_file(path)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f"{path} is a torch pickle: reading it needs torch (pip install torch), "
                    f"or convert the .safetensors version instead.") from None
  state = torch.load(path, map_location="cpu", weights_only=True)
  for key in ("state_dict", "model", "module"):  # training checkpoints wrap the weights.
    if isinstance(state, dict) and key in state and isinstance(state[key], dict):
      state = state[key]
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
          for k, v in state.items() if hasattr(v, "numpy")}


def _read_json(path: str) -> Optional[dict]:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _timm_name(path: str, timm_model: Optional[str]) -> Optional[str]:
  """The timm model name: given, or from a Hub-style config.json beside the file."""
  if timm_model:
    return timm_model
  config = _read_json(os.path.join(os.path.dirname(path), "config.json")) or {}
  name = config.get("architecture") or config.get("model_name")
  return name or os.path.basename(os.path.dirname(path)) or None


def _read_hf(directory: str) -> Checkpoint:
  config = _read_json(os.path.join(directory, "config.json"))
  weights = [os.path.join(directory, name) for name in ("model.safetensors", "pytorch_model.bin")]
  weights = [w for w in weights if os.path.exists(w)]
  if not weights:
    raise UserError(f"{directory} has a config.json but no model.safetensors or "
                    f"pytorch_model.bin.")
  processor = _read_json(os.path.join(directory, "preprocessor_config.json"))
  arch, flat, preprocessing, notes = hf_format.to_params(config, _load_tensors(weights[0]),
                                                         processor)
  return Checkpoint(arch, npz_format.unflatten(flat), preprocessing,
                    f"Hugging Face {config.get('model_type')} model {directory}", notes)


def is_hf_directory(directory: str) -> bool:
  config = _read_json(os.path.join(directory, "config.json")) or {}
  return "model_type" in config or "vision_config" in config


def is_run_directory(path: str) -> bool:
  """A run's workdir or checkpoint directory (a directory, not a Hugging Face one)."""
  return os.path.isdir(path) and not is_hf_directory(path)


def _read_run(directory: str) -> Checkpoint:
  """A run's workdir (or its checkpoint directory: then parameters only)."""
  from vit_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from vit_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.models import MODEL_PRESETS, resolve_model_name  # pylint: disable=g-import-not-at-top
  params, _ = checkpoints.restore_params_as_numpy(directory)
  if not os.path.exists(os.path.join(directory, "config.json")):
    return Checkpoint({}, npz_format.unscan_params(params), {}, f"checkpoints {directory}",
                      self_described=False)
  config = config_lib.from_run(directory)
  try:
    arch = dict(MODEL_PRESETS[resolve_model_name(config.model_name)])
  except UserError:
    arch = {"family": config.model_name}
  arch.update({k: v for k, v in config.model.to_dict().items() if v is not None
               and k not in _TRAINING_ONLY})
  preprocessing = preprocessing_from_pp(config.pp_eval)
  return Checkpoint(arch, npz_format.unscan_params(params), preprocessing, f"run {directory}")


# config.model fields that do not describe the architecture.
_TRAINING_ONLY = ("dtype", "dropout_rate", "attention_dropout_rate", "stochastic_depth_rate",
                  "head_bias_init", "head_kernel_init_std", "attention_implementation",
                  "remat_policy", "scan_layers")


def preprocessing_from_pp(pp: str) -> dict[str, Any]:
  """Resolution and normalisation of an eval pp string ('...|resize(224)|value_range(-1, 1)')."""
  resolution = pp_resolution(pp) or 224
  normalize = re.search(r"normalize\(\(([^)]*)\),\s*\(([^)]*)\)\)", pp)
  if normalize:
    mean = tuple(float(v) for v in normalize.group(1).split(","))
    std = tuple(float(v) for v in normalize.group(2).split(","))
    return {"resolution": resolution, "mean": mean, "std": std, "resize": "bilinear"}
  return {"resolution": resolution, **INCEPTION}


def _read_npz(path: str, model_name: Optional[str], num_heads: Optional[int]) -> Checkpoint:
  flat = npz_format.read_npz(path)  # read once: checkpoints can be gigabytes.
  params, meta = npz_format.split_meta(flat)
  if meta.get("arch"):
    return Checkpoint(meta["arch"], params, meta.get("preprocessing") or {}, f"{path}")
  if big_vision_format.is_big_vision(flat):
    arch, params, preprocessing = big_vision_format.to_params(flat, num_heads=num_heads)
    return Checkpoint(arch, params, preprocessing, f"big_vision checkpoint {path}")
  arch = published_arch(params, model_name)
  grid = npz_format.posemb_grid(params)
  patch = arch["patch_size"] * (16 if arch.get("resnet_layers") else 1)
  resolution = grid[0] * patch if grid else 224
  return Checkpoint(arch, params, {"resolution": resolution, **INCEPTION}, f"{path}",
                    self_described=False)


def published_arch(params: dict, model_name: Optional[str] = None) -> dict[str, Any]:
  """The architecture of a published ViT / Mixer .npz, read off its shapes (a preset name
  is needed only for the R50 hybrids)."""
  from vit_jax.models import MODEL_PRESETS, resolve_model_name  # pylint: disable=g-import-not-at-top
  if model_name:
    arch = dict(MODEL_PRESETS[resolve_model_name(model_name)])
    _check_matches(model_name, arch, params)
    if arch["family"] == "vit":
      arch.update(npz_format.model_overrides(params))
    return arch
  if "MixerBlock_0" in params:
    block = params["MixerBlock_0"]
    return dict(family="mixer", patch_size=params["stem"]["kernel"].shape[0],
                hidden_size=params["stem"]["kernel"].shape[-1],
                num_layers=sum(k.startswith("MixerBlock_") for k in params),
                tokens_mlp_dim=block["token_mixing"]["Dense_0"]["kernel"].shape[-1],
                channels_mlp_dim=block["channel_mixing"]["Dense_0"]["kernel"].shape[-1])
  if "conv_root" in params:
    raise UserError("A hybrid (R50+ViT) .npz needs its preset name: --model=R50+ViT-B_16.")
  if "Transformer" not in params:
    raise UserError("This .npz holds neither a ViT nor an MLP-Mixer (no Transformer / "
                    "MixerBlock_0 parameters).")
  encoder = npz_format.unscan_params(params)["Transformer"]
  block = encoder["encoderblock_0"]
  query = block["MultiHeadDotProductAttention_1"]["query"]["kernel"]
  kernel = params["embedding"]["kernel"]
  return dict(family="vit", patch_size=kernel.shape[0], hidden_size=kernel.shape[-1],
              num_layers=sum(k.startswith("encoderblock_") for k in encoder),
              num_heads=query.shape[1], mlp_dim=block["MlpBlock_3"]["Dense_0"]["kernel"].shape[-1],
              **npz_format.model_overrides(params))


def _check_matches(model_name: str, arch: dict, params: dict) -> None:
  """A preset named for a file must have the file's patch size and width."""
  kernel = (params.get("embedding") or params.get("stem") or {}).get("kernel")
  if kernel is None or arch.get("resnet_layers"):
    return
  for field, value in (("patch_size", kernel.shape[0]), ("hidden_size", kernel.shape[-1])):
    if arch[field] != value:
      raise UserError(f"{model_name} has {field}={arch[field]} but the checkpoint's is "
                      f"{value}; leave the model name out to read the architecture off the "
                      f"file.")


def read(path: str, *, timm_model: Optional[str] = None, model_name: Optional[str] = None,
         num_heads: Optional[int] = None) -> Checkpoint:
  """Any supported checkpoint -> Checkpoint (see the module docstring)."""
  path = os.path.expanduser(os.fspath(path))
  if os.path.isdir(path):
    return _read_hf(path) if is_hf_directory(path) else _read_run(path)
  if not os.path.exists(path):
    raise UserError(f"Checkpoint {path!r} does not exist.")
  if path.endswith(".npz"):
    return _read_npz(path, model_name, num_heads)
  if path.endswith((".safetensors", ".pth", ".pt", ".bin")):
    name = _timm_name(path, timm_model)
    arch, flat, preprocessing = timm_format.to_params(_load_tensors(path), name=name,
                                                      num_heads=num_heads)
    return Checkpoint(arch, npz_format.unflatten(flat), preprocessing,
                      f"timm checkpoint {path}" + (f" ({name})" if name else ""))
  raise UserError(f"Cannot tell the format of {path!r}: expected a .npz, a .safetensors / "
                  f".pth (timm), a Hugging Face model directory or a vit_jax workdir.")


def write_npz(checkpoint: Checkpoint, path: str) -> None:
  npz_format.save_npz(checkpoint.params, path, meta=checkpoint.meta)


def _save_safetensors(state: dict[str, np.ndarray], path: str) -> None:
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file({k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}, path)


def write_timm(checkpoint: Checkpoint, path: str) -> dict[str, Any]:
  """A timm state dict as .safetensors; returns the VisionTransformer kwargs to build it."""
  arch, flat = timm_format.timm_compatible(checkpoint.arch,
                                           npz_format.flatten(checkpoint.params))
  _save_safetensors(timm_format.from_params(arch, flat), path)
  return timm_format.timm_kwargs(arch, checkpoint.num_classes or 0)


def write_hf(checkpoint: Checkpoint, directory: str) -> str:
  """A transformers model directory; returns its architecture class name."""
  flat = npz_format.flatten(checkpoint.params)
  config, state, processor = hf_format.from_params(checkpoint.arch, flat, checkpoint.preprocessing)
  os.makedirs(directory, exist_ok=True)
  _save_safetensors(state, os.path.join(directory, "model.safetensors"))
  for name, content in (("config.json", config), ("preprocessor_config.json", processor)):
    with open(os.path.join(directory, name), "w") as f:
      json.dump(content, f, indent=2)
  return config["architectures"][0]
