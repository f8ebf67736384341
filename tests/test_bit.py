"""The BiT family (ResNet-v2, the paper's baseline): exact parameter counts against timm,
logits against timm's resnetv2 (BiT's zero-padded root pool) and against the same model
with big_vision's -inf padded pool, every checkpoint layout read and written (the
published `.npz` bit-exact both ways, big_vision's bit_paper params, timm state dicts),
and fine-tuning through the trainer from a BiT run and from a converted timm file."""
import functools

import jax
import numpy as np
import pytest

from tests.test_convert import assert_close, photos, randomise, save_timm
from tests.test_train import tiny
from tests.torch_refs import import_references
from vit_jax import convert
from vit_jax.convert import bit_format, writers
from vit_jax.errors import UserError
from vit_jax.models import count_parameters, create_model
from vit_jax.models.params import flatten
from vit_jax.trainer import loop

torch, timm, _ = import_references()


def _timm_bit(block_sizes=(1, 1, 1, 1), width_factor=0.5, num_classes=7, seed=0):
  """timm's ResNetV2 as timm builds its BiT models, random weights everywhere."""
  from timm.layers import StdConv2d
  model = timm.models.resnetv2.ResNetV2(
      layers=list(block_sizes), width_factor=width_factor, num_classes=num_classes,
      stem_type="fixed", conv_layer=functools.partial(StdConv2d, eps=1e-8))
  randomise(model, seed)
  return model.eval()


def _timm_logits(model, images):
  return model(torch.from_numpy(np.transpose(images, (0, 3, 1, 2)))).numpy()


def _ours(checkpoint, images, **overrides):
  arch = {**checkpoint.arch, **overrides}
  model = create_model("bit", num_classes=checkpoint.num_classes,
                       **{k: v for k, v in arch.items() if k != "family"})
  return np.asarray(jax.jit(model.apply)({"params": checkpoint.params}, images))


@pytest.mark.parametrize("name, timm_name", [("BiT-R50x1", "resnetv2_50x1_bit"),
                                             ("BiT-R101x3", "resnetv2_101x3_bit"),
                                             ("BiT-R152x4", "resnetv2_152x4_bit")])
def test_parameter_counts_are_timms(name, timm_name):
  with torch.device("meta"):  # shapes only: R152x4 has 936M parameters.
    reference = timm.create_model(timm_name, pretrained=False, num_classes=1000)
  assert count_parameters(name, num_classes=1000) == sum(p.numel()
                                                         for p in reference.parameters())


def test_timm_state_dict_logits_and_round_trip(tmp_path):
  """A timm BiT (random) read from its .safetensors gives timm's logits at two sizes; the
  state dict written back is the same tensors, bit for bit."""
  reference = _timm_bit()
  path = str(tmp_path / "bit.safetensors")
  save_timm(reference, path)
  checkpoint = convert.read(path)
  assert checkpoint.arch["family"] == "bit" and checkpoint.arch["block_sizes"] == (1, 1, 1, 1)
  for size in (64, 50):  # 50: odd feature maps, where padding rules differ.
    images = photos(size)
    assert_close(_ours(checkpoint, images), _timm_logits(reference, images))
  out = str(tmp_path / "out.safetensors")
  writers.write_timm(checkpoint, out)
  from safetensors.numpy import load_file
  written, original = load_file(out), reference.state_dict()
  assert set(written) == set(original)
  for key, value in written.items():
    np.testing.assert_array_equal(value, original[key].numpy(), err_msg=key)


def test_big_vision_layout_and_its_minus_inf_root_pool():
  """big_vision's bit_paper params ((1, 1, 1, C) GroupNorms, norm-pre-head) read back to
  the same model, which pools its root over -inf: timm's model with its zero pad made
  -inf computes the same logits; the zero pad gives other logits (the option matters)."""
  reference = _timm_bit(seed=1)
  arch, params, _ = bit_format.from_timm({k: v.numpy() for k, v in
                                          reference.state_dict().items()})
  flat = bit_format.to_big_vision(params)
  assert flat["norm-pre-head/scale"].shape[:3] == (1, 1, 1)
  bv_arch, bv_params, _ = bit_format.from_big_vision(flat)
  assert bv_arch["stem_pool_padding"] == "-inf"
  for key, value in flatten(params).items():
    np.testing.assert_array_equal(flatten(bv_params)[key], value, err_msg=key)
  checkpoint = convert.Checkpoint.of(bv_arch, bv_params, {}, "big_vision")
  images = photos(64)
  reference.stem.pad = torch.nn.ConstantPad2d(1, float("-inf"))
  assert_close(_ours(checkpoint, images), _timm_logits(reference, images))
  zero_padded = _ours(checkpoint, images, stem_pool_padding="zeros")
  assert np.abs(zero_padded - _timm_logits(reference, images)).max() > 1e-3


