"""Inference and analysis: figure maths against hand computations, PNGs from a trained
quickstart model, predict on mixed valid/corrupt files, evaluate."""
import os

import jax
import numpy as np
import pytest
from PIL import Image

from tests import helpers
from vit_jax.analysis import attention as analysis
from vit_jax.convert import inference, npz_format


def test_rollout_rows_sum_to_one_and_match_hand_product():
  rng = np.random.default_rng(0)
  layers = []
  for _ in range(2):
    a = rng.uniform(size=(1, 3, 4, 4))
    layers.append(a / a.sum(-1, keepdims=True))
  rollout = analysis.attention_rollout(layers)
  np.testing.assert_allclose(rollout.sum(-1), 1.0)
  first = (layers[0][0].mean(0) + np.eye(4)) / 2  # rows of A + I sum to 2.
  second = (layers[1][0].mean(0) + np.eye(4)) / 2
  np.testing.assert_allclose(rollout[0], second @ first)
  grid_map = analysis.rollout_map(rollout, (1, 3), num_prefix_tokens=1)
  np.testing.assert_allclose(grid_map[0, 0], rollout[0, 0, 1:])


def test_mean_attention_distance_self_and_uniform():
  grid, patch = (2, 2), 16
  own = np.eye(5)[None, None].repeat(2, axis=1)  # (1, 2 heads, 5 tokens incl. class token)
  np.testing.assert_allclose(
      analysis.mean_attention_distance(own, grid=grid, patch_size=patch, num_prefix_tokens=1),
      [0.0, 0.0])
  uniform = np.full((1, 1, 4, 4), 0.25)  # no class token (gap model)
  # From any patch of a 2x2 grid: distances 0, p, p, p*sqrt(2), each weighted 1/4.
  expected = (2 * patch + patch * np.sqrt(2)) / 4
  np.testing.assert_allclose(
      analysis.mean_attention_distance(uniform, grid=grid, patch_size=patch,
                                       num_prefix_tokens=0), [expected])


def test_posemb_similarity_diagonal_and_symmetric():
  posemb = np.random.default_rng(1).standard_normal((1, 1 + 9, 8))
  sim = analysis.posemb_similarity(posemb, num_prefix_tokens=1)
  assert sim.shape == (9, 9)
  np.testing.assert_allclose(np.diag(sim), 1.0)
  np.testing.assert_allclose(sim, sim.T)
  assert np.all(np.abs(sim) <= 1 + 1e-12)


def test_patch_embedding_pca_components_are_orthonormal():
  kernel = np.random.default_rng(2).standard_normal((4, 4, 3, 32))
  components, variance = analysis.patch_embedding_pca(kernel, 6)
  flat = components.reshape(6, -1)
  np.testing.assert_allclose(flat @ flat.T, np.eye(6), atol=1e-10)
  assert components.shape == (6, 4, 4, 3)
  assert np.all(np.diff(variance) <= 1e-12) and variance.sum() <= 1


def test_visualize_cli_writes_non_trivial_pngs(quickstart_run, tmp_path):
  workdir, _ = quickstart_run
  result = helpers.run_subprocess(["-m", "vit_jax.cli.visualize", f"--checkpoint={workdir}",
                                   f"--out={tmp_path}"])
  assert result.returncode == 0, result.stderr[-3000:]
  names = sorted(os.listdir(tmp_path))
  assert {"attention_rollout_0.png", "position_embedding_similarity.png",
          "mean_attention_distance.png", "embedding_filters.png"} <= set(names)
  for name in names:
    pixels = np.asarray(Image.open(tmp_path / name).convert("RGB"), np.float64)
    assert pixels.std() > 10, name                    # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, name  # real content


