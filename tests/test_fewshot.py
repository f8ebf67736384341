"""Few-shot linear evaluation: closed-form ridge vs scikit-learn, shot selection."""
import numpy as np
import pytest
from sklearn.linear_model import Ridge

from vit_jax.evaluators import fewshot


def test_ridge_fit_matches_sklearn():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((60, 7))
  labels = rng.integers(0, 4, 60)
  weights, bias = fewshot.ridge_fit(x, labels, 4, l2_reg=3.0)
  reference = Ridge(alpha=3.0, fit_intercept=True).fit(x, 2 * np.eye(4)[labels] - 1)
  np.testing.assert_allclose(weights, reference.coef_.T, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(bias, reference.intercept_, rtol=1e-8, atol=1e-10)


def test_separable_features_are_classified_perfectly():
  rng = np.random.default_rng(1)
  centres = rng.standard_normal((5, 16)) * 5
  train_labels = np.repeat(np.arange(5), 10)
  test_labels = np.tile(np.arange(5), 20)
  train = centres[train_labels] + rng.standard_normal((50, 16)) * 0.1
  test = centres[test_labels] + rng.standard_normal((100, 16)) * 0.1
  out = fewshot.evaluate(train, train_labels, test, test_labels, shots=(1, 5), num_classes=5,
                         l2_reg=1e-3)
  assert out == {"1shot_accuracy": 1.0, "5shot_accuracy": 1.0}


def test_first_k_per_class_and_error():
  labels = np.array([2, 0, 1, 0, 2, 1, 0])
  np.testing.assert_array_equal(fewshot.first_k_per_class(labels, 2, 3), [1, 3, 2, 5, 0, 4])
  with pytest.raises(ValueError, match="class 1 has 2 examples, fewer than 3-shot"):
    fewshot.first_k_per_class(labels, 3, 3)
