"""NaFlex (SigLIP 2): aspect-preserving patch sequences in the input pipeline, the model's
per-image position grid and masked attention / pooling, checked against transformers'
Siglip2 (processor and vision tower, random weights built offline) and timm's NaFlexViT;
training, evaluation and prediction with --config.max_num_patches."""
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_convert import assert_close, randomise, save_hf
from tests.torch_refs import import_references
from vit_jax import convert
from vit_jax.errors import UserError
from vit_jax.models import create_model, naflex, posemb
from vit_jax.models.params import flatten
from vit_jax.pp import builder, ops_naflex

torch, timm, transformers = import_references()


def mixed_photos():
  """Two real photographs cut to different aspect ratios (wide and tall), uint8."""
  from sklearn.datasets import load_sample_images
  china, flower = load_sample_images().images
  return [china[100:220, 40:400], flower[20:400, 200:330]]


def naflex_batch(pp: str, images):
  fn = builder.build(pp)
  examples = [fn({"image": image, "label": 0, "seed": (0, 0)}) for image in images]
  return {k: np.stack([e[k] for e in examples]) for k in ("image", naflex.COORDS)}


def test_axis_weights_are_the_resize_matrices():
  """The on-device per-image resize weights equal posemb.resample_matrix (torch's
  interpolate) for every size pair, bilinear and bicubic, antialiased or not."""
  for method, antialias in itertools.product(("bilinear", "bicubic"), (True, False)):
    for size_in, size_out in itertools.product((1, 3, 7, 16), (1, 2, 5, 16, 23)):
      got = naflex.axis_weights(size_in, jnp.full((size_out,), size_out), jnp.arange(size_out),
                                method=method, antialias=antialias)
      np.testing.assert_allclose(got, posemb.resample_matrix(size_in, size_out, method,
                                                             antialias), atol=2e-6)


def test_sequence_size_is_siglip2s():
  from transformers.models.siglip2 import image_processing_siglip2 as processing
  for (height, width), budget, patch in itertools.product(
      [(32, 32), (37, 211), (480, 91), (7, 7), (1000, 3)], (1, 16, 64, 256), (8, 16)):
    assert ops_naflex.sequence_size(height, width, patch, budget) == \
        processing.get_image_size_for_max_num_patches(height, width, patch, budget)


@pytest.mark.parametrize("budget", [16, 48])
def test_siglip2_tower_matches_transformers_at_two_lengths_and_aspects(tmp_path, budget):
  """A random Siglip2VisionModel read from its directory: pooled features and every
  valid token equal transformers' for a wide and a tall image (inputs from our pp, which
  matches transformers' processor), and it writes back to a directory transformers loads."""
  t = transformers
  reference = randomise(t.Siglip2VisionModel(t.Siglip2VisionConfig(
      patch_size=8, num_patches=36, hidden_size=64, num_hidden_layers=2,
      num_attention_heads=4, intermediate_size=128)))
  directory = save_hf(reference, str(tmp_path / "hf"))
  checkpoint = convert.read(directory)
  assert checkpoint.preprocessing["max_num_patches"] == 36
  pp = f"resize_to_sequence({budget}, 8)|value_range(-1, 1)|patchify(8, {budget})"
  batch = naflex_batch(pp, mixed_photos())
  coords = batch[naflex.COORDS]
  shapes = np.asarray(naflex.grid_shapes(coords))
  assert shapes[0, 1] > shapes[0, 0] and shapes[1, 0] > shapes[1, 1]  # wide, tall.
  with torch.no_grad():
    out = reference(pixel_values=torch.from_numpy(batch["image"]),
                    pixel_attention_mask=torch.from_numpy(coords[..., 0] >= 0),
                    spatial_shapes=torch.from_numpy(shapes))
  model = create_model("vit", num_classes=None,
                       **{k: v for k, v in checkpoint.arch.items() if k != "family"})
  inputs = naflex.model_input(batch)
  apply = jax.jit(functools.partial(model.apply, {"params": checkpoint.params}),
                  static_argnames=("return_representation", "return_tokens"))
  assert_close(np.asarray(apply(inputs, return_representation=True)),
               out.pooler_output.numpy())
  tokens = np.asarray(apply(inputs, return_tokens=True))
  valid = coords[..., 0] >= 0
  assert_close(tokens[valid], out.last_hidden_state.numpy()[valid])
  # Padding does not leak: the same images padded to a longer sequence, the same output.
  longer = naflex_batch(pp.replace(f"patchify(8, {budget})", f"patchify(8, {budget + 20})"),
                        mixed_photos())
  assert_close(np.asarray(apply(naflex.model_input(longer), return_representation=True)),
               out.pooler_output.numpy())
  exported = str(tmp_path / "exported")
  convert.write_hf(checkpoint, exported)
  for key, value in flatten(convert.read(exported).params).items():
    np.testing.assert_array_equal(flatten(checkpoint.params)[key], value, err_msg=key)
  loaded = type(reference).from_pretrained(exported).eval()
  with torch.no_grad():
    again = loaded(pixel_values=torch.from_numpy(batch["image"]),
                   pixel_attention_mask=torch.from_numpy(valid),
                   spatial_shapes=torch.from_numpy(shapes)).pooler_output.numpy()
  np.testing.assert_allclose(again, out.pooler_output.numpy(), atol=1e-6)


