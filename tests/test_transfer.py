"""The transfer suite: VTAB-1k's label functions and splits as task_adaptation defines
them (google-research/task_adaptation, data/*.py, commit d7630d3), all 19 tasks end to end
on TFDS datasets the tests make (fine-tuned from the quickstart run), resume, shards, a
partial suite's report, the cost, and bad input."""
import json
import os

import numpy as np
import pytest

from tests import helpers
from tests.fake_tfds import fake_datasets
from vit_jax import storage
from vit_jax.data import vtab
from vit_jax.errors import UserError
from vit_jax.tuning import transfer

TINY = {"total_steps": 2, "batch_size": 8, "eval_batch_size": 16, "resolution": 8,
        "input_workers": 0, "model.dtype": "float32", "optimizer_dtype": "float32",
        "log_every": 1, "checkpoint_every": 2}
GRID = [("lr", [0.01])]


def test_label_functions_are_task_adaptations():
  """clevr.py, kitti.py, dsprites.py, smallnorb.py: counts, binned distances, binned
  positions and orientations, passed-through attributes."""
  label = lambda name, record: vtab.label_of(vtab.TASKS[name], record)  # noqa: E731
  objects = {"size": np.zeros(5), "pixel_coords": np.array([[1, 2, 9.7], [3, 4, 8.7]] + [[0, 0, 20]] * 3)}
  assert label("clevr_count", {"objects": objects}) == 2           # 5 objects - 3.
  assert label("clevr_distance", {"objects": objects}) == 2        # 8.7: in [8.5, 9).
  kitti = {"type": np.array([0, 5, 2]), "location": np.array([[0, 0, 30], [0, 0, 3], [0, 0, 15]])}
  assert label("kitti_distance", {"objects": kitti}) == 1          # vehicle at 15 m: [8, 20).
  no_vehicle = {"type": np.array([5]), "location": np.array([[0, 0, 1.0]])}
  assert label("kitti_distance", {"objects": no_vehicle}) == 3     # none: 1000 m.
  assert label("dsprites_location", {"label_x_position": 31}) == 15  # 32 values, 16 bins.
  assert label("dsprites_orientation", {"label_orientation": 39}) == 15  # 40 / 2.5.
  assert label("dsprites_orientation", {"label_orientation": 2}) == 0
  assert label("smallnorb_elevation", {"label_elevation": 8}) == 8
  with pytest.raises(ValueError, match="outside"):
    label("clevr_count", {"objects": {"size": np.zeros(12)}})


@pytest.mark.parametrize("task, counts, val200, test", [
    ("caltech101", {"train": 3060}, "train[2754:2954]", "test"),
    ("cifar100", {"train": 50000}, "train[45000:45200]", "test"),
    ("oxford_iiit_pet", {"train": 3680}, "train[2944:3144]", "test"),
    ("svhn", {"train": 73257}, "train[65931:66131]", "test"),
    ("dtd", {}, "validation[:200]", "test"),
    ("eurosat", {"train": 27000}, "train[16200:16400]", "train[21600:]"),
    ("resisc45", {"train": 31500}, "train[18900:19100]", "train[25200:]"),
    ("clevr_count", {"train": 70000}, "train[63000:63200]", "validation"),
    ("dsprites_location", {"train": 737280}, "train[589824:590024]", "train[663552:]"),
    ("smallnorb_azimuth", {}, "test[:200]", "test[50%:]"),
])
def test_splits_are_task_adaptations(task, counts, val200, test):
  splits = vtab.TASKS[task].tfds_splits(lambda name: counts[name])
  assert splits == {"train800": "train[:800]", "val200": val200,
                    "train800val200": f"train[:800]+{val200}", "test": test}


@pytest.fixture(scope="module")
def vtab_suite(quickstart_run, tmp_path_factory):
  """VTAB-1k's 19 tasks, fine-tuned from the quickstart run on fake data: one grid point
  and the final run each."""
  checkpoint, _ = quickstart_run
  root = storage.path(tmp_path_factory.mktemp("vtab"))
  data_dir = str(tmp_path_factory.mktemp("fake_tfds"))
  with fake_datasets(data_dir):
    failures = transfer.run_suite(root, transfer.suite_tasks("vtab1k"),
                                  checkpoint=str(checkpoint), grid=GRID,
                                  overrides={**TINY, "data_dir": data_dir})
  return root, str(checkpoint), data_dir, failures


def test_vtab1k_end_to_end_with_group_means(vtab_suite):
  root, checkpoint, _, failures = vtab_suite
  assert failures == 0
  markdown, means = transfer.write_report(root, transfer.suite_tasks("vtab1k"),
                                          checkpoint=checkpoint, grid=GRID)
  rows = [line for line in markdown.splitlines() if line.startswith("| ")
          and line.split(" | ")[0][2:] in vtab.TASKS]
  assert len(rows) == 19 and "Not finished" not in markdown
  assert {g: n for g, (_, n) in means.items()} == {"natural": 7, "specialized": 4,
                                                     "structured": 8, "vtab": 19}
  for group in ("natural", "specialized", "structured", "vtab"):
    assert f"| {group} | {100 * means[group][0]:.1f} |" in markdown
  accuracies = [json.loads(line)["test_accuracy"] for task in vtab.TASKS
                for line in (root / task / "final" / "metrics.jsonl").read_text().splitlines()
                if "test_accuracy" in line]
  assert means["vtab"][0] == pytest.approx(sum(accuracies) / 19)
  assert (root / "results.png").exists() and (root / "results.csv").exists()
  assert any(name.startswith("events.out") for name in os.listdir(root))
  # The structured tasks train without crops and flips; the others with them.
  config = json.loads((root / "dsprites_location" / "final" / "config.json").read_text())
  assert "flip_lr" not in config["pp_train"] and config["train_split"] == "train800val200"
  assert "flip_lr" in json.loads((root / "dtd" / "final" / "config.json").read_text())["pp_train"]


