"""Few-shot linear evaluation on frozen pre-logit features (as in the paper, big_vision).

For k examples per class, solve a ridge regression to {-1, +1}^C targets in closed form
and report top-1 accuracy on held-out images. Cheap enough to run during pre-training.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from vit_jax.data import device_feed
from vit_jax.errors import UserError
from vit_jax.evaluators.common import at_patch_sizes
from vit_jax.models import naflex


def first_k_per_class(labels: np.ndarray, k: int, num_classes: int) -> np.ndarray:
  """Indices of the first k examples of every class, in dataset order."""
  chosen = []
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)[:k]
    if len(members) < k:
      raise UserError(f"Few-shot: class {c} has {len(members)} examples, fewer than "
                       f"{k}-shot needs; use a larger train split or fewer shots.")
    chosen.append(members)
  return np.concatenate(chosen)


def ridge_fit(features: np.ndarray, labels: np.ndarray, num_classes: int,
              l2_reg: float) -> tuple[np.ndarray, np.ndarray]:
  """Closed-form ridge regression to {-1, 1} targets; features are centred so the bias is
  not regularised. Returns (weights (D, C), bias (C,))."""
  x = features.astype(np.float64)
  mean = x.mean(0, keepdims=True)
  x = x - mean
  targets = 2.0 * np.eye(num_classes)[labels] - 1.0
  gram = x.T @ x + l2_reg * np.eye(x.shape[1])
  weights = np.linalg.solve(gram, x.T @ targets)
  bias = targets.mean(0) - (mean @ weights)[0]
  return weights, bias


def probe_accuracies(train_features: np.ndarray, train_labels: np.ndarray,
             test_features: np.ndarray, test_labels: np.ndarray, *, shots: Sequence[int],
             num_classes: int, l2_reg: float) -> dict[str, float]:
  results = {}
  for k in shots:
    idx = first_k_per_class(train_labels, k, num_classes)
    weights, bias = ridge_fit(train_features[idx], train_labels[idx], num_classes, l2_reg)
    predicted = np.argmax(test_features @ weights + bias, axis=1)
    results[f"{k}shot_accuracy"] = float(np.mean(predicted == test_labels))
  return results


def collect_features(represent: Callable, batches: Iterable[dict]) -> tuple[np.ndarray, np.ndarray]:
  """`represent(batch)` -> replicated (features, labels, mask) for each padded batch;
  returns the real rows' features and labels on the host (all processes' rows)."""
  features, labels = [], []
  for batch in batches:
    out, batch_labels, mask = (np.asarray(x) for x in represent(batch))
    features.append(out[mask > 0])
    labels.append(batch_labels[mask > 0])
  return np.concatenate(features), np.concatenate(labels)


class SplitFeatures:
  """The frozen pooled (pre-logit) features of whole splits, on the training mesh: what
  the few-shot probes and the k-NN evaluator classify."""

  def __init__(self, context, *, dataset: str, splits: Sequence[str], pp: str,
               batch_size: int, patch_size: Optional[int] = None):
    self.num_classes = context.source(dataset).num_classes
    self.data = [context.eval_data(dataset=dataset, split=split, pp=pp, batch_size=batch_size)
                 for split in splits]
    self.mesh = context.built.mesh
    model = context.built.at_patch_size(patch_size)

    def represent(params, batch):
      features = model.apply({"params": params}, naflex.model_input(batch), train=False,
                             return_representation=True)
      return features, batch["label"], batch["mask"]
    self.represent = context.built.jit_on_params(represent)

  def collect(self, params) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(features, labels)] of each split, on the host."""
    return [collect_features(lambda batch: self.represent(params, batch),
                             device_feed.prefetch_to_mesh(data, self.mesh))
            for data in self.data]



class FeaturesEvaluator:
  """An evaluator of the frozen features of a training and a test split (few-shot, k-NN),
  at each of `patch_sizes` (common.at_patch_sizes); subclasses give `scores`."""

  def __init__(self, context, *, dataset: str, train_split: str, test_split: str, pp: str,
               batch_size: int, patch_sizes=()):
    self._at_sizes = at_patch_sizes(patch_sizes, lambda size: SplitFeatures(
        context, dataset=dataset, splits=(train_split, test_split), pp=pp,
        batch_size=batch_size, patch_size=size), self._run)

  def run(self, params) -> dict:
    return self._at_sizes(params)

  def _run(self, features, params) -> dict[str, float]:
    (train_x, train_y), (test_x, test_y) = features.collect(params)
    return self.scores(train_x, train_y, test_x, test_y, features.num_classes)

  def scores(self, train_x, train_y, test_x, test_y, num_classes: int) -> dict[str, float]:
    raise NotImplementedError


class Evaluator(FeaturesEvaluator):
  """Settings: shots, dataset ('' = the run's), train_split, test_split, pp ('' =
  pp_eval), l2_reg, batch_size (0 = eval_batch_size), patch_sizes (FlexiViT: at each, as
  p<size>_<k>shot_accuracy). Results: <k>shot_accuracy."""

  def __init__(self, context, *, shots: Sequence[int] = (1, 5, 10), dataset: str = "",
               train_split: str = "train", test_split: str = "test", pp: str = "",
               l2_reg: float = 2.0**10, batch_size: int = 0, patch_sizes=()):
    self.shots, self.l2_reg = tuple(shots), l2_reg
    super().__init__(context, dataset=dataset, train_split=train_split,
                     test_split=test_split, pp=pp, batch_size=batch_size,
                     patch_sizes=patch_sizes)

  def scores(self, train_x, train_y, test_x, test_y, num_classes: int) -> dict[str, float]:
    return probe_accuracies(train_x, train_y, test_x, test_y, shots=self.shots,
                            num_classes=num_classes, l2_reg=self.l2_reg)
