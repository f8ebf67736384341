"""k-nearest-neighbour accuracy on frozen pooled features (DINO's protocol): each test
image takes the labels of its k most cosine-similar training images, weighted by
exp(similarity / temperature) (temperature 0: a plain majority vote)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vit_jax.evaluators.fewshot import FeaturesEvaluator


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, *, k: int,
                num_classes: int, temperature: float, chunk: int = 1024) -> np.ndarray:
  """Predicted classes of `test_x` (chunks of test rows: memory stays chunk x train)."""
  def unit(x):
    x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  train, k = unit(train_x), min(k, len(train_x))
  predictions = []
  for start in range(0, len(test_x), chunk):
    similarity = unit(test_x[start:start + chunk]) @ train.T
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    weights = (np.exp(np.take_along_axis(similarity, nearest, 1) / temperature)
               if temperature > 0 else np.ones(nearest.shape, np.float32))
    votes = np.zeros((len(nearest), num_classes), np.float64)
    np.add.at(votes, (np.arange(len(nearest))[:, None], train_y[nearest]), weights)
    predictions.append(np.argmax(votes, axis=1))
  return np.concatenate(predictions)


class Evaluator(FeaturesEvaluator):
  """Settings: k (a tuple), temperature (0.07, DINO's), dataset, train_split, test_split,
  pp, batch_size, patch_sizes (FlexiViT: at each, as p<size>_<k>nn_accuracy). Results:
  <k>nn_accuracy."""

  def __init__(self, context, *, k: Sequence[int] = (10, 20), temperature: float = 0.07,
               dataset: str = "", train_split: str = "train", test_split: str = "test",
               pp: str = "", batch_size: int = 0, patch_sizes=()):
    self.k, self.temperature = tuple(k), temperature
    super().__init__(context, dataset=dataset, train_split=train_split,
                     test_split=test_split, pp=pp, batch_size=batch_size,
                     patch_sizes=patch_sizes)

  def scores(self, train_x, train_y, test_x, test_y, num_classes: int) -> dict[str, float]:
    return {f"{k}nn_accuracy": float(np.mean(knn_predict(
        train_x, train_y, test_x, k=k, num_classes=num_classes,
        temperature=self.temperature) == test_y)) for k in self.k}
