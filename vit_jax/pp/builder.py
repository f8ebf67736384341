"""Preprocessing pipelines as strings of registered ops, composed big_vision style:

    "to_rgb|inception_crop(224)|flip_lr|value_range(-1, 1)"

The one parser of a pp string. Everything else that needs to know about a pipeline asks
here, and this module asks the registry (`vit_jax.pp.registry`): the image size it makes
(`output_size`), the same pipeline at another resolution (`rescale`), its final value map
split off to run on the accelerator (`split_device_affine`) or replaced by a checkpoint's
(`with_final_affine`).

An op works on one field of the example dict ({'image': uint8 (H, W, C), 'label', 'seed'});
every op takes `key=` (the field it reads) and `outkey=` (where the result goes; the same
field by default), e.g. `resize(64, outkey='small')`. Random ops draw from `rng`, a numpy
Generator seeded by the example's own `seed` (run seed, data shard, position in the
stream) and the op's salt, so a resumed run augments every example exactly as an
uninterrupted run would, whatever the number of input workers.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
from typing import Callable, Iterable, Mapping, Optional

import numpy as np

from vit_jax.errors import UserError
from vit_jax.plugins import import_plugin
from vit_jax.pp import ops_general, ops_image, ops_naflex, randaugment  # noqa: F401  (the built-in ops)
from vit_jax.pp import registry
from vit_jax.pp.images import EncodedImage, size2

Op = Callable[[dict], dict]
_ROUTING = ("key", "outkey")  # arguments every op takes, consumed here, not by the factory.


@dataclasses.dataclass(frozen=True)
class OpSpec:
  """One parsed op: `name(*args, **kwargs)`."""
  name: str
  args: tuple = ()
  kwargs: tuple[tuple[str, object], ...] = ()

  @property
  def info(self) -> registry.OpInfo:
    return registry.lookup(self.name)

  @property
  def factory_kwargs(self) -> dict:
    return {k: v for k, v in self.kwargs if k not in _ROUTING}

  @property
  def reads(self) -> Optional[str]:
    return dict(self.kwargs).get("key", self.info.key)

  @property
  def writes(self) -> Optional[str]:
    return dict(self.kwargs).get("outkey") or self.reads

  def bound(self) -> inspect.BoundArguments:
    """The arguments by the factory's parameter names (defaults filled in)."""
    try:
      bound = inspect.signature(self.info.factory).bind(*self.args, **self.factory_kwargs)
    except TypeError as e:
      raise UserError(f"Preprocessing op {str(self)!r}: {e}.") from None
    bound.apply_defaults()
    return bound

  def make(self):
    """The factory's per-value function (or Affine)."""
    try:
      return self.info.factory(*self.args, **self.factory_kwargs)
    except TypeError as e:
      raise UserError(f"Preprocessing op {str(self)!r}: {e}.") from None

  def output_size(self) -> Optional[tuple[int, int]]:
    """(height, width) of the image this op makes, when one of its sizes says so."""
    if self.writes != "image" or not self.info.sizes:
      return None
    return size2(self.bound().arguments[self.info.sizes[-1]])

  def rescaled(self, scale: float) -> "OpSpec":
    """The same op with every declared size multiplied by `scale` (rounded, >= 1)."""
    if not self.info.sizes:
      return self
    names = list(inspect.signature(self.info.factory).parameters)
    args, kwargs = list(self.args), dict(self.kwargs)
    for size_name in self.info.sizes:
      if size_name in kwargs:
        kwargs[size_name] = _scale(kwargs[size_name], scale)
      elif names.index(size_name) < len(args):
        args[names.index(size_name)] = _scale(args[names.index(size_name)], scale)
    return OpSpec(self.name, tuple(args), tuple(kwargs.items()))

  def __str__(self) -> str:
    parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
    return f"{self.name}({', '.join(parts)})" if parts else self.name


def _scale(size, scale: float):
  if isinstance(size, (tuple, list)):
    return tuple(max(1, round(s * scale)) for s in size)
  return max(1, round(size * scale))


