"""BiT checkpoints (`vit_jax.models.bit`), read and written in the three layouts they ship
in:

- the published `.npz` of the BiT paper (gs://bit_models/BiT-{S,M}-R{50,101,152}x{1..4}.npz):
  `resnet/root_block/standardized_conv2d/kernel`, `resnet/block{b}/unit{uu}/{a,b,c}/
  {standardized_conv2d/kernel, group_norm/{gamma,beta}}` (a, b, c: the unit's three
  pre-activated convolutions), `resnet/block{b}/unit01/a/proj/standardized_conv2d/kernel`,
  `resnet/group_norm/*` (the final norm), `resnet/head/conv2d/*` (a 1x1 convolution), as
  big_vision's `models/bit_paper.py` loads them;
- big_vision's `bit_paper.py` parameters: ours, with GroupNorm parameters (1, 1, 1, C)
  and the final norm named `norm-pre-head`;
- timm's `resnetv2_*_bit` state dicts (`stem.conv`, `stages.{s}.blocks.{u}.{norm1, conv1,
  ..., downsample.conv}`, `norm`, `head.fc` as a 1x1 convolution).
BiT's input is [-1, 1] (mean = std = 0.5).
"""
from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np

from vit_jax.errors import UserError
from vit_jax.models.params import flatten, unflatten

PREPROCESSING = {"resolution": 224, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                 "resize": "bilinear"}
_GROUPS = {"a": "1", "b": "2", "c": "3"}
_UNIT = re.compile(r"^(block\d+)/(unit\d+)/")


def arch_of(params: dict, *, stem_pool_padding: str = "zeros") -> dict[str, Any]:
  """The architecture of a BiT tree in our layout."""
  width = params["root_block"]["conv_root"]["kernel"].shape[-1]
  blocks = sorted((k for k in params if re.fullmatch(r"block\d+", k)), key=lambda k: int(k[5:]))
  return dict(family="bit", width_factor=width / 64,
              block_sizes=tuple(len(params[b]) for b in blocks),
              stem_pool_padding=stem_pool_padding)


# --- The published .npz ------------------------------------------------------------------
def is_published(flat: dict) -> bool:
  return any(k.startswith("resnet/root_block/") for k in flat)