@pytest.fixture()
def image_files(tmp_path):
  from sklearn.datasets import load_digits
  digits = load_digits()
  def digit(i):
    return (digits.images[i] * 255 / 16).astype(np.uint8)
  paths = {}
  Image.fromarray(digit(0)).convert("RGB").resize((64, 48)).save(tmp_path / "rgb.jpg")
  Image.fromarray(digit(1)).save(tmp_path / "gray.png")
  rgba = Image.fromarray(digit(2)).convert("RGBA")
  rgba.save(tmp_path / "rgba.png")
  Image.fromarray(digit(3).astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
  (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
  for name in ("rgb.jpg", "gray.png", "rgba.png", "sixteen.png", "corrupt.png"):
    paths[name] = str(tmp_path / name)
  return paths


def test_predict_mixed_valid_and_corrupt(quickstart_run, image_files):
  workdir, _ = quickstart_run
  result = helpers.run_subprocess(["-m", "vit_jax.cli.predict", f"--checkpoint={workdir}",
                                   "--top_k=3", *image_files.values()])
  assert result.returncode == 1  # one file was unreadable.
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 5
  by_file = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in lines}
  assert by_file[image_files["corrupt.png"]].startswith("error: unreadable image")
  for name in ("rgb.jpg", "gray.png", "rgba.png", "sixteen.png"):
    entries = by_file[image_files[name]].split(", ")
    assert len(entries) == 3  # label (probability) x top 3, labels = digit names.
    assert all(e.split(" (")[0] in [str(d) for d in range(10)] for e in entries)
  # 16-bit and 8-bit versions of a digit are the same image to the model.
  assert "Traceback" not in result.stderr


def test_predict_a_folder_and_a_glob_in_batches_to_csv(quickstart_run, digits_folder,
                                                      tmp_path):
  """60 test images in batches of 16 (never all at once): a CSV row per image in input
  order, with top-k labels and probabilities that match predicting one at a time."""
  import csv
  workdir, _ = quickstart_run
  out = tmp_path / "predictions.csv"
  folder = digits_folder / "test" / "digit_3"
  result = helpers.run_subprocess([
      "-m", "vit_jax.cli.predict", f"--checkpoint={workdir}", "--top_k=2", "--batch_size=16",
      f"--output={out}", str(folder), f"{digits_folder}/test/digit_[0-2]/*.png"])
  assert result.returncode == 0, result.stderr[-2000:]
  with open(out) as f:
    rows = list(csv.DictReader(f))
  expected = sorted(str(p) for p in folder.iterdir()) + sorted(
      str(p) for d in "012" for p in (digits_folder / "test" / f"digit_{d}").iterdir())
  assert [r["path"] for r in rows] == expected and len(rows) > 16
  assert result.stdout.count(" img/s | ETA") == -(-len(rows) // 16)  # a progress line a batch.
  assert all(float(r["probability_1"]) >= float(r["probability_2"]) for r in rows)
  single = helpers.run_subprocess(["-m", "vit_jax.cli.predict", f"--checkpoint={workdir}",
                                   "--top_k=1", rows[-1]["path"]])
  label, probability = single.stdout.split(": ")[1].strip().rstrip(")").split(" (")
  assert label == rows[-1]["label_1"]
  assert abs(float(probability) - float(rows[-1]["probability_1"])) < 1e-3


def test_16_bit_png_matches_8_bit(tmp_path):
  image = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
  Image.fromarray(image).save(tmp_path / "eight.png")
  Image.fromarray(image.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
  batch, ok, errors = inference.preprocess_files(
      [str(tmp_path / "eight.png"), str(tmp_path / "sixteen.png")],
      "to_rgb|resize(8)|value_range(-1, 1)")
  assert not errors and len(ok) == 2
  np.testing.assert_allclose(batch[0], batch[1], atol=1e-6)


def test_evaluate_cli_matches_training_eval(quickstart_run):
  workdir, _ = quickstart_run
  result = helpers.run_subprocess(["-m", "vit_jax.cli.evaluate", f"--checkpoint={workdir}"])
  assert result.returncode == 0, result.stderr[-3000:]
  final = [m for m in helpers.read_metrics(workdir) if "test_accuracy" in m][-1]
  assert "eval step 250: " in result.stdout
  assert f"test_accuracy {final['test_accuracy']:.4f}" in result.stdout
  assert f"fewshot_5shot_accuracy {final['fewshot_5shot_accuracy']:.4f}" in result.stdout
  assert "test_examples 359" in result.stdout


def test_evaluate_cli_takes_config_overrides_of_the_run_as_the_readme_says(quickstart_run,
                                                                          tmp_path):
  """The README's `--config.evals.test.per_class=True` on a run, with and without
  --config=configs/run.py:RUN; a checkpoint that does not exist is one line saying so."""
  workdir, _ = quickstart_run
  for extra in ([], [f"--config=configs/run.py:{workdir}"]):
    result = helpers.run_subprocess(["-m", "vit_jax.cli.evaluate", f"--checkpoint={workdir}",
                                     "--evals=test", *extra,
                                     "--config.evals.test.per_class=True"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test_worst_class_accuracy" in result.stdout, result.stdout
  missing = helpers.run_subprocess(["-m", "vit_jax.cli.evaluate",
                                    f"--checkpoint={tmp_path / 'nowhere'}"])
  lines = missing.stderr.strip().splitlines()
  assert missing.returncode == 2 and len(lines) == 1, missing.stderr[-2000:]
  assert "no such run directory or checkpoint file" in lines[0], lines[0]


def test_npz_checkpoint_for_inference(quickstart_run, tmp_path, image_files):
  workdir, _ = quickstart_run
  loaded = inference.load(str(workdir))
  npz_format.save_npz(loaded.params, tmp_path / "model.npz")
  (tmp_path / "labels.txt").write_text("\n".join(f"digit-{i}" for i in range(10)))
  from_npz = inference.load(str(tmp_path / "model.npz"), model_name="ViT-digits",
                            labels_file=str(tmp_path / "labels.txt"))
  assert from_npz.pp == "to_rgb|resize(8)|value_range(-1, 1)"
  assert from_npz.label(3) == "digit-3"
  images, _, _ = inference.preprocess_files([image_files["gray.png"]], from_npz.pp)
  np.testing.assert_allclose(
      from_npz.model.apply({"params": from_npz.params}, images),
      loaded.model.apply({"params": loaded.params}, images), rtol=1e-6)
  # No model name: the architecture is read off the shapes (heads from the query kernel).
  inferred = inference.load(str(tmp_path / "model.npz"))
  assert inferred.model.num_heads == loaded.model.num_heads
  np.testing.assert_array_equal(
      inferred.model.apply({"params": inferred.params}, images),
      from_npz.model.apply({"params": from_npz.params}, images))


def test_load_pretrained_takes_a_run(quickstart_run, image_files):
  """vit_jax.load_pretrained / preprocessing_of on a workdir: the run's own model, and
  inputs prepared exactly as its eval pipeline prepares them."""
  import vit_jax
  workdir, _ = quickstart_run
  model, params = vit_jax.load_pretrained(str(workdir))
  preprocessing = vit_jax.preprocessing_of(str(workdir))
  loaded = inference.load(str(workdir))
  assert preprocessing.pp == loaded.pp
  images, _, _ = inference.preprocess_files([image_files["gray.png"]], loaded.pp)
  np.testing.assert_array_equal(model.apply({"params": params}, images),
                                loaded.model.apply({"params": loaded.params}, images))


def test_preprocessing_keeps_a_gray_batch_a_batch():
  """A (1, 8, 8) gray batch stays a batch of one; one image stays one image."""
  from vit_jax.convert.pretrained import Preprocessing
  from vit_jax.errors import UserError
  preprocess = Preprocessing("to_rgb|resize(8)|value_range(-1, 1)")
  assert preprocess(np.zeros((1, 8, 8), np.uint8)).shape == (1, 8, 8, 3)
  assert preprocess(np.zeros((5, 8, 8), np.uint8)).shape == (5, 8, 8, 3)
  assert preprocess(np.zeros((8, 8), np.uint8)).shape == (8, 8, 3)
  assert preprocess(np.zeros((8, 8, 3), np.uint8)).shape == (8, 8, 3)
  assert preprocess(np.zeros((2, 8, 8, 1), np.uint8)).shape == (2, 8, 8, 3)
  with pytest.raises(UserError, match="not an array of shape"):
    preprocess(np.zeros((1, 2, 8, 8, 3), np.uint8))


def test_classifier_answers_with_the_runs_labels(quickstart_run, image_files, tmp_path):
  """vit_jax.Classifier.from_pretrained(run).predict(paths or arrays): the run's class
  names (labels.txt, written when it trained), the predict command's top classes."""
  import vit_jax
  workdir, _ = quickstart_run
  names = (workdir / "labels.txt").read_text().splitlines()
  assert len(names) == 10
  classifier = vit_jax.Classifier.from_pretrained(str(workdir))
  assert classifier.labels == names
  one = classifier.predict(image_files["gray.png"], top_k=3)
  assert len(one) == 3 and all(label in names for label, _ in one)
  assert one[0][1] >= one[1][1] >= one[2][1]
  loaded = inference.load(str(workdir))
  images, _, _ = inference.preprocess_files([image_files["gray.png"]], loaded.pp)
  probabilities = np.asarray(jax.nn.softmax(
      loaded.model.apply({"params": loaded.params}, images), -1))[0]
  assert one[0] == (names[int(probabilities.argmax())], pytest.approx(probabilities.max(),
                                                                      rel=1e-5))
  # uint8 arrays: one gray image, and a batch of them.
  digits = (np.random.default_rng(0).random((3, 8, 8)) * 255).astype(np.uint8)
  assert len(classifier.predict(digits)) == 3 and len(classifier.predict(digits[0])) == 5
  assert np.allclose(classifier.probabilities(digits).sum(-1), 1, atol=1e-5)
