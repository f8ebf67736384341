"""Input pipeline (Grain, no TensorFlow): offline sources, TFDS ArrayRecord (prepared
offline and mocked), folders, determinism, O(1) exact resume across worker counts, padded
eval, sharding over 8 devices, and bad input."""
import os
import shutil
import subprocess
import sys
import time

import grain
import jax
import ml_collections
import numpy as np
import pytest

from tests import helpers
from vit_jax.errors import UserError
from vit_jax import sharding as sharding_lib
from vit_jax.data import device_feed, pipeline, sources

PP_TRAIN = "to_rgb|inception_crop(8)|flip_lr|value_range(-1, 1)"
PP_EVAL = "to_rgb|resize(8)|value_range(-1, 1)"
ONE = pipeline.DataShards(1, 0, 1)


def take(stream, n):
  return [next(stream) for _ in range(n)]


def stream(source, **kw):
  kw = {"split": "train", "global_batch_size": 64, "pp": PP_TRAIN, "seed": 3, "shards": ONE,
        **kw}
  return pipeline.TrainStream(source, **kw)


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])


@pytest.fixture(scope="module")
def digits():
  return sources.get_source("digits")


@pytest.fixture
def folder_with_a_broken_image(digits_folder, tmp_path):
  folder = tmp_path / "data"
  shutil.copytree(digits_folder, folder)
  bad = folder / "train" / "digit_3" / "0003_broken.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n definitely not a png")
  return folder, bad


def test_digits_source_is_the_real_dataset(digits):
  assert digits.num_classes == 10
  sizes = [digits.split_size(s) for s in ("train", "test")]
  assert sizes == [1438, 359] and sum(sizes) == 1797
  batch = take(stream(digits, global_batch_size=32), 1)[0]
  assert batch["image"].shape == (32, 8, 8, 3) and batch["image"].dtype == np.float32
  assert batch["label"].dtype == np.int32
  assert -1 <= batch["image"].min() < batch["image"].max() <= 1
  assert set(batch["label"]) <= set(range(10)) and len(set(batch["label"])) > 3
  assert digits.split_size("train[:10%]") == 144 and digits.split_size("train[-10:]") == 10


def test_mnist_source():
  mnist = sources.get_source("pureml_mnist")
  assert mnist.split_size("train") == 60000 and mnist.split_size("test") == 10000
  data = pipeline.eval_dataset(mnist, split="test", global_batch_size=500,
                               pp="to_rgb|value_range(-1, 1)", shards=ONE)
  first = next(iter(data))
  assert first["image"].shape == (500, 28, 28, 3)
  # Real digits: the mean image is bright in the middle, dark at the border.
  mean = first["image"].mean(axis=(0, 3))
  assert mean[14, 14] > mean[0, 0] + 0.5


def test_same_seed_same_batches_and_exact_resume(digits):
  run_stream = stream(digits)
  run = take(run_stream, 50)  # > 2 epochs of 1,438.
  assert_batches_equal(take(stream(digits), 50), run)
  assert not np.array_equal(take(stream(digits, seed=4), 1)[0]["label"], run[0]["label"])
  for k in (1, 22, 23, 45):  # mid-epoch and across epoch boundaries.
    assert_batches_equal(take(stream(digits, start_step=k), 5), run[k:k + 5])
    positions = run_stream.state(k).state["positions"]
    assert positions == {"0": k * 64}
    assert_batches_equal(take(stream(digits, start_step=k, positions=positions), 5),
                         run[k:k + 5])


