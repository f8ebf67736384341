"""The config as a run uses it, resolved in one pass: `resolution` applied to every size in
its pp strings, and a self-described pretrained checkpoint's architecture and input
normalisation adopted (its final value map replaces the one every pp string ends with).
Before it a run is checked (`preflight`), after it built (`build`)."""
from __future__ import annotations

from typing import Optional

from vit_jax import config as config_lib
from vit_jax.convert import Checkpoint
from vit_jax.convert.pretrained import preprocessing_for
from vit_jax.errors import UserError
from vit_jax.pp import builder


def resolve(config, checkpoint: Optional[Checkpoint] = None):
  """`config` (locked) with its resolution and `checkpoint`'s architecture and
  preprocessing applied; `config` itself is not changed."""
  resolution = config.get("resolution")
  if resolution is not None and resolution <= 0:
    raise UserError(f"resolution={resolution} must be a positive number of pixels.")
  value_map = None
  if checkpoint is not None and checkpoint.self_described:
    value_map = preprocessing_for(checkpoint).value_map
  builder.import_modules(config.pp_modules)  # their ops declare their own sizes.

  def pp(spec: str) -> str:
    if resolution:
      spec = builder.rescale(spec, resolution)
    return builder.with_final_affine(spec, value_map) if value_map else spec
  config = config_lib.map_pp(config, pp)
  if checkpoint is not None and checkpoint.self_described:
    with config.unlocked():
      arch = dict(checkpoint.arch)
      config.model_name = arch.pop("family")
      for key, value in arch.items():
        config.model[key] = tuple(value) if isinstance(value, list) else value
    checkpoint.notes.append(f"architecture and input normalisation ({value_map}) from the "
                            f"checkpoint")
  return config.lock()
