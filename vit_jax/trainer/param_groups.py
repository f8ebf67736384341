"""Parameter groups by name: which parameters train, and each one's learning-rate and
weight-decay multiplier. Names are the '/'-joined parameter paths (`parameters.txt`,
e.g. `Transformer/encoderblock_3/MlpBlock_3/Dense_0/kernel`); patterns are Python regexes
searched in them, first match wins.

- `frozen`: matching parameters get no update and no optimizer state (optax's
  `multi_transform`: their state is an empty node); `train_last_blocks` N freezes all but
  the family's last N blocks and what comes after them (`param_names.FamilyNames`);
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

import jax.numpy as jnp
import numpy as np
import optax

from vit_jax.errors import UserError
from vit_jax.models import family as family_lib
from vit_jax.models import family_of, lora as lora_lib
from vit_jax.param_names import HEADS, FamilyNames, map_named, named_leaves, names

# With LoRA and no `frozen` of the user's: only the adapters and the heads train.
LORA_FROZEN = rf"^(?!{'|'.join(re.escape(h) for h in HEADS)})(?!.*/lora_[ab]$)"


def family_names(config) -> FamilyNames:
  """What the config's model family says its parameter names mean."""
  return family_lib.names(family_of(config.model_name))


def layer_factor(name: str, shape: tuple[int, ...], decay: float, layers: int,
                 names_: FamilyNames):
  """`decay ** (L + 1 - layer_id)`: layer_id 0 for the embeddings, i + 1 for block i, L + 1
  for the top. A scanned block's leaf gets an array broadcasting over its layer axis."""
  if names_.is_top(name):
    return 1.0
  if (index := names_.block_index(name)) is not None:
    return float(decay ** (layers - index))
  if names_.is_scanned(name):
    factors = decay ** (layers - np.arange(layers, dtype=np.float64))
    return factors.astype(np.float32).reshape((layers,) + (1,) * (len(shape) - 1))
  return float(decay ** (layers + 1))


def _first_match(name: str, rules) -> Optional[float]:
  for pattern, value in rules:
    if re.search(pattern, name):
      return float(value)
  return None


def lr_multiplier_fn(config) -> Optional[Callable[[str, tuple, int], Any]]:
  """(name, shape, num_blocks) -> multiplier, or None when every multiplier is 1."""
  decay = float(config.get("layer_decay", 1.0) or 1.0)
  rules = tuple(config.get("lr_mults", ()) or ())
  if decay == 1.0 and not rules:
    return None
  names_ = family_names(config)

  def multiplier(name, shape, layers):
    factor = layer_factor(name, shape, decay, layers, names_) if decay != 1.0 else 1.0
    return factor * (_first_match(name, rules) or 1.0)
  return multiplier


def scale_by_multipliers(fn: Callable[[str, tuple, int], Any],
                         num_blocks: Callable[[Any], int]) -> optax.GradientTransformation:
  """Each update leaf times its multiplier (computed from the tree's names at trace time,
  `num_blocks(updates)` the model's blocks; leaves of a frozen group are empty nodes and
  are skipped)."""

  def update(updates, state, params=None):
    del params
    layers = num_blocks(updates)

    def scale(name, u):
      m = fn(name, tuple(u.shape), layers)
      return u if (np.ndim(m) == 0 and m == 1.0) else u * jnp.asarray(m, u.dtype)
    return map_named(scale, updates), state
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
    def decay(name, u, p):
      f = factor(name, p)
      return u if f == 0.0 else u + f * p
    return map_named(decay, updates, params), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def freezes(config) -> bool:
  """Whether some parameters are frozen (their labels are then `frozen_labels`)."""
  return bool(config.get("frozen") or config.get("train_last_blocks")
              or lora_lib.LoraSpec.from_config(config) is not None)


def frozen_pattern(config, params) -> str:
  """The `frozen` regex in force for `params` ('' : nothing frozen): the config's, or
  `train_last_blocks`' (all but the family's last N blocks and top), or LoRA's."""
  frozen = config.get("frozen", "") or ""
  last = int(config.get("train_last_blocks") or 0)
  if last:
    names_ = family_names(config)
    if names_.block is None:
      raise UserError(f"train_last_blocks={last}: the {config.model_name} family declares no "
                      f"numbered blocks (its NAMES.block).")
    num_blocks = names_.num_blocks(params, numbered_only=True)
    if not 0 < last <= num_blocks:
      raise UserError(f"train_last_blocks={last}: {config.model_name} has {num_blocks} "
                      f"numbered blocks" + (" (scanned: use --config.model.scan_layers="
                                            "False)" if num_blocks == 0 else "") + ".")
    if frozen:
      raise UserError(f"train_last_blocks={last} and frozen={frozen!r} both say what is "
                      f"frozen: set one.")
    return names_.trained_last(last, num_blocks)
  if not frozen and lora_lib.LoraSpec.from_config(config) is not None:
    return LORA_FROZEN
  return frozen


def frozen_labels(config) -> Callable[[Any], Any]:
  """params -> 'frozen' / 'train' per leaf (optax.multi_transform's labels)."""
  def labels(params):
    pattern = frozen_pattern(config, params)
    return map_named(lambda name, _: "frozen" if re.search(pattern, name) else "train",
                     params)
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
  frozen = frozen_pattern(config, abstract_params)
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
  if decay not in (None, 1.0) and family_names(config).num_blocks(abstract_params) == 0:
    raise UserError(f"layer_decay={decay}: the {config.model_name} family declares no "
                    f"blocks to decay over (its NAMES.block).")


def count_trained(config, abstract_params) -> tuple[int, int]:
  """(trained, total) parameter counts."""
  frozen = frozen_pattern(config, abstract_params)
  total = trained = 0
  for name, leaf in named_leaves(abstract_params):
    size = int(np.prod(leaf.shape))
    total += size
    if not (frozen and re.search(frozen, name)):
      trained += size
  return trained, total