def test_each_epoch_sees_every_example_once(digits):
  """With drop_remainder sharding an epoch is a permutation of the split."""
  size = 1438
  first, second = take(stream(digits, global_batch_size=size // 2, pp="to_rgb"), 2)
  epoch = np.concatenate([first["image"], second["image"]]).reshape(size, -1)
  ordered = next(iter(pipeline.eval_dataset(digits, split="train", global_batch_size=size,
                                            pp="to_rgb", shards=ONE)))["image"]
  assert sorted(map(bytes, epoch)) == sorted(map(bytes, ordered.reshape(size, -1)))
  third = take(stream(digits, global_batch_size=size // 2, pp="to_rgb"), 3)[2]
  assert not np.array_equal(third["image"], first["image"])  # the next epoch reshuffles.


def test_shards_make_batches_independent_of_process_count(digits):
  """Two processes each reading one of 2 shards == one process reading both."""
  kw = dict(global_batch_size=16, seed=0)
  whole = take(stream(digits, shards=pipeline.DataShards.create(2, 0, 1), **kw), 3)
  parts = [take(stream(digits, shards=pipeline.DataShards.create(2, p, 2), **kw), 3)
           for p in range(2)]
  for step in range(3):
    joined = np.concatenate([parts[0][step]["image"], parts[1][step]["image"]])
    np.testing.assert_array_equal(whole[step]["image"], joined)
  assert [len(sources.shard_range(1438, i, 2, drop_remainder=True)) for i in range(2)] == \
      [719, 719]


def test_worker_processes_change_nothing_and_resume_is_exact_across_worker_counts(
    folder_with_a_broken_image):
  """Decoding in 2 worker processes gives the batches of decoding in-process, unreadable
  image skipped alike; a resume from the saved position continues exactly, with another
  worker count."""
  folder, bad = folder_with_a_broken_image
  source = sources.get_source(f"folder:{folder}")
  kw = dict(global_batch_size=16, pp="random_crop(12)|flip_lr|value_range(-1, 1)")
  in_process = stream(source, workers=0, **kw)
  reference = take(in_process, 40)  # > 2 epochs of 240 files: the broken one is met.
  in_process.close()
  assert in_process.skips.count >= 2 and in_process.skips.files == {str(bad)}
  with_workers = stream(source, workers=2, **kw)
  assert_batches_equal(take(with_workers, 40), reference)
  with_workers.close()
  position = in_process.state(25).state["positions"]
  assert position["0"] > 25 * 16  # the skipped file counts as read.
  resumed = stream(source, workers=1, start_step=25, positions=position, **kw)
  assert_batches_equal(take(resumed, 15), reference[25:])
  resumed.close()


def test_batcher_joins_chunks_across_skips_and_reports_resume_positions():
  """Batches are the next `size` readable examples in stream order whatever the chunk
  boundaries; each comes with the position after its last example; a chunk that is
  exactly one batch is handed on as it is (no copy)."""
  start, size, count = 100, 4, 30
  bad = {3, 4, 9, 17, 18, 19, 26}
  elements = [{"skipped": f"f{p}", "reason": f"f{p} is broken"} if p - start in bad else
              {"image": np.full((2, 2, 3), p, np.uint8), "label": np.int32(p)}
              for p in range(start, start + count)]
  pack = pipeline._Chunk(shared=False)
  skips = pipeline.SkipLog()
  batcher = pipeline._Batcher(size, "pp", start, skips)
  got = [out for i in range(0, count, 5) for out in batcher.feed(pack(elements[i:i + 5]))]
  readable = [start + i for i in range(count) if i not in bad]
  assert [list(batch["label"]) for batch, _ in got] == [
      readable[i:i + size] for i in range(0, len(readable) - size + 1, size)]
  assert [position for _, position in got] == [
      readable[i + size - 1] + 1 for i in range(0, len(readable) - size + 1, size)]
  for batch, _ in got:
    assert (batch["image"][:, 0, 0, 0] == batch["label"]).all()
  assert skips.count == len([p for p in bad if p < 5 * (count // 5)])
  whole = pack(elements[5:5 + size])  # all readable.
  assert next(pipeline._Batcher(size, "pp", start, skips).feed(whole))[0]["image"] is \
      whole["kept"]["image"]


def test_worker_batches_arrive_in_shared_memory_uncopied(digits_folder):
  batch = next(stream(sources.get_source(f"folder:{digits_folder}"), workers=1,
                      global_batch_size=8))
  assert isinstance(batch["image"], grain.multiprocessing.SharedMemoryArray)


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
                                          pp=PP_EVAL, shards=ONE)))
  assert total == 359 and sorted(labels_seen) == sorted(whole["label"])
  assert correct / total == pytest.approx((predict(whole["image"]) == whole["label"]).mean())


def test_global_batch_sharded_over_8_devices(digits):
  assert jax.device_count() == 8
  mesh = sharding_lib.make_mesh({"data": -1})
  batch = next(device_feed.prefetch_to_mesh(stream(digits, global_batch_size=32), mesh))
  assert batch["image"].shape == (32, 8, 8, 3)
  assert batch["image"].sharding.spec == sharding_lib.batch_sharding(mesh).spec
  shapes = {shard.data.shape for shard in batch["image"].addressable_shards}
  assert shapes == {(4, 8, 8, 3)}
  from vit_jax.trainer import setup  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({"batch_size": 12, "accum_steps": 1})
  with pytest.raises(ValueError, match="Global batch size 12 is not divisible by the 8 "
                                       "devices on the data and fsdp mesh axes; use a "
                                       "multiple of 8"):
    setup.check_batch_size(config, mesh, num_data_shards=1)


def test_tfds_arrayrecord_prepared_into_a_bucket_reads_without_tensorflow(digits, gcs, tmp_path):
  """`vit_jax.cli.prepare --data_dir=gs://BUCKET/tfds` writes the digits as ArrayRecord
  into the bucket (TensorFlow needed there); a process where TensorFlow cannot be imported
  reads them back from the bucket through Grain (eval split and training stream), equal to
  the arrays."""
  data_dir = f"gs://{gcs.new()}/tfds"
  prepare = subprocess.run([sys.executable, "-m", "vit_jax.cli.prepare",
                            "--dataset=sklearn_digits", f"--data_dir={data_dir}"],
                           capture_output=True, text=True, timeout=600, env=helpers.cli_env())
  assert prepare.returncode == 0, prepare.stderr[-2000:]
  assert f"Prepared sklearn_digits in {data_dir}" in prepare.stdout
  script = f"""
import sys
import tests.no_tensorflow  # as if TensorFlow were not installed.
import numpy as np
from vit_jax.data import pipeline, sources
source = sources.TfdsSource("sklearn_digits", data_dir={data_dir!r})
batch = next(iter(pipeline.eval_dataset(source, split="test", global_batch_size=359, pp="",
                                        shards=pipeline.DataShards(1, 0, 1))))
train = next(pipeline.TrainStream(source, split="train[:50%]", global_batch_size=16, pp="",
                                  seed=0, shards=pipeline.DataShards(1, 0, 1), workers=1))
assert train["image"].shape == (16, 8, 8, 1), train["image"].shape
np.save({str(tmp_path / "test.npy")!r}, batch["image"])
np.save({str(tmp_path / "labels.npy")!r}, batch["label"])
"""
  env = helpers.cli_env()
  env["VIT_JAX_CACHE"] = str(tmp_path / "cache")
  read = subprocess.run([sys.executable, "-c", script + "assert 'tensorflow' not in sys.modules"],
                        capture_output=True, text=True, timeout=300, cwd=helpers.REPO, env=env)
  assert read.returncode == 0, read.stderr[-2000:]
  # Only the splits read were copied to the local cache (ArrayRecord reads local files).
  mirrored = [name for _, _, files in os.walk(tmp_path / "cache") for name in files]
  assert any("train.array_record" in n for n in mirrored)
  assert any("test.array_record" in n for n in mirrored)
  images, labels = digits.splits["test"]

  def examples(images, labels):  # TFDS stores examples in its own (hashed) order.
    return sorted((image.tobytes(), int(label)) for image, label in zip(images, labels))
  assert examples(np.load(tmp_path / "test.npy"), np.load(tmp_path / "labels.npy")) == \
      examples(images, labels)


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("oxford_flowers102", 102)])
def test_tfds_datasets_through_mock_data(tmp_path, name, classes, monkeypatch):
  import tensorflow_datasets as tfds
  monkeypatch.setattr(sources.TfdsSource, "_check_prepared", lambda self: None)
  with tfds.testing.mock_data(num_examples=40, data_dir=str(tmp_path),
                              policy=tfds.testing.MockPolicy.USE_CODE):
    source = sources.TfdsSource(name, data_dir=str(tmp_path))
    assert source.num_classes == classes
    batch = take(stream(source, global_batch_size=8, seed=0,
                        pp="inception_crop(32)|flip_lr|value_range(-1, 1)"), 1)[0]
    assert batch["image"].shape == (8, 32, 32, 3)
    data = pipeline.eval_dataset(source, split="test", global_batch_size=16,
                                 pp="resize(32)|value_range(-1, 1)", shards=ONE)
    masks = np.concatenate([b["mask"] for b in data])
    assert masks.sum() == 40 and len(masks) == 48


def test_image_folder_source(digits_folder):
  source = sources.get_source(f"folder:{digits_folder}")
  assert source.num_classes == 10 and source.label_names[0] == "digit_0"
  batch = take(stream(source, global_batch_size=16, seed=0,
                      pp="random_crop(12)|flip_lr|value_range(-1, 1)"), 1)[0]
  assert batch["image"].shape == (16, 12, 12, 3)
  data = pipeline.eval_dataset(source, split="test", global_batch_size=32,
                               pp="resize(16)|value_range(-1, 1)", shards=ONE)
  assert sum(b["mask"].sum() for b in data) == 60


def test_corrupt_image_is_skipped_with_one_warning_naming_it(folder_with_a_broken_image,
                                                             capsys):
  folder, bad = folder_with_a_broken_image
  shutil.move(bad, folder / "test" / "digit_3" / bad.name)
  bad = folder / "test" / "digit_3" / bad.name
  source = sources.get_source(f"folder:{folder}")
  data = pipeline.eval_dataset(source, split="test", global_batch_size=32,
                               pp="resize(16)|value_range(-1, 1)", shards=ONE)
  for _ in range(2):  # two evaluations of the same split.
    assert sum(b["mask"].sum() for b in data) == 60  # 61 files minus the broken one.
  assert data.skips.count == 2 and data.skips.files == {str(bad)}
  out = capsys.readouterr().out
  assert out.count(str(bad)) == 1 and out.startswith("warning: skipping")  # warned once.


def test_variable_sized_images_without_resize_are_one_clear_error(tmp_path):
  from PIL import Image
  for i, size in enumerate((8, 12)):
    (tmp_path / "train" / "a").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size)).save(tmp_path / "train" / "a" / f"{i}.png")
  source = sources.get_source(f"folder:{tmp_path}")
  with pytest.raises(UserError, match=r"different shapes.*add resize"):
    list(pipeline.eval_dataset(source, split="train", global_batch_size=2, pp="", shards=ONE))


