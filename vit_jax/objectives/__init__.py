"""The objective seam: what a run trains its model for.

    config.objective = "classification"            # labels: softmax / sigmoid (default)
                     | "mae"                       # masked autoencoder (config.mae)
                     | "masked_patch_prediction"   # the ViT paper's 3-bit colours (config.mpp)
                     | "my_package.my_objective"   # any importable module

A module of this package or any importable one defines `Objective(config)`, a subclass of
`base.Objective`: it checks its settings (before any compiling), wraps the config's model
(`wrap`: the model family's module -> what the train step runs), gives the train step's
loss (`batch_loss`), names the parameters that are its own rather than the backbone's
(`own_params`: dropped, with a note, when the backbone is fine-tuned for another
objective), and what the `reconstruction` evaluator reports. Supervised training is the
`classification` objective, unchanged.
"""
from __future__ import annotations

from vit_jax.objectives.base import Objective, split_own
from vit_jax.plugins import import_plugin

__all__ = ["Objective", "create", "module_of", "split_own", "BUILT_IN"]

BUILT_IN = ("classification", "mae", "masked_patch_prediction")


def module_of(name: str):
  return import_plugin(name, package="vit_jax.objectives", what="Objective",
                       known=f"a built-in one ({', '.join(BUILT_IN)}), ")


def create(config) -> Objective:
  """The config's objective, its settings checked."""
  name = config.get("objective") or "classification"
  module = module_of(name)
  cls = getattr(module, "Objective", None)
  if cls is None:
    from vit_jax.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f"Objective module {module.__name__} defines no `Objective` class.")
  return cls(config)