def test_rerun_does_nothing_and_shards_equal_one_run(vtab_suite, tmp_path, capsys):
  root, checkpoint, data_dir, _ = vtab_suite
  before = {p: os.stat(p).st_mtime for p in root.glob("*/*/metrics.jsonl")}
  with fake_datasets(data_dir):
    assert transfer.run_suite(root, transfer.suite_tasks("vtab1k"), checkpoint=checkpoint,
                              grid=GRID, overrides={**TINY, "data_dir": data_dir}) == 0
  assert capsys.readouterr().out.count("finished earlier, skipped") == 38
  assert before == {p: os.stat(p).st_mtime for p in root.glob("*/*/metrics.jsonl")}
  tasks = ["dtd", "smallnorb_elevation"]
  runs = transfer.plan(tasks, (0, 2), GRID) + transfer.plan(tasks, (1, 2), GRID)
  assert sorted(map(str, runs)) == sorted(map(str, transfer.plan(tasks, grid=GRID)))
  sharded = storage.path(tmp_path)
  with fake_datasets(data_dir):
    for shard in ((0, 2), (1, 2)):
      transfer.run_suite(sharded, tasks, checkpoint=checkpoint, grid=GRID, shard=shard,
                         overrides={**TINY, "data_dir": data_dir})
  ours, _ = transfer.collect(sharded, tasks, GRID)
  theirs, _ = transfer.collect(root, tasks, GRID)
  assert [(r["task"], r["val_accuracy"], r["test_accuracy"]) for r in ours] == \
      [(r["task"], r["val_accuracy"], r["test_accuracy"]) for r in theirs]


def test_partial_suite_reports_what_finished_and_lists_the_rest(vtab_suite, tmp_path):
  root, checkpoint, _, _ = vtab_suite
  markdown, means = transfer.write_report(root, ["dtd", "clevr_count", "paper/cifar10"],
                                          checkpoint=checkpoint, grid=GRID)
  assert "Not finished (1): paper/cifar10." in markdown
  assert "| natural |" in markdown and "1 of 1" in markdown and "paper" not in means


def test_cost_before_the_work():
  text = transfer.dry_run(["dtd", "clevr_count"], overrides={}, images_per_second=1000.0)
  # Four grid points and a final run (priced at the longest schedule) per task.
  assert text.count("| dtd |") == 5 and "| dtd | final | 2,500 | 1,280,000 |" in text
  assert "| all | 10 runs | | 8,704,000 | 2.4 h |" in text


def test_bad_input_is_one_line(tmp_path):
  with pytest.raises(UserError, match="did you mean 'clevr_count'"):
    transfer.suite_tasks("clevr_cout,dtd")
  with pytest.raises(UserError, match=r"not prepared; .*--dataset=clevr .*--dataset=dmlab"):
    transfer.check_prepared(["clevr_count", "clevr_distance", "dmlab"], str(tmp_path))
  result = helpers.run_subprocess(["-m", "vit_jax.cli.transfer", f"--workdir={tmp_path}/w",
                                   "--suite=dtd", f"--checkpoint={tmp_path}/nothing.npz"])
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
  assert "checkpoint=" in lines[0] and "no such file or directory" in lines[0]


def test_suites_name_vtab_tasks_and_whole_datasets_apart():
  """VTAB's cifar100 is 1,000 images; the paper's is the whole dataset with its recipe."""
  assert transfer.suite_tasks("paper")[:2] == ["paper/imagenet2012", "paper/cifar10"]
  assert transfer.suite_tasks("cifar10,cifar100") == ["paper/cifar10", "cifar100"]
  vtab_config = transfer.task_config("cifar100", "final")
  paper_config = transfer.task_config("paper/cifar100", "final")
  assert vtab_config.dataset == "vtab:cifar100" and vtab_config.train_split == "train800val200"
  assert paper_config.dataset == "cifar100" and paper_config.train_split == "train"
  assert paper_config.total_steps == 10_000 and transfer.grid_of("paper/cifar100") == \
      transfer.PAPER_GRID
  flowers = transfer.task_config("paper/oxford_flowers102", "final")
  assert flowers.train_split == "train+validation" and flowers.val_split == ""


def test_a_bucket_mirror_copies_the_files_of_every_split_a_task_split_names(tmp_path):
  """ArrayRecord reads local files: from a bucket, a VTAB split's mirror must hold the
  files of each TFDS split its string names (train800val200 of dtd: train and validation),
  not of a split named like the task's."""
  from vit_jax.data import sources
  source = sources.get_source("vtab:dtd", data_dir=str(tmp_path))
  wanted = source.mirrored(vtab.TASKS["dtd"].tfds_splits(lambda name: 0)["train800val200"])
  assert wanted("dtd-train.array_record-00000-of-00002")
  assert wanted("dtd-validation.array_record-00000-of-00001")
  assert wanted("dataset_info.json") and not wanted("dtd-test.array_record-00000-of-00001")