def test_pp_matches_siglip2_processor():
  """resize_to_sequence | value_range | patchify gives transformers' Siglip2 (PIL)
  processor's patches, mask and grid for images of two aspect ratios."""
  from PIL import Image
  try:  # transformers 5: the PIL backend has its own class; 4.x: the processor is PIL's.
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        Siglip2ImageProcessorPil as Processor)
  except ImportError:
    from transformers.models.siglip2.image_processing_siglip2 import (
        Siglip2ImageProcessor as Processor)
  processor = Processor(patch_size=8, max_num_patches=40)
  images = mixed_photos()
  theirs = processor(images=[Image.fromarray(i) for i in images], return_tensors="np")
  batch = naflex_batch("resize_to_sequence(40, 8)|value_range(-1, 1)|patchify(8, 40)", images)
  coords = batch[naflex.COORDS]
  np.testing.assert_array_equal(naflex.grid_shapes(coords), theirs["spatial_shapes"])
  np.testing.assert_array_equal(coords[..., 0] >= 0, theirs["pixel_attention_mask"])
  np.testing.assert_allclose(batch["image"], theirs["pixel_values"], atol=1e-5)


@pytest.mark.parametrize("name", ["naflexvit_base_patch16_gap", "naflexvit_base_patch16_map"])
def test_timm_naflexvit_state_dict_reads_with_its_outputs(tmp_path, name):
  """timm's NaFlexViT (registers, LayerScale, masked average or attention pooling; random
  weights) read from its state dict gives timm's logits on NaFlex batches of a wide and a
  tall image."""
  from tests.test_convert import save_timm
  reference = randomise(timm.create_model(name, pretrained=False, depth=2, embed_dim=64,
                                          num_heads=4, num_classes=7))
  path = str(tmp_path / "naflex.safetensors")
  save_timm(reference, path)
  checkpoint = convert.read(path, timm_model=name, num_heads=4)
  batch = naflex_batch("resize_to_sequence(30, 16)|value_range(-1, 1)|patchify(16, 40)",
                       mixed_photos())
  with torch.no_grad():
    theirs = reference({"patches": torch.from_numpy(batch["image"]),
                        "patch_coord": torch.from_numpy(batch[naflex.COORDS]).long(),
                        "patch_valid": torch.from_numpy(batch[naflex.COORDS][..., 0] >= 0)})
  model = create_model("vit", num_classes=7,
                       **{k: v for k, v in checkpoint.arch.items() if k != "family"})
  assert_close(np.asarray(model.apply({"params": checkpoint.params},
                                      naflex.model_input(batch))), theirs.numpy())


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
  from vit_jax.bench import mixed_aspect
  return mixed_aspect.write(tmp_path_factory.mktemp("mixed_aspect"), train=200, test=48)


def folder_config(folder, **overrides):
  from tests import tiny_config
  from vit_jax import config as config_lib
  return config_lib.with_overrides(tiny_config.get_config(), {
      "dataset": f"folder:{folder}", "num_classes": 10, "total_steps": 4,
      "pp_train": "to_rgb|inception_crop(24, area_min=70)|value_range(-1, 1)",
      "pp_eval": "to_rgb|resize(24)|value_range(-1, 1)", "eval_batch_size": 48,
      "input_workers": 0, **overrides}).lock()


