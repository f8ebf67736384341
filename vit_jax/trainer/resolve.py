"""The config as a run uses it, resolved in one pass: `resolution` applied to every size in
its pp strings, a self-described pretrained checkpoint's architecture and input
normalisation adopted (its final value map replaces the one every pp string ends with),
and pp_train split into what the input workers run and the value map the train step
applies (`normalize_on_device`). Before it a run is checked (`preflight`), after it built
(`build`)."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from vit_jax import config as config_lib
from vit_jax.convert import Checkpoint
from vit_jax.convert.pretrained import preprocessing_for
from vit_jax.errors import UserError
from vit_jax.pp import builder


@dataclasses.dataclass(frozen=True)
class Resolved:
  config: Any                  # locked; what config.json records.
  host_pp_train: str           # pp_train less `input_affine`: what the input workers run.
  input_affine: Any = None     # pp_train's final value map, run in the train step (or None).


def resolve(config, checkpoint: Optional[Checkpoint] = None) -> Resolved:
  """`config` with its resolution and `checkpoint`'s architecture and preprocessing
  applied (`config` itself is not changed), and its pp_train split."""
  resolution = config.get("resolution")
  if resolution is not None and resolution <= 0:
    raise UserError(f"resolution={resolution} must be a positive number of pixels.")
  adopted = checkpoint is not None and checkpoint.self_described
  value_map = preprocessing_for(checkpoint).value_map if adopted else None
  strings = builder.resolve_pipelines(config_lib.pp_strings(config),
                                      modules=config.pp_modules, resolution=resolution,
                                      value_map=value_map)
  config = config_lib.with_overrides(config, strings)
  if adopted:
    with config.unlocked():
      arch = dict(checkpoint.arch)
      config.model_name = arch.pop("family")
      for key, value in arch.items():
        config.model[key] = tuple(value) if isinstance(value, list) else value
      if checkpoint.objective == config.objective:  # e.g. MAE's decoder, to continue it.
        for section, values in checkpoint.objective_config.items():
          config[section].update(values)
    checkpoint.notes.append(f"architecture and input normalisation ({value_map}) from the "
                            f"checkpoint")
  _check_naflex_checkpoint(config, checkpoint)
  if config.get("max_num_patches") is not None:  # after the checkpoint's patch size.
    config = _with_sequences(config)
  host, affine = (builder.split_device_affine(config.pp_train)
                  if config.get("normalize_on_device") else (config.pp_train, None))
  return Resolved(config.lock(), host, affine)


def _check_naflex_checkpoint(config, checkpoint: Optional[Checkpoint]) -> None:
  """A checkpoint trained on NaFlex sequences fine-tunes on them: one line otherwise."""
  budget = checkpoint.preprocessing.get("max_num_patches") if checkpoint else None
  if budget and config.get("max_num_patches") is None:
    raise UserError(f"{checkpoint.source} was trained on NaFlex patch sequences "
                    f"(max_num_patches={budget}, aspect ratios kept), not square images; add "
                    f"--config.max_num_patches={budget} (or another budget).")


def _with_sequences(config):
  """NaFlex: every pp string makes patch sequences within `max_num_patches`, and the
  learned position grid is fixed (at the resolution's grid) to be resized per image."""
  from vit_jax.models import create_model  # pylint: disable=g-import-not-at-top
  from vit_jax.pp import naflex, ops_naflex  # pylint: disable=g-import-not-at-top
  budget = int(config.max_num_patches)
  model = create_model(config.model_name, num_classes=None, **config.model)
  if config.flexi.patch_sizes:
    raise UserError(f"max_num_patches={budget} with flexi.patch_sizes="
                    f"{tuple(config.flexi.patch_sizes)}: NaFlex cuts patches in the input "
                    f"pipeline at one size; use one of them (model.input_patch_size).")
  if config.get("mixup_alpha") or config.get("cutmix_alpha"):
    raise UserError("mixup / CutMix blend square images; with max_num_patches set "
                    "mixup_alpha=0 and cutmix_alpha=0.")
  patch = model.token_patch_size
  ops_naflex.check(budget, patch)
  size = builder.output_size(config.pp_eval) or (budget**0.5 * patch,) * 2
  strings = {key: naflex.to_sequence(pp, budget, patch)
             for key, pp in config_lib.pp_strings(config).items()}
  config = config_lib.with_overrides(config, strings)
  if model.posemb == "learned" and not model.posemb_grid:
    with config.unlocked():
      config.model.posemb_grid = (max(1, int(size[0]) // patch), max(1, int(size[1]) // patch))
  return config
