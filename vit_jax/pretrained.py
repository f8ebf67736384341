"""One entry point for every checkpoint: `model, params = vit_jax.load_pretrained(path)`.

`path` is a published or converted `.npz`, a big_vision `.npz`, a Hugging Face model
directory, a timm `.safetensors` / `.pth`, or a vit_jax run's workdir. The images the
model takes are made by `vit_jax.preprocessing_of(path)`, so the normalisation and size
are the checkpoint's own:

    model, params = vit_jax.load_pretrained("dinov2_s14.npz")
    preprocess = vit_jax.preprocessing_of("dinov2_s14.npz")
    features = model.apply({"params": params}, preprocess(uint8_images), train=False,
                           return_representation=True)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from vit_jax import convert
from vit_jax.data.images import resize_image


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """A checkpoint's input convention: square `resolution`, then (x / 255 - mean) / std."""
  resolution: int
  mean: tuple[float, ...] = (0.5, 0.5, 0.5)
  std: tuple[float, ...] = (0.5, 0.5, 0.5)
  resize: str = "bilinear"        # the source's resampling; `pp` and __call__ use bilinear.

  @property
  def normalise_op(self) -> str:
    """The pp op that maps uint8 pixels to the model's inputs."""
    if tuple(self.mean) == (0.5, 0.5, 0.5) and tuple(self.std) == (0.5, 0.5, 0.5):
      return "value_range(-1, 1)"
    return f"normalize({tuple(self.mean)}, {tuple(self.std)})"

  @property
  def pp(self) -> str:
    """The same as a vit_jax pp string (for configs and `vit_jax.cli.predict`)."""
    return f"to_rgb|resize({self.resolution})|{self.normalise_op}"

  def __call__(self, images) -> np.ndarray:
    """uint8 images, (H, W, 3) or (N, H, W, 3), any size -> float32 NHWC model inputs."""
    images = np.asarray(images)
    batch = images[None] if images.ndim == 3 else images
    batch = np.stack([resize_image(image, self.resolution) for image in batch])
    out = (batch.astype(np.float32) / 255.0 - np.asarray(self.mean, np.float32)) / np.asarray(
        self.std, np.float32)
    return out[0] if images.ndim == 3 else out


def preprocessing_of(path: str, **hints) -> Preprocessing:
  """The input convention of the checkpoint at `path` (see `load_pretrained`)."""
  return preprocessing_for(convert.read(path, **hints))


def preprocessing_for(checkpoint: convert.Checkpoint) -> Preprocessing:
  values = dict(checkpoint.preprocessing)
  values.setdefault("resolution", 224)
  return Preprocessing(**{field.name: tuple(values[field.name])
                          if isinstance(values.get(field.name), (list, tuple))
                          else values[field.name]
                          for field in dataclasses.fields(Preprocessing) if field.name in values})


def model_for(checkpoint: convert.Checkpoint, *, num_classes: Optional[int] = -1,
              **overrides) -> Any:
  """The Flax module of a checkpoint's architecture (`num_classes=-1`: its head's)."""
  from vit_jax.models import create_model  # pylint: disable=g-import-not-at-top
  arch = dict(checkpoint.arch)
  family = arch.pop("family")
  classes = checkpoint.num_classes if num_classes == -1 else num_classes
  return create_model(family, num_classes=classes, **{**arch, **overrides})


def load_pretrained(path: str, **hints) -> tuple[Any, dict]:
  """(model, params) of any supported checkpoint; `hints`: timm_model, model_name,
  num_heads, only where the file cannot tell."""
  checkpoint = convert.read(path, **hints)
  return model_for(checkpoint), checkpoint.params