def from_published(flat: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
  """(arch, params, preprocessing) of a published BiT `.npz`."""
  # Some files number their convolutions (standardized_conv2d_1/...): one name each.
  flat = {re.sub(r"/standardized_conv2d_\d+/", "/standardized_conv2d/", k): v
          for k, v in flat.items()}
  ours = {"root_block/conv_root/kernel": flat["resnet/root_block/standardized_conv2d/kernel"],
          "pre_head_norm/scale": flat["resnet/group_norm/gamma"],
          "pre_head_norm/bias": flat["resnet/group_norm/beta"]}
  if "resnet/head/conv2d/kernel" in flat:
    ours["head/kernel"] = flat["resnet/head/conv2d/kernel"].reshape(
        flat["resnet/head/conv2d/kernel"].shape[-2:])
    ours["head/bias"] = flat["resnet/head/conv2d/bias"]
  for key, value in flat.items():
    found = re.fullmatch(r"resnet/(block\d+/unit\d+)/([abc])/(proj/)?"
                         r"(standardized_conv2d/kernel|group_norm/gamma|group_norm/beta)", key)
    if not found:
      continue
    unit, group, proj, leaf = found.groups()
    if proj:
      ours[f"{unit}/conv_proj/kernel"] = value
    elif leaf.startswith("standardized"):
      ours[f"{unit}/conv{_GROUPS[group]}/kernel"] = value
    else:
      ours[f"{unit}/gn{_GROUPS[group]}/{'scale' if leaf.endswith('gamma') else 'bias'}"] = value
  params = unflatten(ours)
  return arch_of(params), params, dict(PREPROCESSING)


def to_published(params: dict) -> dict[str, np.ndarray]:
  """Our BiT params as the published `.npz`'s flat arrays (the inverse of
  `from_published`)."""
  letters = {v: k for k, v in _GROUPS.items()}
  flat_out = {}
  for key, value in flatten(params).items():
    value = np.asarray(value)
    if key == "root_block/conv_root/kernel":
      flat_out["resnet/root_block/standardized_conv2d/kernel"] = value
    elif key.startswith("pre_head_norm/"):
      flat_out[f"resnet/group_norm/{'gamma' if key.endswith('scale') else 'beta'}"] = value
    elif key == "head/kernel":
      flat_out["resnet/head/conv2d/kernel"] = value[None, None]
    elif key == "head/bias":
      flat_out["resnet/head/conv2d/bias"] = value
    else:
      unit, layer, leaf = key.rsplit("/", 2)
      if layer == "conv_proj":
        flat_out[f"resnet/{unit}/a/proj/standardized_conv2d/kernel"] = value
      elif layer.startswith("conv"):
        flat_out[f"resnet/{unit}/{letters[layer[4:]]}/standardized_conv2d/kernel"] = value
      else:
        name = "gamma" if leaf == "scale" else "beta"
        flat_out[f"resnet/{unit}/{letters[layer[2:]]}/group_norm/{name}"] = value
  return flat_out


# --- big_vision's bit_paper.py ---------------------------------------------------------
def is_big_vision(flat: dict) -> bool:
  return "root_block/conv_root/kernel" in flat and "norm-pre-head/scale" in flat


def from_big_vision(flat: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
  """(arch, params, preprocessing) of big_vision `bit_paper.Model` parameters (flat)."""
  ours = {}
  for key, value in flat.items():
    key = key.replace("norm-pre-head/", "pre_head_norm/")
    is_norm = key.startswith("pre_head_norm/") or re.search(r"/gn\w+/(scale|bias)$", key)
    ours[key] = np.reshape(value, value.shape[-1:]) if is_norm else value
  params = unflatten(ours)
  # big_vision pools the root over -inf padding.
  return arch_of(params, stem_pool_padding="-inf"), params, dict(PREPROCESSING)


def to_big_vision(params: dict) -> dict[str, np.ndarray]:
  """Our BiT params as big_vision's `bit_paper.Model` takes them (flat)."""
  flat_out = {}
  for key, value in flatten(params).items():
    value = np.asarray(value)
    is_norm = key.startswith("pre_head_norm/") or re.search(r"/gn\w+/(scale|bias)$", key)
    key = key.replace("pre_head_norm/", "norm-pre-head/")
    flat_out[key] = value.reshape(1, 1, 1, -1) if is_norm else value
  return flat_out


# --- timm's resnetv2_*_bit ---------------------------------------------------------------
def is_timm(state: dict) -> bool:
  return "stem.conv.weight" in state and any(".blocks.0.norm1." in k for k in state)


def _kernel_from_torch(weight: np.ndarray) -> np.ndarray:
  return np.transpose(weight, (2, 3, 1, 0))  # (out, in, h, w) -> (h, w, in, out)


def from_timm(state: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
  """(arch, params, preprocessing) of a timm `resnetv2_*_bit` state dict."""
  ours = {}
  for key, value in state.items():
    value = np.asarray(value)
    if key == "stem.conv.weight":
      ours["root_block/conv_root/kernel"] = _kernel_from_torch(value)
    elif key.startswith("norm."):
      ours[f"pre_head_norm/{'scale' if key.endswith('weight') else 'bias'}"] = value
    elif key == "head.fc.weight":
      ours["head/kernel"] = value.reshape(value.shape[:2]).T
    elif key == "head.fc.bias":
      ours["head/bias"] = value
    else:
      found = re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(norm\d|conv\d|downsample\.conv)"
                           r"\.(weight|bias)", key)
      if not found:
        raise UserError(f"timm BiT state dict: unexpected tensor {key} {value.shape}.")
      stage, unit, layer, leaf = found.groups()
      prefix = f"block{int(stage) + 1}/unit{int(unit) + 1:02d}"
      if layer == "downsample.conv":
        ours[f"{prefix}/conv_proj/kernel"] = _kernel_from_torch(value)
      elif layer.startswith("conv"):
        ours[f"{prefix}/{layer}/kernel"] = _kernel_from_torch(value)
      else:
        ours[f"{prefix}/gn{layer[4:]}/{'scale' if leaf == 'weight' else 'bias'}"] = value
  params = unflatten(ours)
  return arch_of(params), params, dict(PREPROCESSING)


def to_timm(params: dict) -> dict[str, np.ndarray]:
  """Our BiT params as a timm ResNetV2 state dict (the inverse of `from_timm`)."""
  state = {}
  for key, value in flatten(params).items():
    value = np.asarray(value)
    if key == "root_block/conv_root/kernel":
      state["stem.conv.weight"] = np.transpose(value, (3, 2, 0, 1))
    elif key.startswith("pre_head_norm/"):
      state[f"norm.{'weight' if key.endswith('scale') else 'bias'}"] = value
    elif key == "head/kernel":
      state["head.fc.weight"] = value.T[:, :, None, None]
    elif key == "head/bias":
      state["head.fc.bias"] = value
    else:
      block, unit, layer, leaf = key.split("/")
      prefix = f"stages.{int(block[5:]) - 1}.blocks.{int(unit[4:]) - 1}"
      if layer.startswith("conv"):
        name = "downsample.conv" if layer == "conv_proj" else layer
        state[f"{prefix}.{name}.weight"] = np.transpose(value, (3, 2, 0, 1))
      else:
        state[f"{prefix}.norm{layer[2:]}.{'weight' if leaf == 'scale' else 'bias'}"] = value
  return state


def timm_name(arch: dict) -> Optional[str]:
  """timm's registered name of a published size (resnetv2_50x1_bit), else None."""
  depths = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
  depth = depths.get(tuple(arch["block_sizes"]))
  width = arch.get("width_factor", 1)
  return f"resnetv2_{depth}x{int(width)}_bit" if depth and width == int(width) else None


def timm_code(arch: dict, num_classes: int, weights: str) -> str:
  """One line of Python, runnable as printed, that builds the timm model and loads the
  state dict written to `weights`."""
  name = timm_name(arch)
  if name:
    build = f"timm.create_model({name!r}, num_classes={num_classes})"
  else:  # any other size: timm's ResNetV2 as its BiT models build it.
    build = (f"timm.models.resnetv2.ResNetV2(layers={list(arch['block_sizes'])!r}, "
             f"width_factor={arch.get('width_factor', 1)!r}, num_classes={num_classes}, "
             f"stem_type='fixed', conv_layer=functools.partial(timm.layers.StdConv2d, "
             f"eps=1e-8))")
  return (f"import functools, safetensors.torch, timm; model = {build}; "
          f"model.load_state_dict(safetensors.torch.load_file({weights!r}))")
