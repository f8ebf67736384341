"""FlexiViT: PI-resize against timm's resample_patch_embed and big_vision's formula
(TensorFlow's bilinear resize of basis patches, as big_vision builds it), the embedding
of a resized patch preserved, and one run trained with random patch sizes evaluated at
three in metrics.jsonl."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_train import tiny
from tests.torch_refs import import_references
from vit_jax import config as config_lib
from vit_jax.errors import UserError
from vit_jax.models import create_model
from vit_jax.models import patch_embed
from vit_jax.trainer import flexi, loop

torch, timm, _ = import_references()


def _close(ours, theirs, tolerance=1e-5):
  """Within `tolerance` of the reference's scale (downsampled kernels grow large)."""
  scale = max(1.0, float(np.abs(theirs).max()))
  assert np.abs(ours - theirs).max() <= tolerance * scale, np.abs(ours - theirs).max()


@pytest.mark.parametrize("new", [8, 12, 24, 32, 48])
def test_pi_resize_matches_timm(new):
  from timm.layers import resample_patch_embed
  kernel = np.random.default_rng(new).standard_normal((16, 16, 3, 8)).astype(np.float32)
  for method, antialias in (("bicubic", True), ("bilinear", False)):  # timm's default; bv's.
    theirs = resample_patch_embed(torch.from_numpy(kernel.transpose(3, 2, 0, 1)).double(),
                                  [new, new], interpolation=method,
                                  antialias=antialias).numpy().transpose(2, 3, 1, 0)
    _close(patch_embed.resize_kernel(kernel, new, method=method, antialias=antialias), theirs)


def _big_vision_resample(old, new_hw):
  """big_vision models/proj/flexi/vit.py resample_patchemb, as written there (the resize
  matrix built from tf.image.resize of basis patches, its transpose pseudo-inverted)."""
  import tensorflow as tf

  def resize(x, shape):
    return tf.image.resize(tf.constant(x)[None, ..., None], shape,
                           method="bilinear")[0, ..., 0].numpy()
  mat = []
  for i in range(np.prod(old.shape[:2])):
    basis = np.zeros(old.shape[:2])
    basis[np.unravel_index(i, old.shape[:2])] = 1.0
    mat.append(resize(basis, new_hw).reshape(-1))
  pinv = np.linalg.pinv(np.stack(mat).T.T)
  flat = old.reshape(-1, *old.shape[2:])
  return np.einsum("nm,mcd->ncd", pinv, flat).reshape(*new_hw, *old.shape[2:])


@pytest.mark.parametrize("new", [8, 16, 24, 48])
def test_pi_resize_matches_big_vision(new):
  kernel = np.random.default_rng(new).standard_normal((32, 32, 3, 4)).astype(np.float32)
  _close(patch_embed.resize_kernel(kernel, new), _big_vision_resample(kernel, (new, new)))


def test_a_resized_patch_embeds_as_the_original():
  """PI-resize's promise: upsampling a patch and the kernel alike leaves its embedding
  unchanged (exactly, up to float error), so a B/8 kernel serves B/16 on 2x images."""
  from vit_jax.models import posemb
  rng = np.random.default_rng(0)
  kernel = rng.standard_normal((8, 8, 3, 16))
  patch = rng.standard_normal((8, 8, 3))
  axis = posemb.resample_matrix(8, 16, "bilinear")
  bigger = np.einsum("ai,bj,ijc->abc", axis, axis, patch)
  before = np.einsum("ijc,ijcd->d", patch, kernel)
  after = np.einsum("ijc,ijcd->d", bigger, patch_embed.resize_kernel(kernel, 16))
  np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


def test_flexi_model_at_any_patch_size_matches_a_model_with_the_resized_kernel():
  model = create_model("ViT-test", num_classes=3, posemb_grid=(4, 4),
                       posemb_resample="bilinear", posemb_antialias=True)
  images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  params = nn.unbox(model.init(jax.random.key(1), images)["params"])
  for size in (2, 8, 16):
    flexible = model.clone(input_patch_size=size).apply({"params": params}, images)
    fixed = create_model("ViT-test", num_classes=3, patch_size=size, posemb_grid=(4, 4),
                         posemb_resample="bilinear", posemb_antialias=True)
    resized = {**params, "embedding": {**params["embedding"], "kernel": jnp.asarray(
        patch_embed.resize_kernel(np.asarray(params["embedding"]["kernel"]), size))}}
    np.testing.assert_allclose(flexible, fixed.apply({"params": resized}, images), atol=1e-5)


