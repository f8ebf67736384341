"""Every config file loads for every preset it names, is locked, and documents its command."""
import importlib.util
import os

import pytest

from tests import helpers
from vit_jax import config as config_lib

CASES = [
    ("quickstart.py", None),
    ("mnist_pretrain.py", None),
    ("digits_finetune.py", None),
    *[("finetune.py", f"b16,{d}") for d in ("cifar10", "cifar100", "oxford_iiit_pet",
                                             "oxford_flowers102", "imagenet2012")],
    ("finetune.py", "ViT-L_16,folder:/data/mine"),
    ("pretrain.py", "b16,imagenet2012"),
    ("pretrain.py", "s16,imagenet2012"),
    ("pretrain.py", "l16,imagenet21k"),
    *[("pretrain_large.py", f"{m},imagenet21k") for m in ("h14", "g14", "G14")],
    ("mnist_pretrain.py", "DINOv2-digits"),
    ("digits_finetune.py", "DINOv2-digits"),
    ("small_data.py", None),
    ("small_data.py", "pureml_mnist"),
    ("small_data.py", "cifar10"),
]


def load(name):
  path = os.path.join(helpers.REPO, "configs", name)
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name,arg", CASES)
def test_config_loads_locked_and_documented(name, arg):
  module = load(name)
  config = module.get_config(arg)
  assert config.is_locked
  with pytest.raises(AttributeError):
    config.lr_rate = 1.0  # a misspelt field is an error, not a silent new field.
  assert "python -m vit_jax.main --config=configs/" + name in module.__doc__
  assert config.total_steps > config.warmup_steps >= 0
  assert config.batch_size % 8 == 0 or name in ("digits_finetune.py",)


def test_recipes_follow_the_paper():
  cifar = load("finetune.py").get_config("b16,cifar10")
  assert (cifar.optimizer, cifar.momentum, cifar.weight_decay, cifar.batch_size) == \
      ("sgd", 0.9, 0.0, 512)
  assert (cifar.total_steps, cifar.warmup_steps, cifar.grad_clip_norm) == (10_000, 500, 1.0)
  assert "resize(384)" in cifar.pp_eval and cifar.model_name == "ViT-B_16"
  pets = load("finetune.py").get_config("b16,oxford_iiit_pet")
  assert pets.total_steps == 500
  i1k = load("pretrain.py").get_config("b16,imagenet2012")
  assert (i1k.optimizer, i1k.b1, i1k.b2, i1k.batch_size, i1k.warmup_steps) == \
      ("adam", 0.9, 0.999, 4096, 10_000)
  assert (i1k.weight_decay, i1k.model.dropout_rate, i1k.end_lr) == (0.3, 0.1, 1e-5)
  i21k = load("pretrain.py").get_config("l16,imagenet21k")
  assert (i21k.loss, i21k.model.head_bias_init, i21k.model.representation_size) == \
      ("sigmoid", -10.0, 1024)
  assert i21k.label_key == "labels" and "multi_hot(21843)" in i21k.pp_train


def test_unknown_model_in_config_args():
  with pytest.raises(ValueError, match="Unknown model name 'b17'"):
    load("finetune.py").get_config("b17,cifar10")


def test_benchmark_and_run_configs(tmp_path):
  bench = load("benchmark.py").get_config("l16")
  assert bench.is_locked and bench.model_name == "ViT-L_16"
  assert (bench.optimizer, bench.model.dropout_rate, bench.optimizer_dtype) == \
      ("adam", 0.0, "float32")
  assert "python -m vit_jax.cli.benchmark --config=configs/benchmark.py" in load(
      "benchmark.py").__doc__
  with pytest.raises(ValueError, match="configs/run.py needs the run's workdir"):
    load("run.py").get_config(None)
  with pytest.raises(ValueError, match="has no config.json"):
    load("run.py").get_config(str(tmp_path))


def test_resolution_and_patch_size_reach_the_model_and_the_pipeline(tfds_dir):
  """--config.resolution=16 --config.model.patch_size=8 on the tiny config (8 px, patch 4):
  the batches are 16 px, the patch kernel 8x8 and the position-embedding grid 2x2."""
  import jax
  from vit_jax import sharding as sharding_lib
  from vit_jax.trainer import build as build_lib, setup
  from vit_jax.data import pipeline, sources
  from tests.test_train import tiny
  config = setup.with_resolution(tiny(tfds_dir, resolution=16, **{"model.patch_size": 8}))
  assert "inception_crop(16" in config.pp_train and "resize(16)" in config.pp_eval
  source = sources.from_config(config)
  shape = pipeline.image_shape(source, split=config.test_split, pp=config.pp_eval)
  assert tuple(shape) == (16, 16, 3)
  built = build_lib.build(config, sharding_lib.make_mesh(dict(config.mesh)),
                          num_classes=source.num_classes, image_shape=shape)
  params = jax.tree.map(lambda x: x.shape, built.state.abstract.params)
  assert params["embedding"]["kernel"] == (8, 8, 3, 32)
  assert params["Transformer"]["posembed_input"]["pos_embedding"] == (1, 1 + 2 * 2, 32)
  with pytest.raises(ValueError, match="resolution=-3 must be a positive"):
    setup.with_resolution(tiny(tfds_dir, resolution=-3))


def test_finetune_and_small_data_fit_a_folder(digits_folder):
  """folder:DIR defaults come from the images: the fixture's digits are 240 16x16 PNGs."""
  from vit_jax.data.folder_stats import folder_stats
  stats = folder_stats(digits_folder)
  assert (stats.median_side, stats.num_classes, stats.num_train) == (16, 10, 240)
  ft = load("finetune.py").get_config(f"ViT-digits,folder:{digits_folder}")
  assert "inception_crop(16)" in ft.pp_train and "resize(16)" in ft.pp_eval
  assert (ft.batch_size, ft.model.dtype) == (64, "float32")
  assert (ft.total_steps, ft.warmup_steps) == (200, 20)  # 20 epochs is 75: at least 200.
  big = load("finetune.py").get_config(f"b16,folder:{digits_folder}")
  assert "inception_crop(32)" in big.pp_train  # at least 2 patches of 16 per side.
  small = load("small_data.py").get_config(f"folder:{digits_folder}")
  assert small.model.patch_size == 4 and "randaug(" in small.pp_train
  assert "flip_lr" not in small.pp_train
