"""Serving exports: each format run by its own runtime (deserialized StableHLO, ONNX
Runtime, TensorFlow) matches the JAX model on random weights (<= 1e-4, float32): ViT with
class token / GAP / MAP pooling, a hybrid and Mixer; the quickstart run exported to ONNX
has the same accuracy; a StableHLO export reloads in a fresh process; mistakes are one
line."""
import json
import os

import jax
import numpy as np
import pytest

from tests import helpers, torch_refs
from tests.test_models import random_params
from vit_jax.serving.export import export
from vit_jax.convert import Checkpoint
from vit_jax.convert.pretrained import Preprocessing, model_for
from vit_jax.errors import UserError
from vit_jax.models import MODEL_PRESETS, create_model
from vit_jax.serving import onnx_export, stablehlo

VIT = dict(MODEL_PRESETS["ViT-test"])
ARCHS = {
    "vit_token": VIT,
    "vit_gap": dict(VIT, classifier="gap"),
    "vit_map": dict(VIT, classifier="map"),
    "hybrid": dict(VIT, patch_size=1, resnet_layers=(1, 1, 1), num_layers=1),
    "mixer": dict(family="mixer", patch_size=4, hidden_size=32, num_layers=2,
                  tokens_mlp_dim=16, channels_mlp_dim=64),
}
PREPROCESSING = {"resolution": 16, "mean": [0.5] * 3, "std": [0.5] * 3}


def _checkpoint(name: str) -> Checkpoint:
  arch = dict(ARCHS[name])
  family = arch.pop("family")
  model = create_model(family, num_classes=5, **arch)
  resolution = 32 if name == "hybrid" else 16  # a hybrid's ResNet downsamples 16x.
  return Checkpoint.of({"family": family, **arch}, random_params(model, resolution),
                       dict(PREPROCESSING, resolution=resolution), name)


def _images(checkpoint, n=3):
  size = checkpoint.preprocessing["resolution"]
  return np.random.default_rng(0).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def _reference(checkpoint, images, **kwargs):
  model = model_for(checkpoint)
  return np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x, **kwargs))(
      checkpoint.params, images))


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_stablehlo_matches_jax_for_every_family(name, monkeypatch, tmp_path):
  checkpoint = _checkpoint(name)
  monkeypatch.setattr("vit_jax.convert.read", lambda *a, **k: checkpoint)
  images = _images(checkpoint, n=5)  # another batch size than the export was traced with.
  path = export("ignored", "stablehlo", str(tmp_path / "hlo"))
  loaded = stablehlo.load(open(path, "rb").read())
  np.testing.assert_allclose(np.asarray(loaded.call(images)), _reference(checkpoint, images),
                             atol=1e-4, rtol=1e-4)
  if name not in ("vit_map", "mixer"):
    return  # the features output: once per pooling path.
  path = export("ignored", "stablehlo", str(tmp_path / "hlo_features"), output="features")
  features = stablehlo.load(open(path, "rb").read()).call(images)
  np.testing.assert_allclose(np.asarray(features), _reference(
      checkpoint, images, return_representation=True), atol=1e-4, rtol=1e-4)


ROPE = dict(VIT, rope="eva", posemb="none", mlp_activation="swiglu", qk_norm=True)


@pytest.mark.parametrize("name", sorted(ARCHS) + ["vit_rope"])
def test_onnx_matches_jax_in_onnx_runtime(name, monkeypatch, tmp_path):
  """ONNX from the JAX function (jax2onnx, no torch) for every family, rotary models
  included: ONNX Runtime's outputs at batch 1 and 7 within 1e-4 of JAX's."""
  if name == "vit_rope":
    monkeypatch.setitem(ARCHS, name, ROPE)
  checkpoint = _checkpoint(name)
  monkeypatch.setattr("vit_jax.convert.read", lambda *a, **k: checkpoint)
  images = _images(checkpoint, n=7)
  outputs = (("logits", {}), ("features", {"return_representation": True}))
  for output, kwargs in outputs if name in ("vit_map", "mixer") else outputs[:1]:
    path = export("ignored", "onnx", str(tmp_path / output), output=output)
    for batch in (1, 7):
      np.testing.assert_allclose(onnx_export.run(open(path, "rb").read(), images[:batch]),
                                 _reference(checkpoint, images[:batch], **kwargs),
                                 atol=1e-4, rtol=1e-4)
  signature = json.loads((tmp_path / "logits" / "signature.json").read_text())
  assert signature["opset"] == onnx_export.OPSET and signature["converter"] == "jax2onnx"
  assert signature["input"]["shape"] == ["batch", *images.shape[1:]]