def test_posemb_resampling_is_jax_image_resize_linear():
  """big_vision's FlexiViT resamples its learned grid with jax.image.resize('linear'),
  antialiased when shrinking: posemb_resample='bilinear', posemb_antialias=True."""
  from vit_jax.models import posemb
  grid = np.random.default_rng(0).standard_normal((1, 7, 7, 8)).astype(np.float32)
  for side in (3, 5, 10, 30):
    theirs = jax.image.resize(grid, (1, side, side, 8), "linear")
    ours = posemb.resample_grid(grid, (side, side), method="bilinear", antialias=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_one_run_with_random_patch_sizes_evaluates_at_three(tfds_dir, tmp_path, capsys):
  config = tiny(tfds_dir, total_steps=6, **{
      "flexi.patch_sizes": (2, 4, 8), "model.posemb_grid": (2, 2),
      "evals.test.patch_sizes": (2, 4, 8),
      "evals.knn": config_lib.knn_eval(k=(3,), patch_sizes=(4, 8))})
  sizes = [flexi.size_at(config, step) for step in range(6)]
  assert set(sizes) <= {2, 4, 8} and len(set(sizes)) > 1
  assert sizes == [flexi.size_at(config, step) for step in range(6)]  # per step, fixed.
  loop.train_and_evaluate(config, str(tmp_path / "w"))
  assert "Compiled the train step for patch sizes 2, 4, 8" in capsys.readouterr().out
  final = json.loads((tmp_path / "w" / "final.json").read_text())
  for size in (2, 4, 8):
    assert 0 <= final[f"test_p{size}_accuracy"] <= 1
    assert final[f"val_p{size}_loss"] > 0
  assert {"knn_p4_3nn_accuracy", "knn_p8_3nn_accuracy"} <= set(final)


@pytest.mark.parametrize("overrides, message", [
    ({"flexi.patch_sizes": (3,), "model.posemb_grid": (2, 2)},
     r"flexi.patch_sizes: \[3\] do not cut the 8x8 training images into whole patches; "
     r"sizes that do: \[1, 2, 4, 8\]"),
    ({"flexi.patch_sizes": (2, 4)},
     r"set --config.model.posemb_grid=2,2"),
    ({"flexi.patch_sizes": (2, 4), "model.posemb_grid": (2, 2), "flexi.weights": (1.0,)},
     r"flexi.weights=\(1.0,\): one non-negative weight per patch size"),
])
def test_bad_flexi_settings_are_one_line(tfds_dir, tmp_path, overrides, message):
  with pytest.raises(UserError, match=message):
    loop.train_and_evaluate(tiny(tfds_dir, **overrides), str(tmp_path / "w"))


def test_big_vision_layout_written_and_read_back(tmp_path):
  """--to=big_vision: big_vision's names (pos_embedding at the root, current Flax block
  names), read back as the same model; a FlexiViT file (flexivit_*.npz) resamples its
  position embeddings as big_vision's flexi model (scripts/check_flexi_big_vision.py runs
  big_vision's own code on it)."""
  from vit_jax import convert
  from vit_jax.models.params import flatten
  # The published layout: the [class] token has a position embedding of its own, which
  # big_vision's layout adds to the token.
  model = create_model("vit", num_classes=5, patch_size=8, hidden_size=32, num_layers=2,
                       num_heads=2, mlp_dim=64, posemb_grid=(3, 3))
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 24, 24, 3)))["params"])
  params = jax.tree.map(lambda x: np.asarray(x) + 0.1 * np.random.default_rng(0).standard_normal(
      x.shape).astype(np.float32), params)
  arch = dict(family="vit", patch_size=8, hidden_size=32, num_layers=2, num_heads=2,
              mlp_dim=64, posemb_grid=(3, 3))
  path = str(tmp_path / "flexivit_tiny.npz")
  convert.write_big_vision(convert.Checkpoint.of(arch, params, {"resolution": 24}, "t"), path)
  keys = set(np.load(path).files)
  assert "pos_embedding" in keys and "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel" in keys
  back = convert.read(path)
  assert back.arch["posemb_resample"] == "bilinear" and back.arch["posemb_antialias"]
  assert not back.arch["posemb_prefix"]
  for key, value in flatten(params).items():
    if "posembed" not in key and key != "cls":
      np.testing.assert_array_equal(flatten(back.params)[key], value)
  images = jax.random.normal(jax.random.key(1), (2, 24, 24, 3))
  arch = {k: v for k, v in back.arch.items() if k != "family"}
  for size in (4, 12):
    ours = create_model("vit", num_classes=5, input_patch_size=size, **arch)
    np.testing.assert_allclose(ours.apply({"params": back.params}, images),
                               model.clone(input_patch_size=size, posemb_resample="bilinear",
                                           posemb_antialias=True).apply(
                                               {"params": params}, images), atol=1e-5)


def test_a_plain_run_fine_tunes_into_a_flexible_one(tfds_dir, tmp_path, capsys):
  plain = tmp_path / "plain"
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=2, warmup_steps=0), str(plain))
  capsys.readouterr()
  state = loop.train_and_evaluate(tiny(tfds_dir, total_steps=2, warmup_steps=0,
                                       pretrained=str(plain), **{
                                           "flexi.patch_sizes": (2, 4),
                                           "model.posemb_grid": (2, 2)}), str(tmp_path / "ft"))
  assert "Fine-tuning from run" in capsys.readouterr().out
  assert state.params["embedding"]["kernel"].shape[:2] == (4, 4)  # stored at the base size.
