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
    ("finetune.py", "bit-r50x1,cifar10"),
    ("pretrain.py", "bit-r50x1,imagenet2012"),
    ("vtab.py", "clevr_count"),
    ("vtab.py", "dtd,final"),
    ("mae_pretrain.py", None),
    ("mae_pretrain.py", "mpp"),
    ("small_data.py", "digits,pretrain"),
    ("small_data.py", "pureml_mnist,light,flip,mae"),
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
  from vit_jax.trainer import build as build_lib, resolve, setup
  from vit_jax.data import pipeline, sources
  from tests.test_train import tiny
  config = resolve.resolve(tiny(tfds_dir, resolution=16, **{"model.patch_size": 8})).config
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
    resolve.resolve(tiny(tfds_dir, resolution=-3))


def test_finetune_and_small_data_fit_a_folder(digits_folder):
  """folder:DIR defaults come from the images: the fixture's digits are 240 16x16 PNGs."""
  from vit_jax.data.folder_stats import folder_stats
  stats = folder_stats(digits_folder)
  assert (stats.median_side, stats.num_classes, stats.num_train) == (16, 10, 240)
  ft = load("finetune.py").get_config(f"ViT-digits,folder:{digits_folder}")
  assert "inception_crop(16)" in ft.pp_train and "resize(16)" in ft.pp_eval
  assert (ft.batch_size, ft.model.dtype) == (64, "float32")
  assert (ft.total_steps, ft.warmup_steps) == (200, 20)  # 20 epochs is 75: at least 200.
  ft.total_steps = 20  # as --config.total_steps=20 does: the warm-up stays a tenth.
  assert ft.warmup_steps == 2
  big = load("finetune.py").get_config(f"b16,folder:{digits_folder}")
  assert "inception_crop(32)" in big.pp_train  # at least 2 patches of 16 per side.
  small = load("small_data.py").get_config(f"folder:{digits_folder}")
  assert small.model.patch_size == 4 and "randaug(" in small.pp_train
  assert "flip_lr" not in small.pp_train


def test_a_folder_with_only_train_trains_with_a_stratified_test_cut(digits_folder, tmp_path):
  """No test/ subfolder: finetune.py:...,folder:DIR holds out 10% of every class as test
  (and 10% as validation), and the header says so; a bad split name is one line naming
  the fix, and a disabled test evaluation needs no test split at all."""
  import shutil  # pylint: disable=import-outside-toplevel
  folder = tmp_path / "train_only"
  shutil.copytree(digits_folder / "train", folder / "train")
  config = load("finetune.py").get_config(f"ViT-digits,folder:{folder}")
  assert (config.train_split, config.val_split, config.test_split) == (
      "train[:80%]", "train[80%:90%]", "train[90%:]")
  common = [f"--config=configs/finetune.py:ViT-digits,folder:{folder}",
            "--config.total_steps=4", "--config.warmup_steps=1", "--config.log_every=2",
            "--config.evals.test.every=4",
            "--config.checkpoint_every=4"]
  result = helpers.run_subprocess(["-m", "vit_jax.main", f"--workdir={tmp_path / 'run'}",
                                   *common], timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "(test: train[90%:], held out of train)" in result.stdout
  final = [m for m in helpers.read_metrics(tmp_path / "run") if "test_accuracy" in m][-1]
  counts = [len(list(d.iterdir())) for d in (folder / "train").iterdir()]
  assert final["test_examples"] == sum(n - round(n * 0.9) for n in counts)  # per class.
  # A bad split and a missing test/ are one line each, with the fix.
  for split, message in (("", "is not a subfolder name"), ("test", "has no test/ subfolder")):
    bad = helpers.run_subprocess(["-m", "vit_jax.main", f"--workdir={tmp_path / split}x",
                                  *common, f"--config.test_split={split}"], timeout=600)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1, bad.stderr[-2000:]
    assert message in lines[0] and "--config.test_split='train[90%:]'" in lines[0], lines[0]
  # No test evaluation: no test split is read.
  off = helpers.run_subprocess(["-m", "vit_jax.main", f"--workdir={tmp_path / 'off'}",
                                *common, "--config.test_split=test",
                                "--config.evals.test.every=-1"], timeout=600)
  assert off.returncode == 0, off.stderr[-3000:]
