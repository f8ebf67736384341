"""One build path: config + mesh -> model, optimizer, sharded state spec and the jitted
steps. The trainer, evaluation, the memory planner and the benchmark all build through
`build`, so what they measure or evaluate is what the trainer runs."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import flax.linen as nn
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from vit_jax import console
from vit_jax import sharding as sharding_lib
from vit_jax import objectives
from vit_jax.models import attention, create_model, flops, lora, naflex
from vit_jax.pp.ops_image import Affine
from vit_jax.trainer import flexi, optim, param_groups, steps
from vit_jax.trainer import state as state_lib


@dataclasses.dataclass
class Built:
  """Everything compiled from one config on one mesh."""
  config: Any
  mesh: Mesh
  rules: tuple
  model: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  image_shape: tuple[int, ...]
  state: state_lib.StateSpec
  host_pp_train: str               # what the input workers run of pp_train.
  # pp_train's final value_range/normalize, run in the train step (None: all on the host).
  input_affine: Any = None
  objective: Any = None            # what the model is trained for (vit_jax.objectives).

  def model_input(self, images):
    """The train step's images (uint8 when `input_affine` is on the device) -> what the
    model sees."""
    return images if self.input_affine is None else self.input_affine(images)

  def forward_flops(self) -> float:
    """Analytical forward FLOPs per example (NaFlex: the whole padded sequence); raises
    ValueError for models other than a plain ViT."""
    shape = self.image_shape
    return flops.vit_forward_flops(
        self.model, shape[:2],
        num_patches=shape[0] if naflex.is_sequence_shape(shape) else None)

  def at_patch_size(self, patch_size: Optional[int]):
    """The model cutting its inputs into `patch_size` patches (FlexiViT; None: its own)."""
    return self.model if patch_size is None else self.model.clone(input_patch_size=patch_size)

  def jit_train_step(self, patch_size: Optional[int] = None) -> Callable:
    """(state, batch) -> (state, metrics): jit with explicit shardings, the state donated,
    activations constrained by rule, non-finite steps flagged (or skipped); `patch_size`:
    FlexiViT's input patch size for this program."""
    c = self.config
    model = self.at_patch_size(patch_size)
    step = steps.with_nonfinite_guard(
        steps.make_train_step(model, self.tx, self.schedule, accum_steps=c.accum_steps,
                              batch_loss=self.objective.batch_loss(model),
                              input_transform=self.model_input,
                              ema_decay=float(c.get("ema_decay") or 0.0)),
        skip_nonfinite=c.skip_nonfinite_steps)
    batch = sharding_lib.batch_sharding(self.mesh)
    return jax.jit(sharding_lib.with_mesh_rules(step, self.mesh, self.rules),
                   in_shardings=(self.state.shardings, batch),
                   out_shardings=(self.state.shardings, sharding_lib.replicated(self.mesh)),
                   donate_argnums=(0,))

  def compile_train_step(self, *, label_shape: tuple[int, ...] = (),
                         integer_labels: bool = True, image_dtype=None,
                         patch_size: Optional[int] = None):
    """The train step compiled ahead of time for the configured global batch, for images
    of `image_dtype` (default: uint8 with `input_affine`, else float32)."""
    return self.jit_train_step(patch_size).lower(
        self.state.abstract, self.abstract_batch(self.config.batch_size,
                                                 label_shape=label_shape,
                                                 integer_labels=integer_labels,
                                                 image_dtype=image_dtype)).compile()

  def jit_on_params(self, fn: Callable) -> Callable:
    """fn(params, batch) jitted with the params as trained (sharded by rule), the batch
    split over the mesh and the results replicated to every process: evaluation runs on
    the training layout, so a model that needs FSDP to train is evaluated with it too."""
    return jax.jit(sharding_lib.with_mesh_rules(fn, self.mesh, self.rules),
                   in_shardings=(self.state.param_shardings,
                                 sharding_lib.batch_sharding(self.mesh)),
                   out_shardings=sharding_lib.replicated(self.mesh))

  def init_state(self, rng: jax.Array) -> state_lib.TrainState:
    return jax.jit(self.state.init, out_shardings=self.state.shardings)(rng)

  def abstract_batch(self, batch_size: int, *, label_shape: tuple[int, ...] = (),
                     integer_labels: bool = True, image_dtype=None) -> dict:
    sharding = sharding_lib.batch_sharding(self.mesh)
    if image_dtype is None:
      image_dtype = jnp.float32 if self.input_affine is None else jnp.uint8
    elif jnp.issubdtype(image_dtype, jnp.floating):
      image_dtype = jnp.float32  # what a float host batch becomes on the device.
    batch = {"image": jax.ShapeDtypeStruct((batch_size, *self.image_shape), image_dtype,
                                           sharding=sharding),
             "label": jax.ShapeDtypeStruct((batch_size, *label_shape),
                                           jnp.int32 if integer_labels else jnp.float32,
                                           sharding=sharding)}
    if naflex.is_sequence_shape(self.image_shape):  # NaFlex: patches and coordinates.
      batch[naflex.COORDS] = jax.ShapeDtypeStruct((batch_size, self.image_shape[0], 2),
                                                  jnp.int32, sharding=sharding)
    return batch


