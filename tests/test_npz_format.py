"""The published .npz format: round trip, both block namings, position-embedding resize,
fine-tuning surgery and its errors."""
import jax
import numpy as np
import pytest

from tests.test_models import random_params
from vit_jax.errors import UserError
from vit_jax.convert import npz_format
from vit_jax.models import create_model, vit_layout
from vit_jax.models import posemb as posemb_lib
from vit_jax.models import params as params_lib


@pytest.fixture(scope="module")
def model_and_params():
  model = create_model("ViT-test", num_classes=5, representation_size=16)
  return model, random_params(model, 16)


def test_save_load_round_trip_is_exact(tmp_path, model_and_params):
  _, params = model_and_params
  npz_format.save_npz(params, tmp_path / "p.npz")
  loaded = npz_format.load_npz(tmp_path / "p.npz")
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  keys = set(np.load(tmp_path / "p.npz").files)
  assert "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel" in keys
  assert "Transformer/posembed_input/pos_embedding" in keys and "cls" in keys


def test_current_and_older_naming_give_identical_logits(tmp_path, model_and_params):
  model, params = model_and_params
  flat = params_lib.flatten(params)
  renames = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
             "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}
  new_flat = {}
  for key, value in flat.items():
    for old, new in renames.items():
      key = key.replace(f"/{old}/", f"/{new}/")
    new_flat[key] = value
  assert any("MlpBlock_0" in k for k in new_flat)
  np.savez(tmp_path / "old.npz", **flat)
  np.savez(tmp_path / "new.npz", **new_flat)
  images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  old = model.apply({"params": npz_format.load_npz(tmp_path / "old.npz")}, images)
  new = model.apply({"params": npz_format.load_npz(tmp_path / "new.npz")}, images)
  np.testing.assert_array_equal(old, new)


def test_resize_posemb_identity_on_same_grid():
  posemb = np.random.default_rng(0).standard_normal((1, 1 + 12, 4)).astype(np.float32)
  np.testing.assert_array_equal(
      posemb_lib.resize_posemb(posemb, target_grid=(3, 4), source_grid=(3, 4)), posemb)


def test_resize_posemb_matches_hand_computed_bilinear():
  grid = np.array([[0.0, 1.0], [2.0, 3.0]])  # 2x2 grid, one channel.
  posemb = np.concatenate([[[7.0]], grid.reshape(4, 1)])[None]
  out = posemb_lib.resize_posemb(posemb, target_grid=(4, 4))
  # Half-pixel centres, 2 -> 4: output i samples source (i + 0.5) / 2 - 0.5, clamped:
  # weights per row/column [1, 0], [.75, .25], [.25, .75], [0, 1].
  w = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
  expected = w @ grid @ w.T
  assert out[0, 0, 0] == 7.0  # class token kept as is.
  np.testing.assert_allclose(out[0, 1:, 0].reshape(4, 4), expected, rtol=0, atol=1e-12)
  assert expected[1, 1] == pytest.approx(0.75 * 0.75 * 0 + 0.75 * 0.25 * 1 + 0.25 * 0.75 * 2
                                         + 0.25 * 0.25 * 3)


def test_resize_posemb_non_square_both_ways():
  posemb = np.random.default_rng(1).standard_normal((1, 1 + 6, 3))
  wide = posemb_lib.resize_posemb(posemb, target_grid=(4, 6), source_grid=(2, 3))
  assert wide.shape == (1, 25, 3)
  back = posemb_lib.resize_posemb(wide, target_grid=(2, 3), source_grid=(4, 6))
  assert back.shape == posemb.shape
  # A constant embedding stays constant under any resize.
  const = np.ones((1, 1 + 6, 2))
  np.testing.assert_allclose(
      posemb_lib.resize_posemb(const, target_grid=(5, 7), source_grid=(2, 3)), 1.0)


def test_finetuning_surgery(model_and_params):
  _, pretrained = model_and_params
  target = create_model("ViT-test", num_classes=3)  # no pre_logits, 3 classes, 24 px.
  init = random_params(target, 24, seed=5)
  adapted = vit_layout.adapt_pretrained(pretrained, init, model=target,
                                        image_shape=(24, 24, 3), reset_head=False, notes=[])
  assert "pre_logits" not in adapted
  np.testing.assert_array_equal(adapted["head"]["kernel"], init["head"]["kernel"])
  posemb = adapted["Transformer"]["posembed_input"]["pos_embedding"]
  assert posemb.shape == (1, 1 + 36, 32)
  np.testing.assert_array_equal(
      posemb, posemb_lib.resize_posemb(
          pretrained["Transformer"]["posembed_input"]["pos_embedding"], target_grid=(6, 6)))
  np.testing.assert_array_equal(adapted["embedding"]["kernel"],
                                pretrained["embedding"]["kernel"])
  images = np.zeros((1, 24, 24, 3), np.float32)
  assert target.apply({"params": adapted}, images).shape == (1, 3)


def test_surgery_errors_name_every_problem(model_and_params):
  _, pretrained = model_and_params
  wider = create_model("ViT-test", num_classes=5, hidden_size=48, num_layers=3)
  with pytest.raises(ValueError) as err:
    vit_layout.adapt_pretrained(pretrained, random_params(wider, 16), model=wider,
                                image_shape=(16, 16, 3), reset_head=False, notes=[])
  message = str(err.value)
  assert "missing Transformer/encoderblock_2/" in message
  # Each kind of problem: the first few by name, then a count (one readable line).
  assert "shape mismatch Transformer/encoderblock_0/LayerNorm_0/bias: checkpoint (32,) vs " \
      "model (48,)" in message
  assert "more shape mismatch" in message and "more missing" in message
  assert len(message) < 1000
  extra = dict(pretrained, surprise={"kernel": np.zeros(2)})
  with_pre_logits = create_model("ViT-test", num_classes=5, representation_size=16)
  with pytest.raises(ValueError, match="unexpected surprise/kernel"):
    vit_layout.adapt_pretrained(extra, random_params(with_pre_logits, 16), model=with_pre_logits,
                                image_shape=(16, 16, 3), reset_head=False, notes=[])


def test_load_npz_errors(tmp_path):
  with pytest.raises(UserError, match="nope.npz"):
    npz_format.load_npz(tmp_path / "nope.npz")
  (tmp_path / "bad.npz").write_bytes(b"not a zip file")
  with pytest.raises(ValueError, match="bad.npz.*not a readable"):
    npz_format.load_npz(tmp_path / "bad.npz")
