"""Optimizers and learning-rate schedules from the config (optax).

`config.optimizer` names the update rule:
- 'adam' (pre-training): Adam(b1, b2) with decoupled weight decay, AdamW-style (scaled by
  the learning rate, as in the official code), on weight matrices only (`*/kernel` of
  ndim >= 2; `wd_mults` scale it per parameter);
- 'sgd' (fine-tuning; BiT's pre-training): SGD with `momentum`, and the same decoupled
  weight decay where `weight_decay` > 0 (after the momentum, scaled by the learning rate);
- any optax optimizer by name, with its keyword arguments in the same string, as big_vision
  takes them: 'lion', 'adafactor(momentum=0.9)', 'lion(b1=0.95, b2=0.98)',
  'contrib.muon' (or 'optax.contrib.muon'). It gets the schedule as its learning rate,
  `weight_decay` (masked to weight matrices where it takes a mask) and `optimizer_dtype`
  through its own arguments for them.
Every rule is wrapped the same way: clipping at a global norm first, the parameter groups'
learning-rate multipliers on its update, frozen parameters with no update and no state.
"""
from __future__ import annotations

import ast
import difflib
import inspect
from typing import Any, Callable

import jax
import optax

from vit_jax.errors import UserError
from vit_jax.models.hparams import as_dtype
from vit_jax.param_names import map_named
from vit_jax.trainer import param_groups


def make_schedule(config) -> optax.Schedule:
  """Linear warm-up from 0 to `lr`, then cosine / linear decay to `end_lr` at total_steps."""
  warmup, total = int(config.warmup_steps), int(config.total_steps)
  if not 0 <= warmup < total:
    raise UserError(f"warmup_steps={warmup} must be in [0, total_steps={total}); set "
                    f"--config.warmup_steps={max(total // 10, 0)} (a tenth) or fewer.")
  decay_steps = total - warmup
  if config.schedule == "cosine":
    decay = optax.cosine_decay_schedule(config.lr, decay_steps, alpha=config.end_lr / config.lr
                                        if config.lr else 0.0)
  elif config.schedule == "linear":
    decay = optax.linear_schedule(config.lr, config.end_lr, decay_steps)
  elif config.schedule == "constant":
    decay = optax.constant_schedule(config.lr)
  elif config.schedule == "steps":  # BiT-HyperRule: 10x lower at each of `lr_drops`.
    drops = tuple(config.get("lr_drops") or ())
    if not drops or not all(0 < f < 1 for f in drops):
      raise UserError(f"schedule='steps' needs lr_drops, fractions of total_steps in (0, 1) "
                      f"where the learning rate drops 10x, e.g. (0.3, 0.6, 0.9); got {drops}.")
    decay = optax.piecewise_constant_schedule(
        config.lr, {round(f * total) - warmup: 0.1 for f in drops})
  else:
    raise UserError(f"schedule={config.schedule!r} is not one of 'cosine', 'linear', "
                     f"'constant', 'steps'.")
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), decay], [warmup])


