"""Model families behind one surface: `create_model(name, *, num_classes, **overrides)`.

`name` is a preset from `presets.py` ('ViT-B_16', 'b16', 'R50+ViT-B_16'), which says its
family and hyper-parameters, or a family module named directly ('vit', or your own
'mypackage.my_family') whose hyper-parameters then all come from `overrides`. A family
module defines `create(*, num_classes, **hparams) -> flax.linen.Module`: it checks the
hyper-parameters by name and returns the model (the whole contract: `family.py`). Importing this package imports no JAX:
families load when first used.
"""
from __future__ import annotations

from vit_jax.errors import UserError
from vit_jax.plugins import import_plugin
from vit_jax.models import presets as presets_lib
from vit_jax.models.presets import MODEL_PRESETS, resolve_model_name

__all__ = ["create_model", "family_module", "family_of", "resolve_family", "MODEL_PRESETS",
           "resolve_model_name", "count_parameters", "native_resolution"]


def family_module(family: str):
  """'vit' -> vit_jax.models.vit; any other importable module name as given."""
  return import_plugin(family, package="vit_jax.models", what="Model",
                       known=f"a preset ({', '.join(sorted(MODEL_PRESETS))}), ")


def resolve_family(name: str) -> str:
  """A preset's family ('ViT-B_16' -> 'vit'); any other name is a family module itself."""
  try:
    return MODEL_PRESETS[resolve_model_name(name)]["family"]
  except UserError:
    return name


def family_of(model_name: str):
  """The family module of a preset or family name ('ViT-B_16' -> vit_jax.models.vit)."""
  return family_module(resolve_family(model_name))


def create_model(name: str, *, num_classes: int | None, **overrides):
  """The named model with any hyper-parameter overridden (by name).

  >>> model = create_model("ViT-B_16", num_classes=10, dtype="bfloat16")
  >>> model = create_model("vit", num_classes=10, patch_size=8, hidden_size=96, ...)
  """
  if "pretrained" in overrides:
    raise UserError(f"create_model builds an untrained module; for weights: model, params "
                    f"= vit_jax.load_pretrained({name!r}) (a preset's published weights "
                    f"through the Hub cache, or any checkpoint path or Hub name).")
  try:
    hparams = dict(MODEL_PRESETS[resolve_model_name(name)])
  except UserError:
    hparams = {"family": name}  # a family module, its hyper-parameters all overrides.
  family = hparams.pop("family")
  # None: the preset's value (config files list every field, most left unset).
  overrides = {k: v for k, v in overrides.items() if v is not None}
  return family_module(family).create(num_classes=num_classes, **{**hparams, **overrides})


def native_resolution(name: str) -> int:
  """The input size a preset was published at: its learned position-embedding grid's, or
  224."""
  hparams = MODEL_PRESETS[resolve_model_name(name)]
  grid = hparams.get("posemb_grid")
  return grid[0] * hparams["patch_size"] if grid else 224


def count_parameters(name: str, *, num_classes: int | None = 1000, **overrides) -> int:
  """Parameters of a model, counted from shapes alone (nothing is allocated)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  if resolve_family(name) == "vit":  # one block traced instead of each: the same count, seconds sooner.
    overrides = {"scan_layers": True, **overrides}
  model = create_model(name, num_classes=num_classes, **overrides)
  size = native_resolution(name) if name in MODEL_PRESETS or name in presets_lib.SHORT_NAMES else 224
  images = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)["params"]
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
