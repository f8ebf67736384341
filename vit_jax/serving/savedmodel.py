"""A TF SavedModel through jax2tf with a `serving_default` signature (batch axis
polymorphic). TensorFlow is only in the `tfds` / `test` extras: heavy, not installed by
default."""
from __future__ import annotations

from vit_jax.errors import UserError
from vit_jax.serving.graph import Serving


def write(serving: Serving, directory: str) -> None:
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(f"SavedModel export needs TensorFlow ({e}); pip install -e '.[tfds]'.") \
        from None
  params = serving.params
  converted = jax2tf.convert(lambda images: serving.fn(params, images),
                             polymorphic_shapes=["(b, ...)"], with_gradient=False)
  module = tf.Module()
  module.f = tf.function(converted, autograph=False, input_signature=[tf.TensorSpec(
      (None, *serving.input_shape), tf.as_dtype(serving.input_dtype), name="images")])
  tf.saved_model.save(module, directory, signatures={"serving_default": module.f})
