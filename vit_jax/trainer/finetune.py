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
from vit_jax.models.params import fit_params
from vit_jax.objectives import split_own


def check_fits(config, checkpoint: Checkpoint, built) -> None:
  """Before anything is written: the checkpoint's parameters fit the built model (the
  same surgery as `init_params`, on the model's abstract shapes)."""
  base, _ = lora.split_adapters(built.state.abstract.params)
  _adapt(config, checkpoint, built, base, notes=[])


def _adapt(config, checkpoint: Checkpoint, built, base: Any, notes: list[str]) -> dict:
  """The backbone fitted by its family; the objective's own parameters (MAE's decoder)
  taken from the checkpoint when it was trained for the same objective, else fresh."""
  objective = built.objective
  backbone, own = split_own(dict(base), objective.own_params)
  adapted = family_lib.adapt_pretrained(family_of(config.model_name), checkpoint.params,
                                        backbone,
                                        model=lora.unwrapped(objective.backbone(built.model)),
                                        image_shape=built.image_shape,
                                        reset_head=config.reset_head, notes=notes)
  theirs = checkpoint.objective_params
  if theirs and checkpoint.objective == objective.name:
    own = fit_params(theirs, own, notes=notes)
    notes.append(f"{objective.description} from the checkpoint")
  elif theirs:
    notes.append(f"dropped the checkpoint's {checkpoint.objective} parameters "
                 f"({', '.join(sorted(theirs))}: pre-training only); its encoder is kept")
  elif own:
    notes.append(f"a fresh {objective.description}")
  return {**adapted, **own}


def init_params(config, checkpoint: Checkpoint, built, init_params: Any) -> Any:
  """`checkpoint`'s parameters fitted to the built model by its family (position
  embeddings resampled, head replaced, ...), each change logged, placed on the mesh."""
  notes = list(checkpoint.notes)
  base, adapters = lora.split_adapters(init_params)  # LoRA adapters start fresh.
  adapted = _adapt(config, checkpoint, built, base, notes)
  adapted = lora.with_adapters(adapted, adapters) if adapters else adapted
  console.line(f"Fine-tuning from {checkpoint.source}" + "".join(f"; {n}" for n in notes))
  checkpoint.release()  # the host copy is no longer needed.
  return sharding.place(adapted, built.state.param_shardings)
