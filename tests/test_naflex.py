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
  from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil
  processor = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=40)
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
