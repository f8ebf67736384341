"""The registry of preprocessing ops: each op's factory and the facts the rest of the
system asks about it (which field it reads, which arguments are output sizes, whether it
is the final value map that may run on the device).

Your own op, in your own module (named in `config.pp_modules`):

    from vit_jax.pp import registry

    @registry.register("invert")
    def invert():
      return lambda image, rng: 255 - image

A factory returns `fn(value, rng) -> value` for one field of the example dict (or, with
key=None, `fn(example, rng) -> example`). Declare `sizes=("size",)` for the factory's
arguments that are output image sizes: `config.resolution` then rescales them, and a
checkpoint's input size is read off them. `affine=True` says the factory returns an
`ops_image.Affine` (value_range, normalize): the trainer may run it on the accelerator.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Callable, Optional

from vit_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class OpInfo:
  name: str
  factory: Callable
  key: Optional[str]        # the field it reads (and writes) by default; None: the example.
  salt: int                 # mixed into the example's seed: random ops draw independently.
  encoded: bool             # takes still-encoded images (decodes only what it needs).
  sizes: tuple[str, ...]    # factory parameters that are output image sizes.
  affine: bool              # the factory returns an Affine (a per-channel value map).
  # moves the image's values without changing them (patchify): a value map before it
  # is still the pipeline's final one (a checkpoint's normalisation replaces it).
  rearranges: bool = False


_OPS: dict[str, OpInfo] = {}


def register(name: str, *, key: Optional[str] = "image", salt: Optional[int] = None,
             encoded: bool = False, sizes: tuple[str, ...] = (), affine: bool = False,
             rearranges: bool = False):
  """Registers `factory(*args, **kwargs) -> fn(value, rng)` as op `name` (see the module
  docstring). The same name from two different factories is an error: a silent overwrite
  would change what every config using the name computes."""
  def wrap(factory):
    existing = _OPS.get(name)
    if existing is not None and _qualified(existing.factory) != _qualified(factory):
      raise UserError(f"Preprocessing op {name!r} is registered twice: by "
                      f"{_qualified(existing.factory)} and by {_qualified(factory)}; "
                      f"rename one of them.")
    _OPS[name] = OpInfo(name, factory, key,
                        zlib.crc32(name.encode()) & 0x7FFFFFFF if salt is None else salt,
                        encoded, tuple(sizes), affine, rearranges)
    return factory
  return wrap


def _qualified(factory: Callable) -> str:
  return f"{factory.__module__}.{factory.__qualname__}"


def lookup(name: str, *, pipeline: str = "") -> OpInfo:
  if name not in _OPS:
    where = f" in {pipeline!r}" if pipeline else ""
    raise UserError(f"Unknown preprocessing op {name!r}{where}; known ops: "
                    f"{', '.join(sorted(_OPS))}. Ops of your own: register them in a module "
                    f"and name it in config.pp_modules.")
  return _OPS[name]


def known() -> list[str]:
  return sorted(_OPS)
