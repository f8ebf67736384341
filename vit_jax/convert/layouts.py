"""Parameter layouts of other frameworks as renaming rules, applied in both directions.

A layout is a list of `Rule(ours, theirs, kind)`: our flat '/'-joined key, their key,
and how the array changes shape between the two (torch keeps Linear weights as
(out, in), convolutions as (out, in, h, w) and attention heads flattened). Fused
tensors (timm's qkv, torch's in_proj) are split into virtual keys first, so each rule
maps one array. Both directions run through the same rules, which is why a round trip
is exact.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping

import numpy as np

from vit_jax.errors import UserError


def has_class_token(arch: dict) -> bool:
  """As the ViT decides: `class_token`, or by default only for classifier='token'."""
  if arch.get("class_token") is not None:
    return bool(arch["class_token"])
  return arch.get("classifier", "token") == "token"


@dataclasses.dataclass(frozen=True)
class Rule:
  ours: str
  theirs: str
  kind: str = "same"


@dataclasses.dataclass(frozen=True)
class Fused:
  """Their `key` is the concatenation of `parts` (virtual keys) along axis 0."""
  key: str
  parts: tuple[str, ...]


# kind -> (theirs -> ours, ours -> theirs); `heads` is the number of attention heads.
def _transforms(heads: int) -> dict[str, tuple[Callable, Callable]]:
  def split_heads(x):
    return x.reshape(heads, -1, *x.shape[1:])
  return {
      "same": (lambda x: x, lambda x: x),
      "linear": (lambda x: x.T, lambda x: x.T),
      "conv": (lambda x: x.transpose(2, 3, 1, 0), lambda x: x.transpose(3, 2, 0, 1)),
      # (heads * head_dim, in) <-> (in, heads, head_dim)
      "heads_in": (lambda x: split_heads(x).transpose(2, 0, 1),
                   lambda x: x.transpose(1, 2, 0).reshape(-1, x.shape[0])),
      "heads_bias": (split_heads, lambda x: x.reshape(-1)),
      # (out, heads * head_dim) <-> (heads, head_dim, out)
      "heads_out": (lambda x: x.T.reshape(heads, -1, x.shape[0]),
                    lambda x: x.reshape(-1, x.shape[-1]).T),
      # an embedding table (tokens, dim) <-> (1, tokens, dim)
      "table": (lambda x: x[None], lambda x: x[0]),
      # a single token (dim,) <-> (1, 1, dim): CLIP's class embedding
      "token": (lambda x: x[None, None], lambda x: x[0, 0]),
  }


def _unfuse(state: Mapping[str, np.ndarray], fused: list[Fused]) -> dict[str, np.ndarray]:
  state = dict(state)
  for group in fused:
    if group.key in state:
      for part, value in zip(group.parts, np.split(state.pop(group.key), len(group.parts))):
        state[part] = value
  return state


def _fuse(state: dict[str, np.ndarray], fused: list[Fused]) -> dict[str, np.ndarray]:
  for group in fused:
    if all(part in state for part in group.parts):
      state[group.key] = np.concatenate([state.pop(part) for part in group.parts])
  return state


def import_state(state: Mapping[str, np.ndarray], rules: list[Rule], *, heads: int,
                 fused: list[Fused] = (), ignore: Callable[[str], bool] = lambda k: False,
                 source: str = "checkpoint") -> dict[str, np.ndarray]:
  """Their state dict -> our flat params. Every rule must find its key, and every key of
  theirs must be used or explicitly ignored: a silent partial load is the worst bug."""
  state = _unfuse(state, list(fused))
  transforms = _transforms(heads)
  missing = [rule.theirs for rule in rules if rule.theirs not in state]
  if missing:
    raise UserError(f"The {source} lacks {len(missing)} expected tensor(s), e.g. "
                    f"{missing[:3]}; is it the architecture that was inferred?")
  used = {rule.theirs for rule in rules}
  unused = sorted(k for k in state if k not in used and not ignore(k))
  if unused:
    raise UserError(f"The {source} has {len(unused)} tensor(s) no rule maps, e.g. "
                    f"{unused[:3]}: an architecture option is not supported.")
  return {rule.ours: np.asarray(transforms[rule.kind][0](np.asarray(state[rule.theirs])),
                                np.float32)
          for rule in rules}


def export_state(flat: Mapping[str, np.ndarray], rules: list[Rule], *, heads: int,
                 fused: list[Fused] = ()) -> dict[str, np.ndarray]:
  """Our flat params -> their state dict (contiguous arrays, ready for safetensors)."""
  transforms = _transforms(heads)
  unmapped = sorted(set(flat) - {rule.ours for rule in rules})
  if unmapped:
    raise UserError(f"These parameters have no counterpart in the target format: "
                    f"{unmapped[:4]}.")
  state = {rule.theirs: np.ascontiguousarray(transforms[rule.kind][1](np.asarray(flat[rule.ours])))
           for rule in rules}
  return _fuse(state, list(fused))


def block_rules(num_layers: int, per_block: list[tuple[str, str, str]]) -> list[Rule]:
  """Expands '{i}' in per-block (ours, theirs, kind) rules over the layers."""
  return [Rule(ours.format(i=i), theirs.format(i=i), kind)
          for i in range(num_layers) for ours, theirs, kind in per_block]


def dense(ours: str, theirs: str) -> list[tuple[str, str, str]]:
  """A Linear layer: kernel transposed, bias as is."""
  return [(f"{ours}/kernel", f"{theirs}.weight", "linear"), (f"{ours}/bias", f"{theirs}.bias", "same")]


def norm(ours: str, theirs: str) -> list[tuple[str, str, str]]:
  return [(f"{ours}/scale", f"{theirs}.weight", "same"), (f"{ours}/bias", f"{theirs}.bias", "same")]


def heads(ours: str, theirs: str, *, out: bool = False) -> list[tuple[str, str, str]]:
  """An attention projection in our (embed, heads, head_dim) layout."""
  if out:
    return [(f"{ours}/kernel", f"{theirs}.weight", "heads_out"), (f"{ours}/bias", f"{theirs}.bias", "same")]
  return [(f"{ours}/kernel", f"{theirs}.weight", "heads_in"),
          (f"{ours}/bias", f"{theirs}.bias", "heads_bias")]


# CLIP's projection (transformers' visual_projection, OpenCLIP's proj) is a bias-free
# linear layer; here it is the head, with a bias of zeros.
def with_zero_head_bias(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  if "head/kernel" in flat:
    flat = {**flat, "head/bias": np.zeros(flat["head/kernel"].shape[-1], np.float32)}
  return flat


def without_head_bias(flat: Mapping[str, np.ndarray], target: str) -> dict[str, np.ndarray]:
  """The head as a bias-free projection: its bias must be zero (else it is a classifier)."""
  flat = dict(flat)
  bias = flat.pop("head/bias", None)
  if bias is not None and np.any(bias != 0):
    raise UserError(f"{target}'s projection has no bias but this head's is non-zero (a "
                    f"classifier, not the projection); export to timm or .npz instead.")
  return flat


def patches_to_conv(weight: np.ndarray, channels: int = 3) -> np.ndarray:
  """A Linear on flattened patches (D, P*P*C), pixels row-major then channels (SigLIP 2,
  timm's NaFlexViT) -> the patch convolution's (D, C, P, P)."""
  side = math.isqrt(weight.shape[1] // channels)
  return weight.reshape(weight.shape[0], side, side, channels).transpose(0, 3, 1, 2)


def conv_to_patches(weight: np.ndarray) -> np.ndarray:
  """(D, C, P, P) -> (D, P*P*C): the inverse of `patches_to_conv`."""
  return weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