def test_folder_errors(tmp_path):
  with pytest.raises(ValueError, match="has no train/ subfolder"):
    sources.get_source(f"folder:{tmp_path}")
  (tmp_path / "train" / "cat").mkdir(parents=True)
  source = sources.get_source(f"folder:{tmp_path}")
  with pytest.raises(ValueError, match=r"Class folder .*train/cat is empty"):
    source.split_size("train")


def test_unknown_dataset_name(tfds_dir):
  with pytest.raises(ValueError, match="Unknown dataset 'cifar11'.*folder:"):
    sources.get_source("cifar11", data_dir=tfds_dir)


def test_tfrecord_dataset_asks_to_be_prepared_as_arrayrecord(tmp_path):
  subprocess.run([sys.executable, "-c", f"""
import tensorflow_datasets as tfds
from vit_jax.data import builders
tfds.builder("sklearn_digits", data_dir={str(tmp_path)!r}).download_and_prepare()
"""], check=True, capture_output=True, cwd=helpers.REPO, timeout=300)
  source = sources.TfdsSource("sklearn_digits", data_dir=str(tmp_path))
  with pytest.raises(UserError, match=r"prepared as tfrecord.*prepare it again as ArrayRecord: "
                                      r"python -m vit_jax.cli.prepare --dataset=sklearn_digits"):
    source.records("train")


