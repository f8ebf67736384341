"""Parameter groups by name: which parameters train, and each one's learning-rate and
weight-decay multiplier. Names are the '/'-joined parameter paths (`parameters.txt`,
e.g. `Transformer/encoderblock_3/MlpBlock_3/Dense_0/kernel`); patterns are Python regexes
searched in them, first match wins.

- `frozen`: matching parameters get no update and no optimizer state (optax's
  `multi_transform`: their state is an empty node);
- `lr_mults`, `wd_mults`: `((regex, multiplier), ...)`;
- `layer_decay` d (BEiT / MAE / DINOv2 fine-tuning): block i of L gets d ** (L - i), the
  embeddings (patch embedding, class token, position embedding, a hybrid's ResNet stem)
  d ** (L + 1), the final norm and the head 1. A scanned block's parameters get one
  multiplier per layer along their leading axis.

Multipliers scale the update after the learning rate, so a parameter's effective learning
rate is exactly `schedule(step) * layer_decay_factor * lr_mult`."""
from __future__ import annotations

import re
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax.errors import UserError
from vit_jax.models import lora as lora_lib

# With LoRA and no `frozen` of the user's: only the adapters and the head train.
LORA_FROZEN = r"^(?!(?:head|head_dist)/)(?!.*/lora_[ab]$)"

# Block i's parameters (per-layer layouts: ViT, hybrid, Mixer) and a scanned block.
_BLOCK = re.compile(r"(?:^|/)(?:encoderblock|MixerBlock)_(\d+)/")
_SCANNED = re.compile(r"(?:^|/)encoderblock/")
# After the blocks: the final norm, pre-logits and the head(s).
_TOP = re.compile(r"^(head|head_dist|pre_logits|Transformer/encoder_norm|pre_head_layer_norm"
                  r"|fc_norm|norm)(/|$)")


