"""Preprocessing as a registry of small named ops, composed from a string:

    "inception_crop(224)|flip_lr|value_range(-1, 1)"

Every op maps an example dict ({'image': uint8 (H, W, C), 'label', 'seed'}) to a new one.
Random ops are stateless: they draw from the example's own `seed` (derived from the run
seed and the example's position in the stream), so a resumed run augments every example
exactly as an uninterrupted run would.
"""
from __future__ import annotations

import ast
from typing import Callable

import tensorflow as tf

Op = Callable[[dict], dict]
_REGISTRY: dict[str, Callable[..., Op]] = {}


def register(name: str):
  def wrap(factory):
    _REGISTRY[name] = factory
    return factory
  return wrap


def _op_seed(example: dict, salt: int) -> tf.Tensor:
  return tf.random.experimental.stateless_fold_in(example["seed"], salt)


def _size2(size) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else tuple(size)


@register("inception_crop")
def inception_crop(size, area_min: float = 5, area_max: float = 100) -> Op:
  """Random crop of 5-100% of the area, aspect 3/4-4/3, resized to `size` (GoogLeNet)."""
  def op(example):
    image = example["image"]
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4], tf.float32), seed=_op_seed(example, 1),
        area_range=(area_min / 100, area_max / 100), min_object_covered=0,
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, crop_size)
    crop = tf.image.resize(crop, _size2(size), method="bilinear", antialias=True)
    return {**example, "image": tf.cast(tf.clip_by_value(tf.round(crop), 0, 255), tf.uint8)}
  return op


@register("resize")
def resize(size) -> Op:
  def op(example):
    image = tf.image.resize(example["image"], _size2(size), method="bilinear", antialias=True)
    return {**example, "image": tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)}
  return op


@register("random_crop")
def random_crop(size) -> Op:
  def op(example):
    image = example["image"]
    height, width = _size2(size)
    crop = tf.image.stateless_random_crop(
        image, [height, width, tf.shape(image)[-1]], seed=_op_seed(example, 2))
    return {**example, "image": crop}
  return op


@register("central_crop")
def central_crop(size) -> Op:
  def op(example):
    height, width = _size2(size)
    image = example["image"]
    top = (tf.shape(image)[0] - height) // 2
    left = (tf.shape(image)[1] - width) // 2
    return {**example, "image": image[top:top + height, left:left + width]}
  return op


@register("flip_lr")
def flip_lr() -> Op:
  def op(example):
    image = tf.image.stateless_random_flip_left_right(example["image"], _op_seed(example, 3))
    return {**example, "image": image}
  return op


@register("to_rgb")
def to_rgb() -> Op:
  """Grayscale (1 channel) -> 3 identical channels; RGB passes through."""
  def op(example):
    image = example["image"]
    image = tf.cond(tf.shape(image)[-1] == 1, lambda: tf.tile(image, [1, 1, 3]),
                    lambda: image[..., :3])
    image.set_shape([None, None, 3])
    return {**example, "image": image}
  return op


@register("value_range")
def value_range(low: float = -1, high: float = 1) -> Op:
  """uint8 [0, 255] -> float32 [low, high]; the paper's inputs are in [-1, 1]."""
  def op(example):
    image = tf.cast(example["image"], tf.float32) / 255.0
    return {**example, "image": image * (high - low) + low}
  return op


@register("multi_hot")
def multi_hot(num_classes: int) -> Op:
  """A list of labels (multi-label pre-training) -> a {0, 1} vector."""
  def op(example):
    labels = tf.reshape(tf.cast(example["label"], tf.int64), [-1])
    vector = tf.reduce_max(tf.one_hot(labels, num_classes, dtype=tf.float32), axis=0)
    return {**example, "label": vector}
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
  raise ValueError(f"Cannot parse preprocessing op {spec!r}; write name or name(args), "
                   f"e.g. 'inception_crop(224)'.")


def parse(pipeline: str) -> Op:
  """'op1(args)|op2|...' -> one function applying the ops in order."""
  ops = []
  for spec in filter(None, (s.strip() for s in pipeline.split("|"))):
    name, args, kwargs = _parse(spec)
    if name not in _REGISTRY:
      raise ValueError(f"Unknown preprocessing op {name!r} in {pipeline!r}; known ops: "
                       f"{', '.join(sorted(_REGISTRY))}.")
    ops.append(_REGISTRY[name](*args, **kwargs))

  def apply(example):
    for op in ops:
      example = op(example)
    return example
  return apply
