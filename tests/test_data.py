"""Input pipeline: offline sources, TFDS (mocked), folders, determinism, resume, padded
eval, sharding over 8 devices, and bad input."""
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vit_jax.errors import UserError
from vit_jax import sharding as sharding_lib
from vit_jax.data import device_feed, pipeline, sources

PP_TRAIN = "to_rgb|inception_crop(8)|flip_lr|value_range(-1, 1)"
PP_EVAL = "to_rgb|resize(8)|value_range(-1, 1)"


def take(ds, n):
  it = ds.as_numpy_iterator()
  return [next(it) for _ in range(n)]


@pytest.fixture(scope="module")
def digits(tfds_dir):
  return sources.get_source("digits", data_dir=tfds_dir)


def test_digits_source_is_the_real_dataset(digits):
  assert digits.num_classes == 10
  sizes = [digits.shard_size(s, shard_index=0, num_shards=1, drop_remainder=False)
           for s in ("train", "test")]
  assert sizes == [1438, 359] and sum(sizes) == 1797
  batch = take(pipeline.train_dataset(digits, split="train", global_batch_size=32, pp=PP_TRAIN,
                                      seed=0), 1)[0]
  assert batch["image"].shape == (32, 8, 8, 3) and batch["image"].dtype == np.float32
  assert -1 <= batch["image"].min() < batch["image"].max() <= 1
  assert set(batch["label"]) <= set(range(10)) and len(set(batch["label"])) > 3


def test_mnist_source(tfds_dir):
  mnist = sources.get_source("pureml_mnist", data_dir=tfds_dir)
  assert mnist.shard_size("train", shard_index=0, num_shards=1, drop_remainder=True) == 60000
  assert mnist.shard_size("test", shard_index=0, num_shards=1, drop_remainder=False) == 10000
  data = pipeline.eval_dataset(mnist, split="test", global_batch_size=500,
                               pp="to_rgb|value_range(-1, 1)")
  first = next(iter(data))
  assert first["image"].shape == (500, 28, 28, 3)
  # Real digits: the mean image is bright in the middle, dark at the border.
  mean = first["image"].mean(axis=(0, 3))
  assert mean[14, 14] > mean[0, 0] + 0.5


def test_same_seed_same_batches_and_exact_resume(digits):
  kw = dict(split="train", global_batch_size=64, pp=PP_TRAIN, shuffle_buffer=500)
  run = take(pipeline.train_dataset(digits, seed=3, **kw), 50)  # > 2 epochs of 1,438.
  again = take(pipeline.train_dataset(digits, seed=3, **kw), 50)
  other = take(pipeline.train_dataset(digits, seed=4, **kw), 1)
  for a, b in zip(run, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(run[0]["label"], other[0]["label"])
  for k in (1, 22, 23, 45):  # mid-epoch and across epoch boundaries.
    resumed = take(pipeline.train_dataset(digits, seed=3, start_step=k, **kw), 5)
    for a, b in zip(run[k:k + 5], resumed):
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["label"], b["label"])


def test_each_epoch_sees_every_example_once(digits):
  """With drop_remainder sharding and a full shuffle buffer an epoch is a permutation."""
  size = 1438
  ds = pipeline.train_dataset(digits, split="train", global_batch_size=size // 2, seed=0,
                              pp="to_rgb|value_range(-1, 1)", shuffle_buffer=size)
  first, second = take(ds, 2)
  epoch = np.concatenate([first["image"], second["image"]]).reshape(size, -1)
  test_ds = pipeline.eval_dataset(digits, split="train", global_batch_size=size,
                                  pp="to_rgb|value_range(-1, 1)")
  ordered = next(iter(test_ds))["image"].reshape(size, -1)
  assert sorted(map(bytes, epoch.astype(np.float16))) == \
      sorted(map(bytes, ordered.astype(np.float16)))


def test_shards_make_batches_independent_of_process_count(digits):
  """Two processes each reading one of 2 shards == one process reading both."""
  kw = dict(split="train", global_batch_size=16, pp=PP_TRAIN, seed=0)
  whole = take(pipeline.train_dataset(
      digits, shards=pipeline.DataShards.create(2, 0, 1), **kw), 3)
  parts = [take(pipeline.train_dataset(
      digits, shards=pipeline.DataShards.create(2, p, 2), **kw), 3) for p in range(2)]
  for step in range(3):
    joined = np.concatenate([parts[0][step]["image"], parts[1][step]["image"]])
    np.testing.assert_array_equal(whole[step]["image"], joined)
  # And process 0 never reads process 1's examples in an epoch.
  sizes = [digits.shard_size("train", shard_index=i, num_shards=2, drop_remainder=True)
           for i in range(2)]
  assert sizes == [719, 719]