def test_onnx_takes_raw_pixels_and_needs_no_torch(monkeypatch, tmp_path):
  """uint8 input (the normalisation inside the graph), exported in a process where torch
  and timm cannot be imported."""
  checkpoint = _checkpoint("vit_token")
  monkeypatch.setattr("vit_jax.convert.read", lambda *a, **k: checkpoint)
  monkeypatch.setitem(__import__("sys").modules, "torch", None)  # import torch fails.
  monkeypatch.setitem(__import__("sys").modules, "timm", None)
  path = export("ignored", "onnx", str(tmp_path / "u8"), uint8_input=True)
  pixels = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
  np.testing.assert_allclose(onnx_export.run(open(path, "rb").read(), pixels),
                             _reference(checkpoint, (pixels / 255 - 0.5) / 0.5),
                             atol=1e-4, rtol=1e-4)


def test_savedmodel_and_uint8_input_match_jax(monkeypatch, tmp_path):
  import tensorflow as tf
  checkpoint = _checkpoint("vit_token")
  monkeypatch.setattr("vit_jax.convert.read", lambda *a, **k: checkpoint)
  images = _images(checkpoint)
  saved = tf.saved_model.load(export("ignored", "savedmodel", str(tmp_path / "sm")))
  out = saved.signatures["serving_default"](images=tf.constant(images))
  np.testing.assert_allclose(next(iter(out.values())).numpy(), _reference(checkpoint, images),
                             atol=1e-4, rtol=1e-4)
  # Raw pixels at the model's size: the normalisation (mean 0.5, std 0.5) is in the graph.
  pixels = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
  path = export("ignored", "stablehlo", str(tmp_path / "u8"), uint8_input=True)
  raw = np.asarray(stablehlo.load(open(path, "rb").read()).call(pixels))
  np.testing.assert_allclose(raw, _reference(checkpoint, (pixels / 255 - 0.5) / 0.5),
                             atol=1e-4, rtol=1e-4)


def test_quickstart_exported_to_onnx_and_stablehlo(quickstart_run, tfds_dir, tmp_path):
  """The bar: the quickstart run in ONNX Runtime on the test images, logits <= 1e-4 from
  JAX and the same accuracy; its StableHLO reloaded in a fresh process matches."""
  from vit_jax import convert
  from vit_jax.data import sources
  workdir, _ = quickstart_run
  checkpoint = convert.read(str(workdir))
  source = sources.get_source("sklearn_digits", data_dir=tfds_dir)
  examples = [source.decode(r) for r in source.records("test")]
  images = Preprocessing(checkpoint.pp)(np.stack([e["image"] for e in examples]))
  labels = np.array([int(e["label"]) for e in examples])
  path = export(str(workdir), "onnx", str(tmp_path / "onnx"))
  ours = _reference(checkpoint, images)
  theirs = onnx_export.run(open(path, "rb").read(), images)
  np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-4)
  assert np.mean(theirs.argmax(-1) == labels) == np.mean(ours.argmax(-1) == labels) > 0.7
  path = export(str(workdir), "stablehlo", str(tmp_path / "hlo"))
  np.save(tmp_path / "images.npy", images)
  script = (f"import numpy as np, jax; e = jax.export.deserialize(bytearray(open({path!r}, 'rb')"
            f".read())); np.save({str(tmp_path / 'out.npy')!r}, np.asarray(e.call(np.load("
            f"{str(tmp_path / 'images.npy')!r}))))")
  result = helpers.run_subprocess(["-c", script])
  assert result.returncode == 0, result.stderr[-2000:]
  np.testing.assert_allclose(np.load(tmp_path / "out.npy"), ours, atol=1e-4, rtol=1e-4)


def test_export_mistakes_are_one_line(quickstart_run, tmp_path):
  workdir, _ = quickstart_run
  (tmp_path / "taken").mkdir()
  for args, message in (
      (["--format=tflite"], "flag --format=tflite: value should be one of"),
      ([f"--out={tmp_path / 'taken'}"], "already exists; pass --overwrite"),
      (["--format=onnx", "--dtype=bfloat16"], "ONNX export is float32"),
  ):
    args = [f"--checkpoint={workdir}", f"--out={tmp_path / 'new'}", *args]
    result = helpers.run_subprocess(["-m", "vit_jax.cli.export", *args])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
  assert not (tmp_path / "new").exists() or not os.listdir(tmp_path / "new")


def test_savedmodel_export_prints_no_tensorflow_banner(tmp_path):
  """TensorFlow, imported for the SavedModel, keeps its start-up lines off the console."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from vit_jax.convert import npz_format  # pylint: disable=import-outside-toplevel
  model = create_model("ViT-test", num_classes=3)
  params = nn.unbox(model.init(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))["params"])
  npz_format.save_npz(params, tmp_path / "model.npz")
  result = helpers.run_subprocess(["-m", "vit_jax.cli.export",
                                   f"--checkpoint={tmp_path / 'model.npz'}",
                                   "--model=ViT-test", "--format=savedmodel",
                                   f"--out={tmp_path / 'sm'}"], timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stderr.strip() == "", result.stderr[-2000:]
  assert result.stdout.strip().splitlines() == [f"Wrote {tmp_path / 'sm'} (and signature.json "
                                                f"beside it)"]
