"""A mock of TFDS `imagenet2012_real` for offline tests: the digits with `original_label`
and a `real_label` list per image (some with two labels, some with none, as ReaL has)."""
import numpy as np
import tensorflow_datasets as tfds

from vit_jax.data import offline

NUM = 120


def real_labels(index: int, label: int) -> list[int]:
  """Deterministic: every 5th image has no label, every 3rd also the next class."""
  if index % 5 == 0:
    return []
  return [label, (label + 1) % 10] if index % 3 == 0 else [label]


class MockReal(tfds.core.GeneratorBasedBuilder):
  """Digits shaped as imagenet2012_real."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(8, 8, 1)),
        "original_label": tfds.features.ClassLabel(num_classes=10),
        "real_label": tfds.features.Sequence(tfds.features.ClassLabel(num_classes=10)),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    images, labels = offline.LOADERS["sklearn_digits"]()["test"]
    return {"validation": self._generate_examples(images[:NUM], labels[:NUM])}

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "original_label": int(label),
                "real_label": np.asarray(real_labels(i, int(label)), np.int64)}
