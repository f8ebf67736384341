"""Preprocessing as an open registry of small named ops, composed from a string:

    "to_rgb|inception_crop(224)|flip_lr|value_range(-1, 1)"

Ops are plain numpy/PIL on one example (no TensorFlow): they run in the input workers.
An op works on one field of the example dict ({'image': uint8 (H, W, C), 'label', 'seed'}):
every op takes `key=` (the field it reads; 'image' unless the op says otherwise) and
`outkey=` (where the result goes; the same field by default), e.g.
`resize(64, outkey='small')`. Your own ops live in your own module:

    from vit_jax.data import preprocess

    @preprocess.register("invert")
    def invert():
      return lambda image, rng: 255 - image

and the config names the module (`config.pp_modules = ('my_ops',)`) and the op
(`config.pp_train = '...|invert|...'`). Random ops draw from `rng`, a numpy Generator
seeded by the example's own `seed` (run seed, data shard, position in the stream) and the
op's name, so a resumed run augments every example exactly as an uninterrupted run would,
whatever the number of input workers.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import zlib
from typing import Any, Callable, Iterable, Optional

import numpy as np

from vit_jax.errors import UserError
from vit_jax.data.images import EncodedImage, crop_and_resize, image_hw, size2
from vit_jax.plugins import import_plugin

Op = Callable[[dict], dict]
_REGISTRY: dict[str, Callable[..., Op]] = {}
_FACTORIES: dict[str, Callable] = {}      # name -> the registered factory.
_DEFAULT_KEYS: dict[str, Optional[str]] = {}  # name -> the field it reads by default.


def register(name: str, *, key: Optional[str] = "image", salt: Optional[int] = None,
             encoded: bool = False):
  """Registers `factory(*args, **kwargs) -> fn(value, rng) -> value` as op `name`,
  reading field `key` by default. With key=None the op receives and returns the whole
  example dict. The op's generator is seeded by the example's seed and `salt` (default: a
  hash of the name), so that different random ops draw independently. An image that is
  still encoded (`images.EncodedImage`) is decoded before the op, unless the op says it
  takes encoded images (`encoded=True`)."""
  salt = zlib.crc32(name.encode()) & 0x7FFFFFFF if salt is None else salt

  def wrap(factory):
    def make_op(*args, key: Optional[str] = key, outkey: Optional[str] = None, **kwargs) -> Op:
      fn = factory(*args, **kwargs)

      def op(example: dict) -> dict:
        rng = _LazyGenerator(example["seed"], salt)
        if key is None:
          return fn(example, rng)
        if key not in example:
          raise UserError(f"Preprocessing op {name!r} reads field {key!r}, which the "
                          f"example does not have (fields: {sorted(example)}).")
        value = example[key]
        if isinstance(value, EncodedImage) and not encoded:
          value = value.decode()
        return {**example, outkey or key: fn(value, rng)}
      return op

    _REGISTRY[name] = make_op
    _FACTORIES[name], _DEFAULT_KEYS[name] = factory, key
    return factory
  return wrap


class _LazyGenerator:
  """A numpy Generator seeded by (example seed, salt), made on first use: deterministic
  ops never pay for seeding one."""

  def __init__(self, seed, salt: int):
    self._entropy, self._generator = [*(int(s) for s in seed), salt], None

  def __getattr__(self, name):
    if self._generator is None:
      self._generator = np.random.default_rng(self._entropy)
    return getattr(self._generator, name)


def import_modules(modules: Iterable[str]) -> None:
  """Imports the config's `pp_modules`, whose ops register themselves on import."""
  for module in modules:
    import_plugin(module, package=None, what="pp_modules entry")


def sample_crop_window(height: int, width: int, rng: np.random.Generator, *,
                       area_range=(0.05, 1.0), aspect_range=(3 / 4, 4 / 3),
                       attempts: int = 10) -> tuple[int, int, int, int]:
  """(top, left, crop height, crop width) covering a uniform fraction of the area in
  `area_range` with a uniform aspect ratio in `aspect_range` (GoogLeNet's crop, as
  TensorFlow's sample_distorted_bounding_box draws it); the whole image when no draw fits."""
  for _ in range(attempts):
    area = rng.uniform(*area_range) * height * width
    aspect = rng.uniform(*aspect_range)
    crop_h = int(round(math.sqrt(area / aspect)))
    crop_w = int(round(math.sqrt(area * aspect)))
    if 0 < crop_h <= height and 0 < crop_w <= width:
      top = int(rng.integers(0, height - crop_h + 1))
      left = int(rng.integers(0, width - crop_w + 1))
      return top, left, crop_h, crop_w
  return 0, 0, height, width


# Salts 1-3: stable across versions, so a resumed run augments alike.
@register("inception_crop", salt=1, encoded=True)
def inception_crop(size, area_min: float = 5, area_max: float = 100):
  """Random crop of 5-100% of the area, aspect 3/4-4/3, resized to `size` (GoogLeNet)."""
  def crop(image, rng):
    window = sample_crop_window(*image_hw(image), rng,
                                area_range=(area_min / 100, area_max / 100))
    return crop_and_resize(image, window, size)
  return crop


@register("resize", encoded=True)
def resize(size):
  """Bilinear (antialiased) resize to `size` (int or (height, width)), uint8 out."""
  return lambda image, rng: crop_and_resize(image, (0, 0, *image_hw(image)), size)


