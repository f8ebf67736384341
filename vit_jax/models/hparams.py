"""Hyper-parameter checks every model family shares: names, required fields, dtypes."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from vit_jax.errors import UserError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(value, field: str, *, allowed=tuple(DTYPES)):
  """'bfloat16' -> jnp.bfloat16 (config files hold strings); `field` names the config
  field in the error."""
  if isinstance(value, str):
    if value not in allowed:
      raise UserError(f"{field}={value!r} is not a dtype; use one of {list(allowed)}.")
    return DTYPES[value]
  return value


def checked(module_class, hparams: dict[str, Any], *, family: str, example: str) -> dict:
  """`hparams` for `module_class(num_classes=..., **hparams)`: unknown and missing names
  are one error each (naming the valid ones / a preset), dtype strings become dtypes."""
  declared = {f.name for f in dataclasses.fields(module_class)} - {"parent", "name",
                                                                   "num_classes"}
  unknown = sorted(set(hparams) - declared)
  if unknown:
    raise UserError(f"Unknown {family} hyper-parameter(s) {unknown}; valid: {sorted(declared)}.")
  missing = sorted(f.name for f in dataclasses.fields(module_class)
                   if f.default is dataclasses.MISSING and f.name in declared
                   and f.name not in hparams)
  if missing:
    raise UserError(f"The '{family}' family needs model.{', model.'.join(missing)} (or use "
                    f"a preset such as '{example}').")
  hparams = dict(hparams)
  for field in ("dtype", "param_dtype"):
    if field in hparams:
      hparams[field] = as_dtype(hparams[field], f"model.{field}")
  return hparams
