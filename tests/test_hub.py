"""Checkpoints by Hub name, from a cache the test writes in huggingface_hub's on-disk
layout (models--ORG--NAME/{refs/main, snapshots/<commit>/...}) with HF_HUB_OFFLINE=1:
the same model as the directory by path, timm's pretrained_cfg preprocessing, and one
line for a name that is not cached."""
import json
import shutil

import jax
import numpy as np
import pytest

import vit_jax
from tests import torch_refs
from tests.test_models import random_params
from vit_jax import convert
from vit_jax.convert import Checkpoint
from vit_jax.convert.pretrained import model_for, preprocessing_of
from vit_jax.errors import UserError
from vit_jax.models import create_model

ARCH = dict(family="vit", patch_size=4, hidden_size=192, num_layers=1, num_heads=3,
            mlp_dim=384)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _checkpoint():
  arch = dict(ARCH)
  model = create_model(arch.pop("family"), num_classes=4, **arch)
  return Checkpoint.of(dict(ARCH), random_params(model, 16),
                       {"resolution": 16, "mean": [0.5] * 3, "std": [0.5] * 3}, "random")


def _cache(root, repo: str, files_from) -> None:
  """`files_from` copied in as the snapshot of `repo` at COMMIT, refs/main pointing to it."""
  folder = root / ("models--" + repo.replace("/", "--"))
  shutil.copytree(files_from, folder / "snapshots" / COMMIT)
  (folder / "refs").mkdir()
  (folder / "refs" / "main").write_text(COMMIT)


def test_hub_names_resolve_offline_from_the_cache(tmp_path, monkeypatch):
  checkpoint = _checkpoint()
  hf_dir, timm_dir, cache = tmp_path / "hf", tmp_path / "timm", tmp_path / "cache"
  convert.write_hf(checkpoint, str(hf_dir))
  timm_dir.mkdir()
  convert.write_timm(checkpoint, str(timm_dir / "model.safetensors"))
  (timm_dir / "config.json").write_text(json.dumps({
      "architecture": "vit_tiny_patch4_16", "num_classes": 4,
      "pretrained_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD, "input_size": [3, 16, 16],
                         "interpolation": "bicubic"}}))
  cache.mkdir()
  _cache(cache, "someone/tiny-vit", hf_dir)
  _cache(cache, "timm/vit_tiny_patch4_16.clip", timm_dir)
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)

  def features(c):
    return np.asarray(model_for(c).apply({"params": c.params}, images,
                                         return_representation=True))
  by_name, by_path = convert.read("hf-hub:someone/tiny-vit"), convert.read(str(hf_dir))
  np.testing.assert_array_equal(features(by_name), features(by_path))
  timm_by_name = convert.read("timm/vit_tiny_patch4_16.clip")
  np.testing.assert_array_equal(features(timm_by_name),
                                features(convert.read(str(timm_dir / "model.safetensors"))))
  # timm's own record of the preprocessing (CLIP statistics) wins over any guess.
  pre = preprocessing_of("timm/vit_tiny_patch4_16.clip")
  np.testing.assert_allclose(pre.mean, CLIP_MEAN, atol=1e-6)
  np.testing.assert_allclose(pre.std, CLIP_STD, atol=1e-6)
  with pytest.raises(UserError, match=r"'hf-hub:someone/other' is not in the Hub cache .* "
                                      r"and HF_HUB_OFFLINE=1"):
    convert.read("hf-hub:someone/other")


def _photo(height=300, width=420):
  """A photograph-like image: smooth gradients, a few hard edges, some noise."""
  from PIL import Image, ImageDraw
  y, x = np.mgrid[0:height, 0:width]
  base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (height + width)], -1)
  noise = np.random.default_rng(0).normal(0, 8, base.shape)
  image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(image)
  draw.ellipse((60, 40, 220, 200), fill=(200, 30, 40))
  draw.rectangle((250, 120, 400, 280), fill=(20, 160, 90))
  return image