@register("random_crop", salt=2)
def random_crop(size):
  def op(image, rng):
    height, width = size2(size)
    if height > image.shape[0] or width > image.shape[1]:
      raise UserError(f"random_crop({size}) of a {image.shape[0]}x{image.shape[1]} image: "
                      f"resize first (e.g. 'resize({max(height, width)})|random_crop(...)').")
    top = int(rng.integers(0, image.shape[0] - height + 1))
    left = int(rng.integers(0, image.shape[1] - width + 1))
    return image[top:top + height, left:left + width]
  return op


@register("central_crop")
def central_crop(size):
  """The centre `size` crop: 'resize(256)|central_crop(224)' is the ImageNet evaluation."""
  def op(image, rng):
    height, width = size2(size)
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return image[top:top + height, left:left + width]
  return op


@register("flip_lr", salt=3)
def flip_lr():
  return lambda image, rng: image[:, ::-1] if rng.integers(2) else image


@register("to_rgb")
def to_rgb():
  """Grayscale (1 channel) -> 3 identical channels; RGB(A) -> its first 3 channels."""
  return lambda image, rng: np.repeat(image, 3, -1) if image.shape[-1] == 1 else image[..., :3]


@dataclasses.dataclass(frozen=True, eq=False)
class Affine:
  """images -> float32 images * scale + offset (per channel): `value_range` and
  `normalize`. The same map runs on numpy arrays (in the input workers) or jax arrays (in
  the train step, see `split_device_affine`)."""
  scale: np.ndarray
  offset: np.ndarray

  @classmethod
  def of(cls, scale, offset) -> "Affine":
    return cls(np.asarray(scale, np.float32), np.asarray(offset, np.float32))

  def __call__(self, images, rng=None) -> Any:
    return images.astype(np.float32) * self.scale + self.offset


@register("value_range")
def value_range(low: float = -1, high: float = 1) -> Affine:
  """uint8 [0, 255] -> float32 [low, high]; the paper's inputs are in [-1, 1]."""
  return Affine.of((high - low) / 255.0, low)


@register("normalize")
def normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> Affine:
  """uint8 -> float32 (image / 255 - mean) / std, per channel: timm's and DINOv2's inputs
  (the defaults are ImageNet's statistics)."""
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  return Affine.of(1.0 / (255.0 * std), -mean / std)


@register("multi_hot", key="label")
def multi_hot(num_classes: int):
  """A list of labels (multi-label pre-training) -> a {0, 1} vector."""
  def op(labels, rng):
    out = np.zeros(num_classes, np.float32)
    out[np.asarray(labels, np.int64).reshape(-1)] = 1.0
    return out
  return op


def _parse(spec: str) -> tuple[str, tuple, dict]:
  try:
    node = ast.parse(spec.strip(), mode="eval").body
    if isinstance(node, ast.Name):
      return node.id, (), {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      return (node.func.id, tuple(ast.literal_eval(a) for a in node.args),
              {k.arg: ast.literal_eval(k.value) for k in node.keywords})
  except (SyntaxError, ValueError):
    pass
  raise UserError(f"Cannot parse preprocessing op {spec!r}; write name or name(args), "
                  f"e.g. 'inception_crop(224)'.")


def _specs(pipeline: str) -> list[str]:
  return list(filter(None, (s.strip() for s in pipeline.split("|"))))


def parse(pipeline: str) -> Op:
  """'op1(args)|op2|...' -> one function applying the ops in order."""
  ops = []
  for spec in _specs(pipeline):
    name, args, kwargs = _parse(spec)
    if name not in _REGISTRY:
      raise UserError(f"Unknown preprocessing op {name!r} in {pipeline!r}; known ops: "
                      f"{', '.join(sorted(_REGISTRY))}. Ops of your own: register them in a "
                      f"module and name it in config.pp_modules.")
    try:
      ops.append(_REGISTRY[name](*args, **kwargs))
    except TypeError as e:
      raise UserError(f"Preprocessing op {spec!r}: {e}.") from None

  def apply(example):
    for op in ops:
      example = op(example)
    return example
  return apply


def split_device_affine(pipeline: str) -> tuple[str, Optional[Affine]]:
  """(host pp, affine): the image's last op, when it is `value_range` or `normalize`,
  taken out of `pipeline` to run on the accelerator. The input workers then hand over
  uint8 images: a quarter of the bytes to copy between processes and to the device, and
  no float conversion on the host. Ops after it on other fields (e.g. multi_hot on the
  label) stay; anything else leaves the pipeline whole (affine None)."""
  specs = _specs(pipeline)
  for index in reversed(range(len(specs))):
    name, args, kwargs = _parse(specs[index])
    reads = kwargs.get("key", _DEFAULT_KEYS.get(name, "image"))
    writes = kwargs.get("outkey") or reads
    if name in ("value_range", "normalize") and reads == writes == "image":
      kwargs = {k: v for k, v in kwargs.items() if k not in ("key", "outkey")}
      try:
        affine = _FACTORIES[name](*args, **kwargs)
      except TypeError as e:
        raise UserError(f"Preprocessing op {specs[index]!r}: {e}.") from None
      return "|".join(specs[:index] + specs[index + 1:]), affine
    if reads is None or "image" in (reads, writes):
      break
  return pipeline, None


# RandAugment's op registers itself (it builds on `register` above).
from vit_jax.data import randaugment  # noqa: E402,F401  pylint: disable=g-import-not-at-top,wrong-import-position
