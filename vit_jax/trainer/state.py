"""The train state and its sharded layout: abstract shapes, shardings by logical-axis rule,
and the initialiser. `vit_jax.trainer.build` puts it together with the model and optimizer."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_jax import sharding as sharding_lib
from vit_jax.models import naflex


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # number of updates applied.
  params: Any
  opt_state: Any
  rng: jax.Array           # raw uint32 key data: checkpoints as a plain array.
  ema_params: Any = None   # the parameters' moving average (config.ema_decay), else None.


@dataclasses.dataclass
class StateSpec:
  init: Callable[[jax.Array], TrainState]   # rng -> TrainState (jit with `shardings`).
  abstract: TrainState                       # ShapeDtypeStructs carrying their shardings.
  shardings: TrainState

  @property
  def param_shardings(self) -> Any:
    return self.shardings.params

  @property
  def num_params(self) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(self.abstract.params))

  @property
  def num_bytes(self) -> int:
    """The whole state's size (what one checkpoint holds)."""
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(self.abstract))


def make_state_spec(model: nn.Module, tx: optax.GradientTransformation, mesh,
                    image_shape: tuple[int, ...], rng: jax.Array,
                    rules: sharding_lib.Rules, *, ema: bool = False) -> StateSpec:
  """Parameters sharded by the model's logical axes and `rules` (FSDP over 'fsdp', tensor
  parallelism over 'model' by default); optimizer moments like their parameters; scalars
  replicated."""
  dummy = naflex.dummy_input(image_shape)

  def init(rng):
    params = nn.unbox(model.init(rng, dummy)["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(rng),
                      ema_params=jax.tree.map(jnp.copy, params) if ema else None)

  boxed = jax.eval_shape(lambda: model.init(rng, dummy)["params"])
  abstract = jax.eval_shape(init, rng)
  param_shardings = sharding_lib.param_shardings(boxed, mesh, rules)
  replicated = sharding_lib.replicated(mesh)
  # A frozen group's state is an empty MaskedNode where its parameters are; state of
  # another shape than its parameter (Adafactor's factored row and column statistics,
  # O(rows + columns)) is replicated.
  masked = optax.transforms.MaskedNode

  def like_param(state, sharding, param):
    if isinstance(state, masked):
      return state
    return sharding if tuple(state.shape) == tuple(param.shape) else replicated
  opt_shardings = optax.tree_map_params(
      tx, like_param, abstract.opt_state, param_shardings, abstract.params,
      transform_non_params=lambda _: replicated, is_leaf=lambda x: isinstance(x, masked))
  shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                         rng=replicated, ema_params=param_shardings if ema else None)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, shardings)
  return StateSpec(init, abstract, shardings)