def test_shortest_edge_bicubic_and_crop_match_the_transformers_processor():
  """A CLIP-style processor record (shortest edge 224, bicubic, centre crop 224, CLIP
  statistics) becomes a pp string whose pixels match transformers' own processor within
  1/255 (timm's crop_pct gives the same ops: resize_small(floor(224 / 0.875)))."""
  torch_refs.import_references()
  from vit_jax.convert import hf_format
  from vit_jax.convert.checkpoint import pp_of_record
  from vit_jax.convert.pretrained import Preprocessing
  processor = {"do_center_crop": True, "crop_size": {"height": 224, "width": 224},
               "size": {"shortest_edge": 224}, "resample": 3, "image_mean": list(CLIP_MEAN),
               "image_std": list(CLIP_STD), "do_resize": True, "do_rescale": True,
               "do_normalize": True, "do_convert_rgb": True}
  record = hf_format.preprocessing({"model_type": "vit", "image_size": 224, "patch_size": 16},
                                   processor)
  pp = pp_of_record(record)
  assert pp.startswith("to_rgb|resize_small(224, method='bicubic')|central_crop(224)|")
  photo = _photo()
  ours = Preprocessing(pp)(np.asarray(photo))
  # transformers' PIL backend (its default one runs on torchvision).
  from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
  theirs = CLIPImageProcessorPil(**processor)(photo, return_tensors="np")
  theirs = theirs["pixel_values"][0].transpose(1, 2, 0)
  assert np.max(np.abs(ours - theirs) * np.asarray(CLIP_STD)) <= 1 / 255 + 1e-6
  timm_pp = pp_of_record({"resolution": 224, "mean": CLIP_MEAN, "std": CLIP_STD,
                          "resize": "bicubic", "crop_pct": 0.875})
  assert "resize_small(256, method='bicubic')|central_crop(224)" in timm_pp


def test_models_list_names_pretrained_checkpoints_timm_knows(capsys):
  """Every timm name `--list` offers is a real timm pretrained tag (its pretrained_cfg is
  what the reader takes the preprocessing from), of an architecture family that
  tests/test_convert.py checks against timm."""
  from vit_jax.cli import models as models_cli
  from vit_jax.convert.hub import KNOWN_NAMES
  assert models_cli.main(["--list"]) == 0
  printed = capsys.readouterr().out
  torch_refs.import_references()
  from timm.models._registry import get_pretrained_cfg
  checked = ("vit_", "deit3_", "deit_", "eva02_", "resnetv2_")  # BiT: tests/test_bit.py.
  for name, _, source in KNOWN_NAMES:
    assert name in printed
    if source == "timm":
      tag = name.removeprefix("timm/")
      assert tag.startswith(checked) and get_pretrained_cfg(tag) is not None, tag
      assert get_pretrained_cfg(tag).hf_hub_id == name
    else:
      assert name.startswith("hf-hub:") and name.count("/") == 1


def test_a_preset_name_loads_its_published_weights_through_the_hub_cache(tmp_path,
                                                                        monkeypatch):
  """load_pretrained('ViT-Ti_16') (or 'ti16') reads the preset's published weights by
  their Hub name (here a stand-in snapshot in an offline cache); a preset without
  published weights, and create_model(pretrained=True), say what to do."""
  from vit_jax.convert.hub import KNOWN_NAMES, PRESET_WEIGHTS
  known = {name for name, _, _ in KNOWN_NAMES}
  assert set(PRESET_WEIGHTS.values()) <= known
  checkpoint = _checkpoint()
  timm_dir, cache = tmp_path / "timm", tmp_path / "cache"
  timm_dir.mkdir()
  convert.write_timm(checkpoint, str(timm_dir / "model.safetensors"))
  (timm_dir / "config.json").write_text(json.dumps({
      "architecture": "vit_tiny_patch16_224", "num_classes": 4,
      "pretrained_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3, "input_size": [3, 16, 16]}}))
  cache.mkdir()
  _cache(cache, PRESET_WEIGHTS["ViT-Ti_16"], timm_dir)
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  for name in ("ViT-Ti_16", "ti16"):
    model, params = vit_jax.load_pretrained(name)
    expected = convert.read(str(timm_dir / "model.safetensors")).params
    jax.tree.map(np.testing.assert_array_equal, params, expected)
  with pytest.raises(UserError, match="'ViT-H_14' is a model preset without published"):
    vit_jax.load_pretrained("ViT-H_14")
  with pytest.raises(UserError, match=r"vit_jax.load_pretrained\('ViT-B_16'\)"):
    create_model("ViT-B_16", num_classes=10, pretrained=True)