def test_a_square_run_fine_tunes_into_naflex_and_predicts(mixed_folder, tmp_path):
  """A ViT trained on squashed squares fine-tunes with --config.max_num_patches (gradient
  accumulation over patch sequences): every pp string makes sequences, the grid is fixed,
  eval lines are written; the run predicts files and re-budgets at inference; the NaFlex
  run used on square inputs is one line."""
  from vit_jax.cli.predict import predict_batches
  from vit_jax.convert import inference
  from vit_jax.trainer import loop
  loop.train_and_evaluate(folder_config(mixed_folder), tmp_path / "square")
  run = tmp_path / "naflex"
  state = loop.train_and_evaluate(folder_config(
      mixed_folder, pretrained=str(tmp_path / "square"), max_num_patches=20, accum_steps=2),
      run)
  assert int(state.step) == 4
  config = convert.read(str(run)).config
  assert config.pp_eval == "to_rgb|resize_to_sequence(20, 4)|value_range(-1, 1)|patchify(4, 20)"
  assert "inception_crop_to_sequence(20, 4, 70, 100)" in config.pp_train
  assert tuple(config.model.posemb_grid) == (6, 6)
  from tests import helpers
  evals = [m for m in helpers.read_metrics(run) if "test_accuracy" in m]
  assert evals and evals[-1]["test_examples"] == 48
  files = sorted(str(p) for p in (mixed_folder / "test").glob("*/*.png"))[:3]
  for budget in (None, 8):
    loaded = inference.load(str(run), max_num_patches=budget)
    rows = list(predict_batches(loaded, files, top_k=2, batch_size=2))
    assert [r[0] for r in rows] == files and all(r[1] and r[2] is None for r in rows)
  from PIL import Image
  from vit_jax.convert.classifier import Classifier
  one = np.asarray(Image.open(files[0]).convert("RGB"))  # an array, as a library user has.
  np.testing.assert_allclose(Classifier(inference.load(str(run))).probabilities(one),
                             Classifier(inference.load(str(run))).probabilities(files[:1]),
                             atol=1e-6)
  from vit_jax.serving import export
  with pytest.raises(UserError, match=r"takes NaFlex patch sequences \(max_num_patches=20\)"):
    export.export(str(run), "onnx", str(tmp_path / "onnx"))
  with pytest.raises(UserError, match=r"trained on NaFlex patch sequences \(max_num_patches="
                     r"20.*add --config.max_num_patches=20"):
    loop.train_and_evaluate(folder_config(mixed_folder, pretrained=str(run)),
                            tmp_path / "square_again")


@pytest.mark.parametrize("overrides,message", [
    ({"max_num_patches": 0}, r"max_num_patches=0 with patch_size=4: NaFlex needs at least "
                             r"one patch per side"),
    ({"max_num_patches": 16, "flexi.patch_sizes": (2, 4), "model.posemb_grid": (6, 6)},
     r"NaFlex cuts patches in the input pipeline at one size"),
    ({"max_num_patches": 16, "mixup_alpha": 0.2}, r"mixup / CutMix blend square images"),
    ({"max_num_patches": 16, "objective": "mae", "evals.test.type": "reconstruction"},
     r"objective='mae' masks and predicts patches of square images"),
    ({"max_num_patches": 16, "pp_eval": "to_rgb|resize(24)|my_size_op(3)"}, None),
])
def test_naflex_mistakes_are_one_line(mixed_folder, tmp_path, overrides, message):
  from vit_jax.pp import registry
  from vit_jax.trainer import loop
  if message is None:  # an op of the user's own that sets a size: the fix is named.
    registry.register("my_size_op", sizes=("size",))(lambda size: lambda image, rng: image)
    message = r"the pp op 'my_size_op\(3\)' sets an image size.*resize_to_sequence\(16, 4\)"
  with pytest.raises(UserError, match=message):
    loop.train_and_evaluate(folder_config(mixed_folder, **overrides), tmp_path)
  assert not (tmp_path / "checkpoints").exists()