def test_published_npz_round_trip_is_bit_exact(tmp_path):
  """The published BiT layout (resnet/...: a, b, c groups, proj, a 1x1-conv head) read and
  written: both directions bit-exact; the file reads as a self-described checkpoint."""
  reference = _timm_bit(block_sizes=(2, 1, 1, 1), seed=2)
  arch, params, _ = bit_format.from_timm({k: v.numpy() for k, v in
                                          reference.state_dict().items()})
  published = bit_format.to_published(params)
  assert "resnet/block1/unit01/a/proj/standardized_conv2d/kernel" in published
  assert "resnet/block1/unit02/c/group_norm/gamma" in published
  assert published["resnet/head/conv2d/kernel"].shape[:2] == (1, 1)
  path = str(tmp_path / "BiT-S-R50x1.npz")
  np.savez(path, **published)
  checkpoint = convert.read(path)
  assert checkpoint.arch == {**arch, "stem_pool_padding": "zeros"}
  again = bit_format.to_published(checkpoint.params)
  assert set(again) == set(published)
  for key, value in published.items():
    np.testing.assert_array_equal(again[key], value, err_msg=key)
  images = photos(64)
  assert_close(_ours(checkpoint, images), _timm_logits(reference, images))
  out = str(tmp_path / "written.npz")
  writers.write_bit_published(checkpoint, out)
  with np.load(out) as written:
    assert sorted(written.files) == sorted(published)


def test_bad_bit_hyper_parameters_are_one_line():
  with pytest.raises(UserError, match="model.depth=34 is not one of"):
    create_model("bit", num_classes=3, depth=34)
  with pytest.raises(UserError, match="not a multiple of the 32 GroupNorm groups"):
    create_model("BiT-test", num_classes=3, width_factor=0.3)
  with pytest.raises(UserError, match="no meaning for a BiT ResNet"):
    create_model("BiT-test", num_classes=3, dropout_rate=0.1)


def test_bit_trains_and_fine_tunes_from_its_run_and_from_timm(tfds_dir, tmp_path, capsys):
  """BiT through the trainer: a run; a fine-tune from that run and from a converted timm
  file with --config.pretrained alone (the architecture comes with the checkpoint)."""
  source = tmp_path / "bit_run"
  loop.train_and_evaluate(tiny(tfds_dir, model_name="BiT-test", total_steps=3,
                               checkpoint_every=3, lr=0.01), source)
  reference = _timm_bit(num_classes=10, seed=3)
  timm_file = str(tmp_path / "bit.safetensors")
  save_timm(reference, timm_file)
  for pretrained in (str(source), timm_file):
    capsys.readouterr()
    config = tiny(tfds_dir, total_steps=2, checkpoint_every=2, warmup_steps=1,
                  pretrained=pretrained)
    state = loop.train_and_evaluate(config, tmp_path / f"ft_{len(pretrained)}")
    assert "Fine-tuning from" in capsys.readouterr().out
    assert "root_block" in state.params and int(state.step) == 2


def _config_of(name: str, arg: str):
  import importlib.util
  import pathlib
  path = pathlib.Path(__file__).parent.parent / "configs" / name
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("dataset, steps, drops_at, mixup, crop", [
    ("cifar10", 10_000, (3000, 6000, 9000), 0.1, "resize(160)|random_crop(128)"),
    ("oxford_iiit_pet", 500, (200, 300, 400), 0.0, "resize(512)|random_crop(480)"),
    ("imagenet2012", 20_000, (6000, 12000, 18000), 0.1, "resize(512)|random_crop(480)")])
