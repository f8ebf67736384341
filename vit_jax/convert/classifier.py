"""A classifier that answers with labels, like transformers' image-classification pipeline:

    classifier = vit_jax.Classifier.from_pretrained("/tmp/vit_quickstart")
    classifier.predict(["cat.jpg", "dog.png"])   # or uint8 arrays, one image or a batch
    # -> [[("cat", 0.91), ("dog", 0.05), ...], [...]]

Any checkpoint `vit_jax.load_pretrained` takes (a run, .npz, timm file, Hugging Face
directory, Hub name); the class names come with it (a run's labels.txt, a Hugging Face
config's id2label) or from `labels_file`, else they are the class indices.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from vit_jax.convert import inference
from vit_jax.convert.pretrained import Preprocessing
from vit_jax.errors import UserError
from vit_jax.models import naflex

Prediction = list[tuple[str, float]]


class Classifier:
  """A checkpoint's model, preprocessing and class names, jitted once per batch size."""

  def __init__(self, loaded: inference.LoadedModel):
    import jax  # pylint: disable=g-import-not-at-top
    if not loaded.model.num_classes:
      raise UserError("this checkpoint has no classification head (a feature extractor); "
                      "use vit_jax.load_pretrained and return_representation=True.")
    self.loaded = loaded
    self.preprocess = Preprocessing(loaded.pp)
    # (params, images) -> softmax probabilities, jitted.
    self.forward = jax.jit(
        lambda params, x: jax.nn.softmax(loaded.model.apply({"params": params}, x), -1))

  @classmethod
  def from_pretrained(cls, checkpoint: str, *, labels_file: Optional[str] = None,
                      model_name: Optional[str] = None) -> "Classifier":
    return cls(inference.load(checkpoint, model_name=model_name, labels_file=labels_file))

  @property
  def labels(self) -> list[str]:
    return [self.loaded.label(i) for i in range(self.loaded.model.num_classes)]

  def probabilities(self, images: Union[str, Sequence[str], np.ndarray]) -> np.ndarray:
    """(N, classes) softmax probabilities of image files or uint8 images."""
    if isinstance(images, str) or (isinstance(images, (list, tuple)) and images
                                   and isinstance(images[0], str)):
      paths = [images] if isinstance(images, str) else list(images)
      batch, ok, errors = inference.preprocess_files(paths, self.loaded.pp)
      if errors:
        path, error = next(iter(errors.items()))
        raise UserError(f"cannot read {path}: {error}")
    else:
      array = np.asarray(images)
      batch = self.preprocess(array)
      if Preprocessing.is_one_image(array) and not isinstance(batch, naflex.Patches):
        batch = batch[None]
    return np.asarray(self.forward(self.loaded.params, batch))

  def predict(self, images, *, top_k: int = 5) -> Union[Prediction, list[Prediction]]:
    """The `top_k` (label, probability) pairs, best first: a list for one image (a path
    or an (H, W[, C]) array), a list of lists for several."""
    probabilities = self.probabilities(images)
    answers = [[(self.loaded.label(int(i)), float(p[i])) for i in np.argsort(-p)[:top_k]]
               for p in probabilities]
    single = isinstance(images, str) or (
        not isinstance(images, (list, tuple)) and Preprocessing.is_one_image(np.asarray(images)))
    return answers[0] if single else answers
