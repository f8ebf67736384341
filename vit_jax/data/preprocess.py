"""Preprocessing as an open registry of small named ops, composed from a string:

    "to_rgb|inception_crop(224)|flip_lr|value_range(-1, 1)"

An op works on one field of the example dict ({'image': uint8 (H, W, C), 'label', 'seed'}):
every op takes `key=` (the field it reads; 'image' unless the op says otherwise) and
`outkey=` (where the result goes; the same field by default), e.g.
`resize(64, outkey='small')`. Your own ops live in your own module:

    from vit_jax.data import preprocess

    @preprocess.register("invert")
    def invert():
      return lambda image, seed: 255 - image

and the config names the module (`config.pp_modules = ('my_ops',)`) and the op
(`config.pp_train = '...|invert|...'`). Random ops are stateless: they draw from the
example's own `seed` (derived from the run seed and the example's position in the stream)
folded with the op's name, so a resumed run augments every example exactly as an
uninterrupted run would.
"""
from __future__ import annotations

import ast
import zlib
from typing import Callable, Iterable, Optional

import tensorflow as tf

from vit_jax.errors import UserError
from vit_jax.plugins import import_plugin

Op = Callable[[dict], dict]
_REGISTRY: dict[str, Callable[..., Op]] = {}


def register(name: str, *, key: Optional[str] = "image", salt: Optional[int] = None):
  """Registers `factory(*args, **kwargs) -> fn(value, seed) -> value` as op `name`,
  reading field `key` by default. With key=None the op receives and returns the whole
  example dict. The op's seed is the example's folded with `salt` (default: a hash of the
  name), so that different random ops draw independently."""
  salt = zlib.crc32(name.encode()) & 0x7FFFFFFF if salt is None else salt

  def wrap(factory):
    def make_op(*args, key: Optional[str] = key, outkey: Optional[str] = None, **kwargs) -> Op:
      fn = factory(*args, **kwargs)

      def op(example: dict) -> dict:
        seed = tf.random.experimental.stateless_fold_in(example["seed"], salt)
        if key is None:
          return fn(example, seed)
        if key not in example:
          raise UserError(f"Preprocessing op {name!r} reads field {key!r}, which the "
                          f"example does not have (fields: {sorted(example)}).")
        return {**example, outkey or key: fn(example[key], seed)}
      return op

    _REGISTRY[name] = make_op
    return factory
  return wrap


def import_modules(modules: Iterable[str]) -> None:
  """Imports the config's `pp_modules`, whose ops register themselves on import."""
  for module in modules:
    import_plugin(module, package=None, what="pp_modules entry")


def _size2(size) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else tuple(size)


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


# Salts 1-3: those of earlier versions, so a run resumed across versions augments alike.
@register("inception_crop", salt=1)
def inception_crop(size, area_min: float = 5, area_max: float = 100):
  """Random crop of 5-100% of the area, aspect 3/4-4/3, resized to `size` (GoogLeNet)."""
  def crop(image, seed):
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4], tf.float32), seed=seed,
        area_range=(area_min / 100, area_max / 100), min_object_covered=0,
        use_image_if_no_bounding_boxes=True)
    patch = tf.slice(image, begin, crop_size)
    return _to_uint8(tf.image.resize(patch, _size2(size), method="bilinear", antialias=True))
  return crop


@register("resize")
def resize(size):
  """Bilinear (antialiased) resize to `size` (int or (height, width)), uint8 out."""
  def op(image, seed):
    del seed
    return _to_uint8(tf.image.resize(image, _size2(size), method="bilinear", antialias=True))
  return op


@register("random_crop", salt=2)
def random_crop(size):
  def op(image, seed):
    height, width = _size2(size)
    return tf.image.stateless_random_crop(image, [height, width, tf.shape(image)[-1]], seed=seed)
  return op


@register("central_crop")
def central_crop(size):
  """The centre `size` crop: 'resize(256)|central_crop(224)' is the ImageNet evaluation."""
  def op(image, seed):
    del seed
    height, width = _size2(size)
    top = (tf.shape(image)[0] - height) // 2
    left = (tf.shape(image)[1] - width) // 2
    return image[top:top + height, left:left + width]
  return op


@register("flip_lr", salt=3)
def flip_lr():
  return tf.image.stateless_random_flip_left_right


@register("to_rgb")
def to_rgb():
  """Grayscale (1 channel) -> 3 identical channels; RGB(A) -> its first 3 channels."""
  def op(image, seed):
    del seed
    image = tf.cond(tf.shape(image)[-1] == 1, lambda: tf.tile(image, [1, 1, 3]),
                    lambda: image[..., :3])
    image.set_shape([None, None, 3])
    return image
  return op


@register("value_range")
def value_range(low: float = -1, high: float = 1):
  """uint8 [0, 255] -> float32 [low, high]; the paper's inputs are in [-1, 1]."""
  def op(image, seed):
    del seed
    return tf.cast(image, tf.float32) / 255.0 * (high - low) + low
  return op


@register("multi_hot", key="label")
def multi_hot(num_classes: int):
  """A list of labels (multi-label pre-training) -> a {0, 1} vector."""
  def op(labels, seed):
    del seed
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    return tf.reduce_max(tf.one_hot(labels, num_classes, dtype=tf.float32), axis=0)
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


def parse(pipeline: str) -> Op:
  """'op1(args)|op2|...' -> one function applying the ops in order."""
  ops = []
  for spec in filter(None, (s.strip() for s in pipeline.split("|"))):
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