def example_shape(config, resolution: int) -> tuple[int, ...]:
  """One training example's shape for a resolved config at `resolution` (what the
  planner compiles for): (resolution, resolution, 3) images, or with max_num_patches
  NaFlex sequences (max_num_patches, P*P*3)."""
  if config.get("max_num_patches") is None:
    return (resolution, resolution, 3)
  patch = create_model(config.model_name, num_classes=None, **config.model).token_patch_size
  return (int(config.max_num_patches), patch * patch * 3)


def build(config, mesh: Mesh, *, num_classes: int | None, image_shape: tuple[int, ...],
          host_pp_train: str | None = None, input_affine: Affine | None = None) -> Built:
  """Model, optimizer and sharded state spec for a resolved `config` on `mesh` (no arrays
  made yet); `host_pp_train` and `input_affine`: pp_train split by `resolve` (default:
  all of pp_train on the host)."""
  rules = sharding_lib.check_rules(config.sharding_rules)
  objective = objectives.create(config)
  objective.check(config)
  model = _for_platform(create_model(config.model_name,
                                     num_classes=num_classes if objective.classifies else None,
                                     **config.model), mesh, image_shape)
  model = objective.wrap(lora.wrapped(model, config))
  objective.check_model(model, mesh, image_shape)
  flexi.check(config, model, image_shape)
  dummy = naflex.dummy_input(image_shape)
  param_groups.check(config, jax.eval_shape(
      lambda: nn.unbox(model.init(jax.random.key(0), dummy)["params"])))
  tx, schedule = optim.make_optimizer(config)
  spec = state_lib.make_state_spec(model, tx, mesh, tuple(image_shape),
                                   jax.random.key(config.seed), rules,
                                   ema=bool(config.get("ema_decay")))
  _warn_if_fsdp_leaves_copies(spec, mesh)
  return Built(config, mesh, rules, model, tx, schedule, tuple(image_shape), spec,
               host_pp_train=host_pp_train or config.pp_train, input_affine=input_affine,
               objective=objective)


def _for_platform(model, mesh: Mesh, image_shape: tuple[int, ...]):
  """The model with attention_implementation='auto' resolved for the mesh's devices (a
  TPU topology compiled from a CPU host is TPU) and the model's sequence length."""
  if getattr(model, "attention_implementation", None) != "auto":
    return model
  platform = (jax.default_backend() if isinstance(mesh, jax.sharding.AbstractMesh)
              else mesh.devices.flat[0].platform)
  return model.clone(attention_implementation=attention.resolve(
      "auto", platform=platform, dtype=model.dtype,
      num_tokens=model.num_patches(image_shape) + model.num_prefix_tokens,
      attention_dropout=bool(model.attention_dropout_rate)))


def _warn_if_fsdp_leaves_copies(spec: state_lib.StateSpec, mesh: Mesh,
                                min_devices: int = 16, limit: float = 0.05) -> None:
  """At pod sizes a state that FSDP does not split is a whole copy per chip: said on the
  console (the per-parameter details are in the INFO log)."""
  if mesh.shape["fsdp"] < min_devices:
    return
  whole = sharding_lib.unsharded_fraction(spec.abstract, "fsdp")
  if whole > limit:
    console.warn(
        f"{whole:.0%} of the training state ({whole * spec.num_bytes / 2**30:.2f} GiB) is "
        f"not split over the {mesh.shape['fsdp']}-way fsdp axis (no dimension of those "
        f"arrays divides it): every chip holds a copy. Choose an fsdp size that divides the "
        f"model's widths, or split the heads over 'model' (--config.mesh.model=N).")