def make_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The configured optimizer; parameter groups (`param_groups`) scale each parameter's
  learning rate and weight decay, and frozen parameters get no update and no state."""
  schedule = make_schedule(config)
  state_dtype = as_dtype(config.optimizer_dtype, "optimizer_dtype",
                         allowed=("float32", "bfloat16"))
  if config.optimizer == "adam":  # written out: bit-identical to every earlier run.
    parts = [optax.scale_by_adam(b1=config.b1, b2=config.b2, mu_dtype=state_dtype)]
    if config.weight_decay:
      parts.append(param_groups.add_decayed_weights(config.weight_decay, config))
    optimizer = optax.chain(*parts, optax.scale_by_learning_rate(schedule))
  elif config.optimizer == "sgd" and not config.weight_decay:
    optimizer = optax.sgd(schedule, momentum=config.momentum, accumulator_dtype=state_dtype)
  elif config.optimizer == "sgd":  # BiT's pre-training: decoupled decay after momentum.
    optimizer = optax.chain(
        optax.trace(decay=config.momentum, accumulator_dtype=state_dtype),
        param_groups.add_decayed_weights(config.weight_decay, config),
        optax.scale_by_learning_rate(schedule))
  else:
    name, factory, kwargs = parse(config.optimizer)
    optimizer = _named(name, factory, kwargs, config, schedule, state_dtype)
  chain = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm else []
  multipliers = param_groups.lr_multiplier_fn(config)
  if multipliers is not None:
    optimizer = optax.chain(optimizer, param_groups.scale_by_multipliers(
        multipliers, param_groups.family_names(config).num_blocks))
  tx = optax.chain(*chain, optimizer)
  if param_groups.freezes(config):  # clipping sees the trained gradients only.
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               param_groups.frozen_labels(config))
  return tx, schedule


# --- Any optax optimizer, by name -------------------------------------------------------
# The arguments through which a named optimizer takes the config's weight decay, its decay
# mask and its state dtype (optax spells each several ways).
_DECAY_ARGS = ("weight_decay", "weight_decay_rate")
_MASK_ARGS = ("mask", "weight_decay_mask")
_DTYPE_ARGS = ("mu_dtype", "accumulator_dtype", "dtype_momentum")


def parse(spec: str) -> tuple[str, Callable[..., optax.GradientTransformation], dict]:
  """'lion(b1=0.95)' -> ('lion', optax.lion, {'b1': 0.95}): the optax function (under optax
  or a dotted path below it) and its literal keyword arguments; one line naming close
  matches for an unknown name."""
  try:
    call = ast.parse(spec.strip(), mode="eval").body
  except SyntaxError:
    raise UserError(f"optimizer={spec!r} is not a name with optional keyword arguments, "
                    f"e.g. 'lion' or 'lion(b1=0.95, b2=0.98)'.") from None
  node, kwargs = call, {}
  if isinstance(call, ast.Call):
    if call.args:
      raise UserError(f"optimizer={spec!r}: give arguments by keyword, e.g. "
                      f"'{ast.unparse(call.func)}(b1=0.95)'.")
    node = call.func
    try:
      kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except ValueError:
      raise UserError(f"optimizer={spec!r}: argument values must be literals (numbers, "
                      f"strings, tuples).") from None
  name = ast.unparse(node).removeprefix("optax.")
  factory: Any = optax
  for part in name.split("."):
    factory = getattr(factory, part, None)
  if not callable(factory) or name.split(".")[-1].startswith("_"):
    close = difflib.get_close_matches(name, available(), n=4, cutoff=0.6)
    raise UserError(f"optimizer={spec!r} is not an optax optimizer" + (
        f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else
        "; use 'adam', 'sgd' or an optax name, e.g. 'lion', 'adafactor', 'contrib.muon'."))
  return name, factory, kwargs


def available() -> list[str]:
  """Names of optax's optimizers (functions taking a learning rate first), contrib's too."""
  found = []
  for prefix, module in (("", optax), ("contrib.", optax.contrib)):
    for attr in dir(module):
      fn = getattr(module, attr)
      if attr.startswith("_") or not inspect.isfunction(fn):
        continue
      params = list(inspect.signature(fn).parameters)
      if params and params[0] == "learning_rate":
        found.append(prefix + attr)
  return sorted(found)


def _named(name: str, factory, kwargs: dict, config, schedule, state_dtype
           ) -> optax.GradientTransformation:
  """The optax optimizer with the config's schedule, weight decay and state dtype passed
  through its own arguments; a setting it cannot take is one line."""
  params = inspect.signature(factory).parameters
  unknown = sorted(set(kwargs) - set(params))
  if unknown:
    raise UserError(f"optimizer={config.optimizer!r}: optax.{name} takes no {unknown}; it "
                    f"takes {[p for p in params if p != 'learning_rate']}.")
  owned = {"learning_rate": "lr/schedule", **{a: "weight_decay" for a in _DECAY_ARGS},
           **{a: "optimizer_dtype" for a in _DTYPE_ARGS}}
  clash = sorted(set(kwargs) & set(owned))
  if clash:
    raise UserError(f"optimizer={config.optimizer!r}: set {clash[0]} through "
                    f"--config.{owned[clash[0]]}, not in the optimizer's arguments.")
  args = dict(kwargs, learning_rate=schedule)
  decay = next((a for a in _DECAY_ARGS if a in params), None)
  if decay is not None:
    # `weight_decay` is decoupled and scaled by the learning rate, as with 'adam' (0 turns
    # off a default decay, lion's); Adafactor adds its rate after the learning rate.
    rate = float(config.weight_decay)
    args[decay] = (lambda step: rate * schedule(step)) if decay == "weight_decay_rate" else rate
    mask = next((a for a in _MASK_ARGS if a in params), None)
    if mask is not None and config.weight_decay:
      args[mask] = _weight_matrices
  elif config.weight_decay:
    raise UserError(f"optax.{name} takes no weight decay: set --config.weight_decay=0.")
  if tuple(config.get("wd_mults", ()) or ()):
    raise UserError(f"wd_mults works with optimizer='adam'; optax.{name} takes one "
                    f"weight_decay (masked to weight matrices).")
  if state_dtype is not None and jax.numpy.dtype(state_dtype) != jax.numpy.float32:
    dtype_arg = next((a for a in _DTYPE_ARGS if a in params), None)
    if dtype_arg is None:
      raise UserError(f"optax.{name} keeps its state in float32 only: set "
                      f"--config.optimizer_dtype=float32.")
    args[dtype_arg] = state_dtype
  return factory(**args)


def _weight_matrices(params) -> Any:
  """The decay mask: weight matrices (`*/kernel`, ndim >= 2) as with 'adam'."""
  return map_named(param_groups.decays, params)
