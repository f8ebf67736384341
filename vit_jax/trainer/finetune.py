"""Fine-tuning's start: a pretrained checkpoint's parameters fitted to the built model
and placed on the mesh.

`config.pretrained` is anything `vit_jax.convert.read` takes, read once by `setup`. A
checkpoint that describes itself (a run's workdir, converted .npz, Hugging Face, timm,
big_vision) also sets the architecture and the input normalisation (`resolve`), so
`--config.pretrained=dinov2.npz` needs no model flags; a published .npz fits the config's
model.
"""
from __future__ import annotations

from typing import Any

from vit_jax import console, sharding
from vit_jax.convert import Checkpoint
from vit_jax.models import family as family_lib
from vit_jax.models import family_of, lora


def check_fits(config, checkpoint: Checkpoint, built) -> None:
  """Before anything is written: the checkpoint's parameters fit the built model (the
  same surgery as `init_params`, on the model's abstract shapes)."""
  family = family_of(config.model_name)
  base, _ = lora.split_adapters(built.state.abstract.params)
  family_lib.adapt_pretrained(family, checkpoint.params, base,
                              model=lora.unwrapped(built.model),
                              image_shape=built.image_shape, reset_head=config.reset_head,
                              notes=[])


def init_params(config, checkpoint: Checkpoint, built, init_params: Any) -> Any:
  """`checkpoint`'s parameters fitted to the built model by its family (position
  embeddings resampled, head replaced, ...), each change logged, placed on the mesh."""
  notes = list(checkpoint.notes)
  family = family_of(config.model_name)
  base, adapters = lora.split_adapters(init_params)  # LoRA adapters start fresh.
  adapted = family_lib.adapt_pretrained(family, checkpoint.params, base,
                                        model=lora.unwrapped(built.model),
                                        image_shape=built.image_shape,
                                        reset_head=config.reset_head, notes=notes)
  adapted = lora.with_adapters(adapted, adapters) if adapters else adapted
  console.line(f"Fine-tuning from {checkpoint.source}" + "".join(f"; {n}" for n in notes))
  checkpoint.release()  # the host copy is no longer needed.
  return sharding.place(adapted, built.state.param_shardings)