def _parse_one(spec: str) -> OpSpec:
  try:
    node = ast.parse(spec.strip(), mode="eval").body
    if isinstance(node, ast.Name):
      return OpSpec(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      return OpSpec(node.func.id, tuple(ast.literal_eval(a) for a in node.args),
                    tuple((k.arg, ast.literal_eval(k.value)) for k in node.keywords))
  except (SyntaxError, ValueError):
    pass
  raise UserError(f"Cannot parse preprocessing op {spec!r}; write name or name(args), "
                  f"e.g. 'inception_crop(224)'.")


def parse(pipeline: str) -> list[OpSpec]:
  """'op1(args)|op2|...' -> the ops, each checked against the registry."""
  specs = [_parse_one(s) for s in pipeline.split("|") if s.strip()]
  for spec in specs:
    registry.lookup(spec.name, pipeline=pipeline)
  return specs


def join(specs: Iterable[OpSpec]) -> str:
  return "|".join(str(s) for s in specs)


def import_modules(modules: Iterable[str]) -> None:
  """Imports the config's `pp_modules`, whose ops register themselves on import."""
  for module in modules:
    import_plugin(module, package=None, what="pp_modules entry")


class _LazyGenerator:
  """A numpy Generator seeded by (example seed, salt), made on first use: deterministic
  ops never pay for seeding one."""

  def __init__(self, seed, salt: int):
    self._entropy, self._generator = [*(int(s) for s in seed), salt], None

  def __getattr__(self, name):
    if self._generator is None:
      self._generator = np.random.default_rng(self._entropy)
    return getattr(self._generator, name)


def _op(spec: OpSpec) -> Op:
  info, fn = spec.info, spec.make()
  key, outkey = spec.reads, spec.writes

  def op(example: dict) -> dict:
    rng = _LazyGenerator(example["seed"], info.salt)
    if key is None:
      return fn(example, rng)
    if key not in example:
      raise UserError(f"Preprocessing op {spec.name!r} reads field {key!r}, which the "
                      f"example does not have (fields: {sorted(example)}).")
    value = example[key]
    if isinstance(value, EncodedImage) and not info.encoded:
      value = value.decode()
    return {**example, outkey: fn(value, rng)}
  return op


def build(pipeline: str) -> Op:
  """'op1(args)|op2|...' -> one function applying the ops in order to an example dict."""
  ops = [_op(spec) for spec in parse(pipeline)]

  def apply(example):
    for op in ops:
      example = op(example)
    return example
  return apply


def output_size(pipeline: str) -> Optional[tuple[int, int]]:
  """(height, width) of the images `pipeline` makes: its last op with a declared size."""
  sizes = [s.output_size() for s in parse(pipeline)]
  sizes = [s for s in sizes if s is not None]
  return sizes[-1] if sizes else None


def rescale(pipeline: str, resolution: int) -> str:
  """Every declared size in `pipeline` scaled so that its output is `resolution` high."""
  current = output_size(pipeline)
  if current is None:
    return pipeline
  return join(s.rescaled(resolution / current[0]) for s in parse(pipeline))


def _final_affine_index(specs: list[OpSpec], *, through_rearranging: bool = True
                        ) -> Optional[int]:
  """The index of the image's last op when it is a value map (affine) and nothing after
  it touches the image (but, `through_rearranging`, ops that only move its values:
  patchify); None otherwise."""
  for index in reversed(range(len(specs))):
    spec = specs[index]
    if spec.info.affine and spec.reads == spec.writes == "image":
      return index
    if through_rearranging and spec.info.rearranges:
      continue
    if spec.reads is None or "image" in (spec.reads, spec.writes):
      return None
  return None


def resolve_pipelines(pipelines: Mapping[str, str], *, modules: Iterable[str] = (),
                      resolution: Optional[int] = None,
                      value_map: Optional[str] = None) -> dict[str, str]:
  """A config's pp strings resolved in one pass: `modules` imported (their ops declare
  their own sizes), every size rescaled to `resolution`, the final value map replaced by
  `value_map` (a checkpoint's normalisation). ({key: pp}; the train step's device part is
  split off last, `split_device_affine`.)"""
  import_modules(modules)
  resolved = {}
  for key, pipeline in pipelines.items():
    if resolution:
      pipeline = rescale(pipeline, resolution)
    resolved[key] = with_final_affine(pipeline, value_map) if value_map else pipeline
  return resolved


def split_device_affine(pipeline: str) -> tuple[str, Optional[ops_image.Affine]]:
  """(host pp, affine): the image's final value map taken out of `pipeline` to run on the
  accelerator. The input workers then hand over uint8 images: a quarter of the bytes to
  copy between processes and to the device, and no float conversion on the host. Ops
  after it on other fields (e.g. multi_hot on the label) stay; anything else leaves the
  pipeline whole (affine None)."""
  specs = parse(pipeline)
  # Not through patchify: a per-channel map does not fit the patches it makes.
  index = _final_affine_index(specs, through_rearranging=False)
  if index is None:
    return pipeline, None
  return join(specs[:index] + specs[index + 1:]), specs[index].make()


def final_affine(pipeline: str) -> Optional[OpSpec]:
  specs = parse(pipeline)
  index = _final_affine_index(specs)
  return None if index is None else specs[index]


def with_final_affine(pipeline: str, affine: str) -> str:
  """`pipeline` with its final value map replaced by `affine` (e.g. a checkpoint's own
  normalisation); unchanged when it ends in none."""
  specs = parse(pipeline)
  index = _final_affine_index(specs)
  if index is None:
    return pipeline
  return join(specs[:index] + parse(affine) + specs[index + 1:])