def name_of(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def names(tree) -> list[str]:
  return [name_of(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def num_layers(all_names: list[str], tree=None) -> int:
  blocks = {int(m.group(1)) for n in all_names if (m := _BLOCK.search(n))}
  if blocks:
    return max(blocks) + 1
  if tree is not None:  # scanned: the leading axis of any block parameter.
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      if _SCANNED.search(name_of(path)):
        return int(leaf.shape[0])
  return 0


def layer_factor(name: str, shape: tuple[int, ...], decay: float, layers: int):
  """`decay ** (L + 1 - layer_id)`: layer_id 0 for the embeddings, i + 1 for block i, L + 1
  for the top. A scanned block's leaf gets an array broadcasting over its layer axis."""
  if _TOP.search(name):
    return 1.0
  if (m := _BLOCK.search(name)) is not None:
    return float(decay ** (layers - int(m.group(1))))
  if _SCANNED.search(name):
    factors = decay ** (layers - np.arange(layers, dtype=np.float64))
    return factors.astype(np.float32).reshape((layers,) + (1,) * (len(shape) - 1))
  return float(decay ** (layers + 1))


def _first_match(name: str, rules) -> Optional[float]:
  for pattern, value in rules:
    if re.search(pattern, name):
      return float(value)
  return None


def lr_multiplier_fn(config) -> Optional[Callable[[str, tuple, int], Any]]:
  """(name, shape, num_layers) -> multiplier, or None when every multiplier is 1."""
  decay = float(config.get("layer_decay", 1.0) or 1.0)
  rules = tuple(config.get("lr_mults", ()) or ())
  if decay == 1.0 and not rules:
    return None

  def multiplier(name, shape, layers):
    factor = layer_factor(name, shape, decay, layers) if decay != 1.0 else 1.0
    return factor * (_first_match(name, rules) or 1.0)
  return multiplier


def scale_by_multipliers(fn: Callable[[str, tuple, int], Any]) -> optax.GradientTransformation:
  """Each update leaf times its multiplier (computed from the tree's names at trace time;
  leaves of a frozen group are empty nodes and are skipped)."""

  def update(updates, state, params=None):
    del params
    layers = num_layers(names(updates), updates)

    def scale(path, u):
      m = fn(name_of(path), tuple(u.shape), layers)
      return u if (np.ndim(m) == 0 and m == 1.0) else u * jnp.asarray(m, u.dtype)
    return jax.tree_util.tree_map_with_path(scale, updates), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def decays(name: str, value) -> bool:
  """Weight decay applies to weight matrices only (`*/kernel`, ndim >= 2)."""
  return name.rsplit("/", 1)[-1] == "kernel" and jnp.ndim(value) >= 2


def add_decayed_weights(weight_decay: float, config) -> optax.GradientTransformation:
  """AdamW's decoupled decay on weight matrices (kernels, ndim >= 2), each times its
  `wd_mults` multiplier (before the learning rate, as optax.adamw)."""
  rules = tuple(config.get("wd_mults", ()) or ())

  def factor(name: str, value) -> float:
    if not decays(name, value):
      return 0.0
    found = _first_match(name, rules)
    return weight_decay * (1.0 if found is None else found)

  def update(updates, state, params):
    def decay(path, u, p):
      f = factor(name_of(path), p)
      return u if f == 0.0 else u + f * p
    return jax.tree_util.tree_map_with_path(decay, updates, params), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def frozen_pattern(config) -> str:
  """The `frozen` regex in force ('' : nothing frozen)."""
  frozen = config.get("frozen", "") or ""
  if not frozen and lora_lib.LoraSpec.from_config(config) is not None:
    return LORA_FROZEN
  return frozen


def frozen_labels(pattern: str) -> Callable[[Any], Any]:
  """params -> 'frozen' / 'train' per leaf (optax.multi_transform's labels)."""
  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if re.search(pattern, name_of(path)) else "train", params)
  return labels


def check(config, abstract_params) -> None:
  """Before compiling: every pattern matches some parameter, something trains, the
  decay is in (0, 1]; one line each, naming the value and the fix."""
  all_names = names(abstract_params)
  example = all_names[min(3, len(all_names) - 1)] if all_names else ""

  def matches(field: str, pattern: str) -> list[str]:
    try:
      found = [n for n in all_names if re.search(pattern, n)]
    except re.error as e:
      raise UserError(f"{field}={pattern!r} is not a regex ({e}).") from None
    if not found:
      raise UserError(f"{field}={pattern!r} matches no parameter; names look like "
                      f"{example!r} (see parameters.txt or python -m vit_jax.cli.models "
                      f"--params={config.model_name}).")
    return found
  frozen = frozen_pattern(config)
  if frozen:
    if len(matches("frozen", frozen)) == len(all_names):
      raise UserError(f"frozen={frozen!r} freezes every parameter: nothing would train. "
                      f"Leave the head out, e.g. frozen='^(?!head/)'.")
  for field in ("lr_mults", "wd_mults"):
    rules = config.get(field, ()) or ()
    for rule in rules:
      if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
        raise UserError(f"{field}={tuple(rules)!r}: each entry is a (regex, multiplier) "
                        f"pair, e.g. (('^head/', 10.0),).")
      matches(field, rule[0])
      if not float(rule[1]) >= 0:
        raise UserError(f"{field}: multiplier {rule[1]!r} for {rule[0]!r} must be >= 0.")
  decay = config.get("layer_decay", 1.0)
  if decay is not None and not 0 < float(decay) <= 1:
    raise UserError(f"layer_decay={decay} must be in (0, 1] (1: off; 0.65-0.9 is usual "
                    f"for fine-tuning).")
  if decay not in (None, 1.0) and num_layers(all_names, abstract_params) == 0:
    raise UserError(f"layer_decay={decay}: {config.model_name} has no numbered blocks "
                    f"(encoderblock_i / MixerBlock_i) to decay over.")


def count_trained(config, abstract_params) -> tuple[int, int]:
  """(trained, total) parameter counts."""
  frozen = frozen_pattern(config)
  total = trained = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
    size = int(np.prod(leaf.shape))
    total += size
    if not (frozen and re.search(frozen, name_of(path))):
      trained += size
  return trained, total
