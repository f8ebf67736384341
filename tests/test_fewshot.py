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
  out = fewshot.probe_accuracies(train, train_labels, test, test_labels, shots=(1, 5), num_classes=5,
                         l2_reg=1e-3)
  assert out == {"1shot_accuracy": 1.0, "5shot_accuracy": 1.0}


def test_first_k_per_class_and_error():
  labels = np.array([2, 0, 1, 0, 2, 1, 0])
  np.testing.assert_array_equal(fewshot.first_k_per_class(labels, 2, 3), [1, 3, 2, 5, 0, 4])
  with pytest.raises(ValueError, match="class 1 has 2 examples, fewer than 3-shot"):
    fewshot.first_k_per_class(labels, 3, 3)


def test_real_evaluator_on_mock_imagenet_real(tmp_path):
  """ReaL top-1 on a prepared mock of imagenet2012_real (ArrayRecord, multi-label feature):
  equal to the metric computed in numpy from the model's logits, with unlabelled images
  left out. Run the way vit_jax.cli.evaluate runs evaluators."""
  import subprocess
  import sys
  import jax
  import numpy as np
  from tests import mock_real, tiny_config
  from vit_jax import config as config_lib
  from vit_jax.trainer.evaluate import evaluate_checkpoint
  from vit_jax.data import offline
  data_dir = str(tmp_path / "tfds")
  prepare = subprocess.run([sys.executable, "-c", (
      "from tests import mock_real; import tensorflow_datasets as tfds; "
      f"mock_real.MockReal(data_dir={data_dir!r}).download_and_prepare("
      "file_format='array_record')")],
      capture_output=True, text=True)
  assert prepare.returncode == 0, prepare.stderr[-2000:]
  config = tiny_config.get_config().unlock()
  config.data_dir = data_dir
  config.pp_eval = "to_rgb|value_range(-1, 1)"
  config.evals = {"real": config_lib.real_eval(dataset="mock_real", num_classes=10)}
  # A trained-looking model: the tiny quickstart-sized ViT with random weights.
  from vit_jax.models import create_model
  model = create_model("ViT-test", num_classes=10)
  images, labels = offline.LOADERS["sklearn_digits"]()["test"]
  x = np.repeat(images[:mock_real.NUM], 3, axis=-1).astype(np.float32) / 127.5 - 1
  params = jax.tree.map(lambda p: np.asarray(p) + 0.3 * np.random.default_rng(1).standard_normal(
      np.shape(p)).astype(np.float32), model.init(jax.random.key(0), x[:1])["params"])
  from vit_jax.convert import npz_format
  npz_format.save_npz(params, tmp_path / "model.npz")
  _, results = evaluate_checkpoint(config.lock(), str(tmp_path / "model.npz"))
  predictions = np.argmax(np.asarray(model.apply({"params": npz_format.load_npz(
      tmp_path / "model.npz")}, x)), axis=-1)
  hits = [predictions[i] in mock_real.real_labels(i, int(labels[i]))
          for i in range(mock_real.NUM) if mock_real.real_labels(i, int(labels[i]))]
  assert results["real_examples"] == len(hits) == mock_real.NUM - mock_real.NUM // 5
  assert results["real_unlabelled"] == mock_real.NUM // 5
  assert results["real_accuracy"] == pytest.approx(np.mean(hits), abs=1e-6)
  assert 0 < results["real_accuracy"] < 1