def test_bit_hyperrule_as_big_transfer_defines_it(dataset, steps, drops_at, mixup, crop):
  """bit_hyperrule.py (google-research/big_transfer): schedule length, warm-up and the
  10x drops by dataset size, MixUp from 20k examples, 128 px crops below 96 px images."""
  from vit_jax.trainer import optim
  config = _config_of("finetune.py", f"bit-r50x1,{dataset}")
  assert config.model_name == "BiT-R50x1" and config.optimizer == "sgd"
  assert (config.lr, config.batch_size, config.weight_decay) == (0.003, 512, 0.0)
  assert config.total_steps == steps and config.mixup_alpha == mixup
  assert crop in config.pp_train
  schedule = optim.make_schedule(config)
  warmup = 100 if steps == 500 else 500
  assert float(schedule(warmup // 2)) == pytest.approx(0.0015)
  for i, boundary in enumerate(drops_at):
    assert float(schedule(boundary - 1)) == pytest.approx(0.003 * 0.1**i)
    assert float(schedule(boundary + 1)) == pytest.approx(0.003 * 0.1**(i + 1))


def test_bit_pretraining_recipe_and_sgd_weight_decay():
  """big_vision's bit_i1k.py: SGD lr 0.1 per 256 images, decay wd x schedule = lr x 0.001
  here; with zero gradients one step decays the kernels by exactly that, after momentum."""
  import jax.numpy as jnp
  from tests.test_models import random_params
  from vit_jax.trainer import optim
  config = _config_of("pretrain.py", "bit-r50x1,imagenet2012")
  assert (config.optimizer, config.lr, config.batch_size) == ("sgd", 1.6, 4096)
  assert config.weight_decay * config.lr == pytest.approx(1e-4 / 256 * 4096)
  assert config.total_steps == 1_281_167 * 90 // 4096
  config = config.unlock()
  config.update(warmup_steps=0, schedule="constant", grad_clip_norm=0.0,
                optimizer_dtype="float32")
  tx, _ = optim.make_optimizer(config)
  params = random_params(create_model("BiT-test", num_classes=3), 32)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  kernel = params["block1"]["unit01"]["conv1"]["kernel"]
  np.testing.assert_allclose(updates["block1"]["unit01"]["conv1"]["kernel"],
                             -config.lr * config.weight_decay * kernel, rtol=1e-6)
  assert not np.any(updates["block1"]["unit01"]["gn1"]["scale"])  # norms are not decayed.


def test_bit_exports_to_onnx_and_gives_features(tmp_path):
  """Serving (ONNX through jax2onnx, run by ONNX Runtime) and the features of a BiT: the
  final feature map as tokens, the stages as blocks."""
  from vit_jax.analysis import features
  from vit_jax.serving import graph, onnx_export
  reference = _timm_bit(seed=4)
  path = str(tmp_path / "bit.safetensors")
  save_timm(reference, path)
  checkpoint = convert.read(path)
  serving = graph.serving_function(checkpoint, output="logits", dtype="float32",
                                   uint8_input=False, input_size=0)
  images = photos(224)
  data, _ = onnx_export.export_bytes(serving)
  assert_close(onnx_export.run(data, images), _timm_logits(reference, images))
  model = create_model("bit", num_classes=7, **{k: v for k, v in checkpoint.arch.items()
                                                if k != "family"})
  found = features.extract(model, checkpoint.params, images[:, :64, :64], blocks=(0, -1))
  assert found["patch_tokens"].shape == (2, 4, 1024) and found["pooled"].shape == (2, 1024)
  assert found["block_0"].shape == (2, 16, 16, 128) and found["block_3"].shape == (2, 2, 2, 1024)
  np.testing.assert_allclose(found["patch_tokens"].mean(axis=1), found["pooled"], rtol=1e-5,
                             atol=1e-6)


def test_bit_preset_names_read_timm_hub_weights_offline(tmp_path, monkeypatch):
  """`--config.pretrained=BiT-R50x1` is timm's BiT-M repository through the Hub cache
  (written here in huggingface_hub's layout, offline), with timm's preprocessing record."""
  import json
  from tests.test_hub import COMMIT, _cache
  repo = tmp_path / "repo"
  repo.mkdir()
  save_timm(_timm_bit(num_classes=21843 // 1000, seed=5), str(repo / "model.safetensors"))
  (repo / "config.json").write_text(json.dumps({
      "architecture": "resnetv2_50x1_bit", "num_classes": 21,
      "pretrained_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3, "input_size": [3, 448, 448]}}))
  cache = tmp_path / "cache"
  cache.mkdir()
  _cache(cache, "timm/resnetv2_50x1_bit.goog_in21k", repo)
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  checkpoint = convert.read("BiT-R50x1")
  assert checkpoint.arch["family"] == "bit" and checkpoint.num_classes == 21
  assert checkpoint.preprocessing["resolution"] == 448
  assert COMMIT in checkpoint.source


def test_r152x4_state_splits_evenly_with_fsdp_on_256_chips():
  """Every convolution is split over its output channels: BiT-R152x4's parameters and
  momentum per chip within 1.1x of an even share on a 256-way fsdp mesh."""
  from tests.test_tpu_compile import _per_device_over_even_share
  from jax.sharding import AbstractMesh, AxisType
  from vit_jax import sharding as sharding_lib
  from vit_jax.trainer import build as build_lib
  config = _config_of("pretrain.py", "bit-r152x4,imagenet2012")
  mesh = AbstractMesh((1, 256, 1), sharding_lib.MESH_AXES, axis_types=(AxisType.Auto,) * 3)
  abstract = build_lib.build(config, mesh, num_classes=1000,
                             image_shape=(224, 224, 3)).state.abstract
  assert _per_device_over_even_share(abstract, 256) <= 1.1


def test_figures_draw_a_bits_root_filters():
  """The figures evaluator asks the family for its first layer: a BiT's 7x7 root filters
  (no attention figures: it has none)."""
  from tests.test_models import random_params
  from vit_jax.analysis import figures
  model = create_model("BiT-test", num_classes=3)
  drawn = figures.make_figures(model, random_params(model, 32),
                               np.zeros((2, 32, 32, 3), np.float32), num_components=4)
  assert list(drawn) == ["embedding_filters"]