@pytest.mark.parametrize("batch_size,process_count", [(64, 1), (100, 1), (48, 3), (7, 2)])
def test_padded_eval_counts_every_example_once(digits, batch_size, process_count):
  """A stand-in classifier (label = mean brightness bucket) scored over padded batches
  equals its plain numpy accuracy over the whole split."""
  def predict(images):
    return (np.floor((images.mean(axis=(1, 2, 3)) + 1) * 20) % 10).astype(int)
  correct = total = 0
  labels_seen = []
  for index in range(process_count):
    data = pipeline.eval_dataset(digits, split="test", global_batch_size=batch_size
                                 if batch_size % process_count == 0 else
                                 batch_size * process_count, pp=PP_EVAL,
                                 shards=pipeline.DataShards.create(0, index, process_count))
    batches = list(data)
    assert len(batches) == data.num_batches
    for batch in batches:
      correct += ((predict(batch["image"]) == batch["label"]) * batch["mask"]).sum()
      total += batch["mask"].sum()
      labels_seen += list(batch["label"][batch["mask"] > 0])
  whole = next(iter(pipeline.eval_dataset(digits, split="test", global_batch_size=359,
                                          pp=PP_EVAL)))
  assert total == 359 and sorted(labels_seen) == sorted(whole["label"])
  assert correct / total == pytest.approx((predict(whole["image"]) == whole["label"]).mean())


def test_global_batch_sharded_over_8_devices(digits):
  assert jax.device_count() == 8
  mesh = sharding_lib.make_mesh({"data": -1})
  ds = pipeline.train_dataset(digits, split="train", global_batch_size=32, pp=PP_TRAIN, seed=0)
  batch = next(device_feed.prefetch_to_mesh(ds.as_numpy_iterator(), mesh))
  assert batch["image"].shape == (32, 8, 8, 3)
  assert batch["image"].sharding.spec == sharding_lib.batch_sharding(mesh).spec
  shapes = {shard.data.shape for shard in batch["image"].addressable_shards}
  assert shapes == {(4, 8, 8, 3)}
  with pytest.raises(ValueError, match="Global batch size 12 is not divisible by the 8"):
    pipeline.check_batch_size(12, num_devices=8, num_shards=1)


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("oxford_iiit_pet", 37)])
def test_tfds_datasets_through_mock_data(tmp_path, name, classes):
  with tfds.testing.mock_data(num_examples=40, data_dir=str(tmp_path)):
    source = sources.get_source(name, data_dir=str(tmp_path))
    assert source.num_classes == classes
    batch = take(pipeline.train_dataset(
        source, split="train", global_batch_size=8, seed=0,
        pp="inception_crop(32)|flip_lr|value_range(-1, 1)"), 1)[0]
    assert batch["image"].shape == (8, 32, 32, 3)
    data = pipeline.eval_dataset(source, split="test", global_batch_size=16,
                                 pp="resize(32)|value_range(-1, 1)")
    masks = np.concatenate([b["mask"] for b in data])
    assert masks.sum() == 40 and len(masks) == 48


def test_image_folder_source(digits_folder):
  source = sources.get_source(f"folder:{digits_folder}")
  assert source.num_classes == 10 and source.label_names[0] == "digit_0"
  batch = take(pipeline.train_dataset(source, split="train", global_batch_size=16, seed=0,
                                      pp="random_crop(12)|flip_lr|value_range(-1, 1)"), 1)[0]
  assert batch["image"].shape == (16, 12, 12, 3)
  data = pipeline.eval_dataset(source, split="test", global_batch_size=32,
                               pp="resize(16)|value_range(-1, 1)")
  assert sum(b["mask"].sum() for b in data) == 60


def test_corrupt_image_is_skipped_with_a_warning_naming_it(digits_folder, tmp_path, caplog):
  import shutil
  folder = tmp_path / "data"
  shutil.copytree(digits_folder, folder)
  bad = folder / "test" / "digit_3" / "broken.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n definitely not a png")
  source = sources.get_source(f"folder:{folder}")
  before = len(sources.SKIPPED_IMAGES)
  with caplog.at_level("WARNING"):
    data = pipeline.eval_dataset(source, split="test", global_batch_size=32,
                                 pp="resize(16)|value_range(-1, 1)")
    total = sum(b["mask"].sum() for b in data)
  assert total == 60  # the 61 files minus the broken one, each counted once.
  assert sources.SKIPPED_IMAGES[before:] == [str(bad)]
  assert str(bad) in caplog.text


def test_folder_errors(tmp_path):
  with pytest.raises(ValueError, match="has no train/ subfolder"):
    sources.get_source(f"folder:{tmp_path}")
  (tmp_path / "train" / "cat").mkdir(parents=True)
  source = sources.get_source(f"folder:{tmp_path}")
  with pytest.raises(ValueError, match=r"Class folder .*train/cat is empty"):
    source.shard_size("train", shard_index=0, num_shards=1, drop_remainder=True)


def test_unknown_dataset_name(tfds_dir):
  with pytest.raises(ValueError, match="Unknown dataset 'cifar11'.*folder:"):
    sources.get_source("cifar11", data_dir=tfds_dir)


def test_unprepared_dataset_fails_fast_with_the_command(tmp_path):
  start = time.time()
  source = sources.get_source("cifar100", data_dir=str(tmp_path))
  with pytest.raises(UserError,
                     match=r"not prepared.*python -m vit_jax.cli.prepare --dataset=cifar100"):
    pipeline.train_dataset(source, split="train", global_batch_size=8, pp=PP_TRAIN, seed=0)
  assert time.time() - start < 10