def test_unprepared_dataset_fails_fast_with_the_command(tmp_path):
  start = time.time()
  source = sources.get_source("cifar100", data_dir=str(tmp_path))
  with pytest.raises(UserError,
                     match=r"not prepared.*python -m vit_jax.cli.prepare --dataset=cifar100"):
    stream(source, global_batch_size=8, seed=0)
  assert time.time() - start < 10


def test_small_shared_memory_is_a_warning_with_the_fix_before_any_batch(digits_folder,
                                                                       monkeypatch, capsys):
  """Shared memory too small for the workers' batches (a container's 64 MB /dev/shm at
  ImageNet sizes): one warning naming the numbers and the fix, at start, instead of a
  worker's SIGBUS mid-run."""
  free = {"bytes": 8 * 2**20}
  monkeypatch.setattr(pipeline.shutil, "disk_usage",
                      lambda path: type("Usage", (), {"free": free["bytes"]}))
  source = sources.get_source(f"folder:{digits_folder}")
  # 2 workers x 6 batches x 64 images of 64x64x3 uint8 (+ labels): 9.4 MB > 8 MB free.
  capsys.readouterr()
  stream(source, workers=2, global_batch_size=64, pp="to_rgb|resize(64)").close()
  warned = [line for line in capsys.readouterr().out.splitlines() if "shared memory" in line]
  assert len(warned) == 1 and "--shm-size=" in warned[0] and "input_workers" in warned[0]
  assert warned[0].startswith("warning: ")
  free["bytes"] = 2**40
  stream(source, workers=2, global_batch_size=64, pp="to_rgb|resize(64)").close()
  assert "shared memory" not in capsys.readouterr().out


def test_folder_slices_are_stratified_per_class(digits_folder):
  """`train[:90%]` / `train[90%:]` of an image folder: every class keeps 90% / 10% of its
  images, the two are disjoint and together the whole split (a plain slice of the
  class-sorted file list would drop whole classes)."""
  source = sources.ImageFolderSource(str(digits_folder))
  whole = source.records("train")
  head, tail = source.records("train[:90%]"), source.records("train[90%:]")
  assert sorted(head + tail) == sorted(whole) and not set(head) & set(tail)
  for label in range(source.num_classes):
    count = sum(1 for _, l in whole if l == label)
    in_tail = sum(1 for _, l in tail if l == label)
    assert in_tail == count - round(count * 0.9) and in_tail >= 1, label
  assert {l for _, l in source.records("train[:3]")} == set(range(source.num_classes))
