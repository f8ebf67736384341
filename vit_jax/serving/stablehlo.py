"""StableHLO through `jax.export`: the serving function with its weights as constants, the
batch axis symbolic; `jax.export.deserialize(bytes).call(images)` runs it in any JAX that
reads its serialization version (recorded in the signature)."""
from __future__ import annotations

import jax
from jax import export

from vit_jax.serving.graph import Serving

FILE = "model.stablehlo"


def export_bytes(serving: Serving, platforms=("cpu", "cuda", "tpu")) -> tuple[bytes, dict]:
  batch = export.symbolic_shape("batch")
  spec = jax.ShapeDtypeStruct((*batch, *serving.input_shape), serving.input_dtype)
  params = serving.params
  exported = export.export(jax.jit(lambda images: serving.fn(params, images)),
                           platforms=platforms)(spec)
  return exported.serialize(), {"serialization_version": exported.calling_convention_version,
                                "platforms": list(exported.platforms)}


def load(data: bytes):
  """The deserialized export: `.call(images)`."""
  return export.deserialize(bytearray(data))
