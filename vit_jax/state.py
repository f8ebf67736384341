"""The sharded train state: abstract shapes, shardings by logical-axis rule, and init.

Shared by the trainer and the memory planner (`vit_jax.tools.memory`), which compiles the
same step for a mesh it does not have.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_jax import sharding as sharding_lib
from vit_jax.steps import TrainState


@dataclasses.dataclass
class StateSpec:
  init: Callable[[jax.Array], TrainState]   # rng -> TrainState (jit with `shardings`).
  abstract: TrainState                       # ShapeDtypeStructs carrying their shardings.
  shardings: TrainState
  param_shardings: Any
  opt_shardings: Any


def make_state_spec(model: nn.Module, tx: optax.GradientTransformation, mesh,
                    image_shape: tuple[int, ...], rng: jax.Array) -> StateSpec:
  """Parameters sharded by the model's logical axes (FSDP over 'fsdp', tensor parallelism
  over 'model'); optimizer moments like their parameters; scalars replicated."""
  dummy = jnp.zeros((1, *image_shape), jnp.float32)

  def init(rng):
    params = nn.unbox(model.init(rng, dummy)["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(rng))

  boxed = jax.eval_shape(lambda: model.init(rng, dummy)["params"])
  abstract = jax.eval_shape(init, rng)
  param_shardings = sharding_lib.shape_safe_shardings(
      abstract.params, sharding_lib.logical_to_shardings(boxed, mesh))
  replicated = sharding_lib.replicated(mesh)
  opt_shardings = optax.tree_map_params(tx, lambda _, s: s, abstract.opt_state, param_shardings,
                                        transform_non_params=lambda _: replicated)
  shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                         rng=replicated)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, shardings)
  return StateSpec(init, abstract, shardings, param_shardings, opt_shardings)


def abstract_batch(batch_size: int, image_shape: tuple[int, ...], mesh, *,
                   label_shape: tuple[int, ...] = (), integer_labels: bool = True) -> dict:
  sharding = sharding_lib.batch_sharding(mesh)
  return {"image": jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.float32,
                                        sharding=sharding),
          "label": jax.ShapeDtypeStruct((batch_size, *label_shape),
                                        jnp.int32 if integer_labels else jnp.float32,
                                        sharding=sharding)}


def jit_train_step(train_step: Callable, spec: StateSpec, mesh) -> Callable:
  """jit with explicit shardings, the state donated, activations constrained by rule."""
  return jax.jit(sharding_lib.with_activation_sharding(train_step, mesh),
                 in_shardings=(spec.shardings, sharding_lib.batch_sharding(mesh)),
                 out_shardings=(spec.shardings, sharding_lib.replicated(mesh)),
                 donate_argnums=(0,))
