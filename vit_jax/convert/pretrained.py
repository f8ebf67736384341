"""One entry point for every checkpoint: `model, params = vit_jax.load_pretrained(path)`.

`path` is anything `vit_jax.convert.read` takes. The images the model takes are made by
`vit_jax.preprocessing_of(path)`, so the normalisation and size are the checkpoint's own:

    model, params = vit_jax.load_pretrained("dinov2_s14.npz")
    preprocess = vit_jax.preprocessing_of("dinov2_s14.npz")
    features = model.apply({"params": params}, preprocess(uint8_images), train=False,
                           return_representation=True)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from vit_jax.convert.checkpoint import Checkpoint, read, record_of_pp
from vit_jax.errors import UserError
from vit_jax.models import create_model, naflex
from vit_jax.pp import builder


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """A checkpoint's input convention as a pp string: uint8 images of any size -> the
  model's float32 inputs (its size, resampling and normalisation)."""
  pp: str

  @property
  def resolution(self) -> int:
    size = builder.output_size(self.pp)
    return size[0] if size else 224

  @property
  def value_map(self) -> Optional[str]:
    """The final pp op that maps pixels to the model's value range (e.g. normalize(...))."""
    affine = builder.final_affine(self.pp)
    return None if affine is None else str(affine)

  @property
  def mean(self) -> tuple[float, ...]:
    return self._statistics()[0]

  @property
  def std(self) -> tuple[float, ...]:
    return self._statistics()[1]

  def _statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
    record = record_of_pp(self.pp)
    return tuple(record["mean"]), tuple(record["std"])

  @staticmethod
  def is_one_image(images: np.ndarray) -> bool:
    """(H, W) or (H, W, C) with C channels (1, 3, 4): one image; else a batch."""
    return images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 3, 4))

  def __call__(self, images):
    """uint8 images, any size -> float32 NHWC model inputs: one image (H, W) or (H, W, C)
    gives one (H', W', 3); a batch (N, H, W, C) or a gray batch (N, H, W) gives N. A
    3-D array is one image when its last axis is channels (1, 3 or 4), else a gray batch.
    A NaFlex pp (patchify) gives `naflex.Patches` of the batch, one image or many."""
    images = np.asarray(images)
    single = self.is_one_image(images)
    if images.ndim not in (2, 3, 4):
      raise UserError(f"preprocessing takes an image (H, W[, C]) or a batch (N, H, W[, C]), "
                      f"not an array of shape {images.shape}.")
    batch = images[None] if single else images
    if batch.ndim == 3:  # gray images without a channel axis.
      batch = batch[..., None]
    apply = builder.build(self.pp)
    out = naflex.stacked_input([apply({"image": image, "seed": (0, 0)}) for image in batch],
                               np.float32)
    if isinstance(out, naflex.Patches):  # patch sequences stay batched.
      return out
    return out[0] if single else out


def preprocessing_for(checkpoint: Checkpoint) -> Preprocessing:
  return Preprocessing(checkpoint.pp)


def preprocessing_of(path: str, **hints) -> Preprocessing:
  """The input convention of the checkpoint at `path` (see `load_pretrained`)."""
  return preprocessing_for(read(path, **hints))


def model_for(checkpoint: Checkpoint, *, num_classes: Optional[int] = -1,
              **overrides) -> Any:
  """The Flax module of a checkpoint's architecture (`num_classes=-1`: its head's)."""
  arch = dict(checkpoint.arch)
  family = arch.pop("family")
  classes = checkpoint.num_classes if num_classes == -1 else num_classes
  return create_model(family, num_classes=classes, **{**arch, **overrides})


def load_pretrained(path: str, **hints) -> tuple[Any, dict]:
  """(model, params) of any supported checkpoint; `hints`: timm_model, model_name,
  num_heads, only where the file cannot tell; step and params='ema' (a run's moving
  average). A LoRA run's adapters come merged into plain weights."""
  checkpoint = read(path, **hints)
  return model_for(checkpoint), checkpoint.params
