"""What an export computes: the model's logits or pooled features, in float32 or bfloat16,
from float inputs in the model's own convention or (`uint8_input`) from raw pixels with the
checkpoint's resize and normalisation inside the graph. One description for every format."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.convert import Checkpoint
from vit_jax.convert.pretrained import Preprocessing, model_for
from vit_jax.errors import UserError
from vit_jax.pp import builder

OUTPUTS = ("logits", "features")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass
class Serving:
  fn: Callable[[Any, jax.Array], jax.Array]   # (params, images) -> outputs.
  params: Any
  input_shape: tuple[int, int, int]            # (H, W, 3), after a symbolic batch axis.
  input_dtype: Any
  signature: dict                              # written beside every export.


def affine_of(pp: str):
  """The checkpoint's final value map (scale, offset per channel); identity if none."""
  _, affine = builder.split_device_affine(pp)
  if affine is None:
    return np.ones(3, np.float32), np.zeros(3, np.float32)
  return (np.broadcast_to(affine.scale, (3,)).astype(np.float32),
          np.broadcast_to(affine.offset, (3,)).astype(np.float32))


def serving_function(checkpoint: Checkpoint, *, output: str = "logits",
                     dtype: str = "float32", uint8_input: bool = False,
                     input_size: int = 0) -> Serving:
  if output not in OUTPUTS:
    raise UserError(f"--output={output!r} is not one of {OUTPUTS}.")
  if dtype not in DTYPES:
    raise UserError(f"--dtype={dtype!r} is not one of {DTYPES}.")
  if output == "logits" and not checkpoint.num_classes:
    raise UserError("This checkpoint has no classification head: export --output=features.")
  preprocessing = Preprocessing(checkpoint.pp)
  resolution = preprocessing.resolution
  size = input_size or resolution
  model = model_for(checkpoint, dtype=dtype) if dtype != "float32" else model_for(checkpoint)
  scale, offset = affine_of(checkpoint.pp)
  compute = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
  params = jax.tree.map(lambda p: jnp.asarray(p, compute), checkpoint.params)

  def fn(params, images):
    if uint8_input:  # raw pixels: the checkpoint's resize and normalisation, in the graph.
      images = images.astype(jnp.float32)
      if size != resolution:
        images = jax.image.resize(images, (images.shape[0], resolution, resolution, 3),
                                  "bilinear", antialias=True)
      images = images * scale + offset
    out = model.apply({"params": params}, images.astype(compute), train=False,
                      return_representation=output == "features")
    return out.astype(jnp.float32)

  signature = {"input": {"shape": ["batch", size, size, 3],
                         "dtype": "uint8" if uint8_input else "float32",
                         "convention": ("raw RGB pixels" if uint8_input else
                                        f"RGB after the checkpoint's preprocessing: {checkpoint.pp}")},
               "output": output, "compute_dtype": dtype, "source": checkpoint.source,
               "preprocessing": checkpoint.pp, "arch": dict(checkpoint.arch),
               "num_classes": checkpoint.num_classes}
  return Serving(fn, params, (size, size, 3), np.uint8 if uint8_input else np.float32,
                 signature)
