"""Fine-tuning's start: a pretrained checkpoint's architecture and input normalisation
adopted into the config, and its parameters fitted to the model and placed on the mesh.

`config.pretrained` is anything `vit_jax.convert.read` takes. A checkpoint that describes
itself (a run's workdir, converted .npz, Hugging Face, timm, big_vision) also sets the
architecture and the input normalisation (`adopt`), so `--config.pretrained=dinov2.npz`
needs no model flags; a published .npz fits the config's model.
"""
from __future__ import annotations

from typing import Any

from vit_jax import console, sharding, storage
from vit_jax.convert import Checkpoint, hub, is_run_directory, run_format
from vit_jax.convert.pretrained import preprocessing_for
from vit_jax.models import family as family_lib
from vit_jax.models import family_module, lora, resolve_family
from vit_jax.pp import builder


def check_exists(pretrained: str) -> None:
  """Before any work: the checkpoint to fine-tune from is there (local, in a bucket, or
  a Hub name in the cache or reachable)."""
  if hub.is_hub_name(pretrained):
    hub.snapshot(pretrained)
    return
  path = storage.check_reachable(pretrained, what="pretrained")
  if is_run_directory(path):
    run_format.latest_complete_step(path)  # raises when it holds no checkpoint.


def adopt(config, checkpoint: Checkpoint):
  """`config` with `checkpoint`'s architecture and input normalisation (its final value
  map replaces the one every pp string of the config ends with)."""
  value_map = preprocessing_for(checkpoint).value_map
  config = config.copy_and_resolve_references()
  with config.unlocked():
    arch = dict(checkpoint.arch)
    config.model_name = arch.pop("family")
    for key, value in arch.items():
      config.model[key] = tuple(value) if isinstance(value, list) else value
    if value_map:
      config.pp_train = builder.with_final_affine(config.pp_train, value_map)
      config.pp_eval = builder.with_final_affine(config.pp_eval, value_map)
      for evaluator in config.evals.values():
        if evaluator.get("pp"):
          evaluator.pp = builder.with_final_affine(evaluator.pp, value_map)
  checkpoint.notes.append(f"architecture and input normalisation ({value_map}) from the "
                          f"checkpoint")
  return config.lock()


def check_fits(config, checkpoint: Checkpoint, built) -> None:
  """Before anything is written: the checkpoint's parameters fit the built model (the
  same surgery as `init_params`, on the model's abstract shapes)."""
  family = family_module(resolve_family(config.model_name))
  base, _ = lora.split_adapters(built.state.abstract.params)
  family_lib.adapt_pretrained(family, checkpoint.params, base,
                              model=getattr(built.model, "base", built.model),
                              image_shape=built.image_shape, reset_head=config.reset_head,
                              notes=[])


def init_params(config, checkpoint: Checkpoint, built, init_params: Any) -> Any:
  """`checkpoint`'s parameters fitted to the built model by its family (position
  embeddings resampled, head replaced, ...), each change logged, placed on the mesh."""
  notes = list(checkpoint.notes)
  family = family_module(resolve_family(config.model_name))
  base, adapters = lora.split_adapters(init_params)  # LoRA adapters start fresh.
  adapted = family_lib.adapt_pretrained(family, checkpoint.params, base,
                                        model=getattr(built.model, "base", built.model),
                                        image_shape=built.image_shape,
                                        reset_head=config.reset_head, notes=notes)
  adapted = lora.with_adapters(adapted, adapters) if adapters else adapted
  console.line(f"Fine-tuning from {checkpoint.source}" + "".join(f"; {n}" for n in notes))
  checkpoint.release()  # the host copy is no longer needed.
  return sharding.place(adapted, built.state.param_shardings)
