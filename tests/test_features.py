"""Features out: patch tokens and block outputs match the reference implementations'
(transformers' hidden_states, timm's forward_features) on random weights; the k-NN
evaluator matches scikit-learn; `cli.features` writes them batched for a folder."""
import numpy as np
import pytest

from tests import helpers, torch_refs
from tests.test_models import random_params
from vit_jax import convert
from vit_jax.analysis import features
from vit_jax.convert import Checkpoint
from vit_jax.convert.pretrained import model_for
from vit_jax.evaluators import knn
from vit_jax.models import create_model

ARCH = dict(family="vit", patch_size=4, hidden_size=32, num_layers=3, num_heads=2,
            mlp_dim=64, posemb_grid=(4, 4))


def _checkpoint():
  arch = dict(ARCH)
  model = create_model(arch.pop("family"), num_classes=5, **arch)
  return Checkpoint.of(dict(ARCH), random_params(model, 16),
                       {"resolution": 16, "mean": [0.5] * 3, "std": [0.5] * 3}, "random")


def test_tokens_and_blocks_match_transformers_and_timm(tmp_path):
  torch, timm, transformers = torch_refs.import_references()
  checkpoint = _checkpoint()
  images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  ours = features.extract(model_for(checkpoint), checkpoint.params, images, blocks=(0, 1, -1))
  assert ours["patch_tokens"].shape == (2, 16, 32) and ours["prefix_tokens"].shape == (2, 1, 32)
  convert.write_hf(checkpoint, str(tmp_path / "hf"))
  hf = transformers.ViTModel.from_pretrained(str(tmp_path / "hf"), add_pooling_layer=False)
  nchw = torch.from_numpy(images).permute(0, 3, 1, 2)
  with torch.no_grad():
    out = hf(pixel_values=nchw, output_hidden_states=True)
  for i in range(3):  # hidden_states[0] is the embeddings, [i + 1] block i's output.
    np.testing.assert_allclose(ours[f"block_{i}"], out.hidden_states[i + 1].numpy(), atol=1e-4)
  np.testing.assert_allclose(ours["patch_tokens"], out.last_hidden_state[:, 1:].numpy(),
                             atol=1e-4)
  kwargs = convert.write_timm(checkpoint, str(tmp_path / "timm.safetensors"))
  from safetensors.torch import load_file
  model = timm.models.vision_transformer.VisionTransformer(**kwargs).eval()
  model.load_state_dict(load_file(str(tmp_path / "timm.safetensors")))
  with torch.no_grad():
    tokens = model.forward_features(nchw).numpy()
  np.testing.assert_allclose(ours["patch_tokens"], tokens[:, 1:], atol=1e-4)
  np.testing.assert_allclose(ours["prefix_tokens"], tokens[:, :1], atol=1e-4)


def test_knn_matches_scikit_learn():
  from sklearn.neighbors import KNeighborsClassifier
  rng = np.random.default_rng(0)
  train_x, test_x = rng.normal(size=(300, 16)), rng.normal(size=(100, 16))
  train_y = rng.integers(0, 4, 300)
  for k in (1, 5, 20):
    ours = knn.knn_predict(train_x, train_y, test_x, k=k, num_classes=4, temperature=0.0,
                           chunk=37)
    reference = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(train_x, train_y)
    assert np.mean(ours == reference.predict(test_x)) >= 0.99  # ties at equal distance.


def test_features_command_on_a_folder(quickstart_run, digits_folder, tmp_path):
  workdir, _ = quickstart_run
  out = tmp_path / "features.npz"
  folder = digits_folder / "test" / "digit_1"
  result = helpers.run_subprocess(["-m", "vit_jax.cli.features", f"--checkpoint={workdir}",
                                   f"--out={out}", "--blocks=-1", "--batch_size=4", str(folder)])
  assert result.returncode == 0, result.stderr[-2000:]
  saved = np.load(out)
  paths = sorted(str(p) for p in folder.iterdir())
  assert list(saved["paths"]) == paths and saved["pooled"].shape[0] == len(paths)
  assert "block_3" in saved and saved["patch_tokens"].shape[:2] == (len(paths), 16)
  checkpoint = convert.read(str(workdir))
  from vit_jax.convert.pretrained import Preprocessing
  from PIL import Image
  images = Preprocessing(checkpoint.pp)(np.stack([np.asarray(Image.open(p).convert("RGB"))
                                                  for p in paths]))
  np.testing.assert_allclose(saved["pooled"], model_for(checkpoint).apply(
      {"params": checkpoint.params}, images, return_representation=True), atol=1e-5)


def test_knn_evaluator_in_a_run(tfds_dir, tmp_path):
  from tests.test_train import tiny
  from vit_jax import config as config_lib
  from vit_jax.trainer import loop
  config = tiny(tfds_dir, total_steps=3).unlock()
  config.evals.knn = config_lib.knn_eval(k=(5,), train_split="train[:90%]")
  loop.train_and_evaluate(config.lock(), tmp_path)
  final = [m for m in helpers.read_metrics(tmp_path) if "knn_5nn_accuracy" in m]
  assert final and 0.1 < final[-1]["knn_5nn_accuracy"] <= 1.0
