"""`python -m vit_jax.sweep` on the quickstart config: 2 x 1 points, shared between two
shards, then resumed without redoing anything; the small-data strength search."""
import csv
import os
import subprocess
import sys

import pytest

from tests import helpers
from vit_jax.errors import UserError


QUICKSTART = os.path.join(helpers.REPO, "configs", "quickstart.py")
SWEEP = [sys.executable, "-m", "vit_jax.sweep", f"--config={QUICKSTART}",
         "--grid=lr=0.001,0.003", "--grid=total_steps=20", "--config.warmup_steps=5",
         "--config.log_every=10", "--config.evals.figures.every=-1"]


def run(workdir, *extra):
  return subprocess.run([*SWEEP, f"--workdir={workdir}", *extra], capture_output=True,
                        text=True, env=helpers.cli_env(), timeout=900)


def test_sweep_table_plot_shards_and_resume(tmp_path):
  first = run(tmp_path, "--shard=1/2")  # point 1 of 2: what the second of two hosts runs.
  assert first.returncode == 0, first.stdout + first.stderr
  assert "1 of 2 points finished" in first.stdout and "lr=0.003" in first.stdout
  rest = run(tmp_path)
  assert rest.returncode == 0, rest.stdout + rest.stderr
  assert rest.stdout.count("finished earlier, skipped") == 1
  assert rest.stdout.count("training ...") == 1 and "2 of 2 points finished" in rest.stdout
  # Each point's progress and eval lines are forwarded, prefixed with the point.
  assert "[1/2] lr=0.001,total_steps=20: [" in rest.stdout and "step 10/20" in rest.stdout
  assert "[1/2] lr=0.001,total_steps=20: eval step 20: " in rest.stdout
  with open(tmp_path / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["lr"], r["total_steps"]) for r in rows] == [("0.001", "20"), ("0.003", "20")]
  for row in rows:
    assert 0 < float(row["val_accuracy"]) <= 1 and 0 < float(row["test_accuracy"]) <= 1
    assert float(row["fewshot_10shot_accuracy"]) > 0 and float(row["wall_s"]) > 0
  results = (tmp_path / "results.md").read_text()
  assert "| lr | total_steps | val_accuracy | test_accuracy |" in results
  # Selected on validation: the point with the highest val_accuracy, whatever its test.
  best = max(rows, key=lambda r: float(r["val_accuracy"]))
  assert (f"Selected on the validation split (highest final val_accuracy): lr={best['lr']}, "
          f"total_steps={best['total_steps']}") in results
  assert (tmp_path / "results.png").stat().st_size > 10_000
  # Everything finished: a third run trains nothing and leaves the points untouched.
  stamps = {p: os.path.getmtime(tmp_path / p / "metrics.jsonl") for p in os.listdir(tmp_path)
            if (tmp_path / p).is_dir()}
  again = run(tmp_path)
  assert again.returncode == 0 and "training ..." not in again.stdout
  assert stamps == {p: os.path.getmtime(tmp_path / p / "metrics.jsonl") for p in stamps}


def test_sweep_bad_field_is_one_line(tmp_path):
  result = subprocess.run([sys.executable, "-m", "vit_jax.sweep", f"--config={QUICKSTART}",
                           f"--workdir={tmp_path}", "--grid=lr_rate=0.1,0.2"],
                          capture_output=True, text=True, env=helpers.cli_env())
  assert result.returncode == 2
  assert result.stderr.strip() == "error: --grid field 'lr_rate' is not in the config (no 'lr_rate')."
  assert not os.listdir(tmp_path)
  typo = subprocess.run([sys.executable, "-m", "vit_jax.sweep", f"--config={QUICKSTART}",
                         f"--workdir={tmp_path}", "--grid=model.hiden_size=32,64"],
                        capture_output=True, text=True, env=helpers.cli_env())
  assert typo.returncode == 2
  assert typo.stderr.strip() == ("error: --grid field 'model.hiden_size' is not in the config "
                                 "(no 'hiden_size'); did you mean model.hidden_size?")


def test_small_data_chooses_its_strength_on_validation_and_resumes(tmp_path, monkeypatch):
  """The probes' validation accuracy chooses (never the test accuracy); the chosen option
  trains the full schedule; a second call trains nothing. The trainer is replaced by one
  that writes what each option would score (training itself is tested elsewhere)."""
  from etils import epath
  from vit_jax.tuning import grid as grid_lib
  from vit_jax.tuning import small_data
  scores = {"light": (0.80, 0.95), "medium": (0.90, 0.85), "strong": (0.85, 0.99)}
  calls = []

  def fake_run_point(config_arg, workdir, point, passthrough):
    option = config_arg.split(":", 1)[1].split(",", 1)[1]
    calls.append((option, point, passthrough))
    val, test = scores[option.split(",")[0]]
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "metrics.jsonl").write_text(
        f'{{"step": 1, "val_accuracy": {val}, "test_accuracy": {test}}}\n')
    (workdir / "sweep_result.json").write_text('{"wall_seconds": 1.0}')  # as run_point does.
    return 1.0

  monkeypatch.setattr(grid_lib, "run_point", fake_run_point)
  options = small_data.candidates("digits", ["light", "medium", "strong"], ["flip"])
  text = small_data.run(small_data.CONFIG_FILE, "digits", epath.Path(tmp_path), options, 7,
                        ["--config.lr=0.002"])
  assert [c[0] for c in calls] == ["light,flip", "medium,flip", "strong,flip", "medium,flip"]
  assert all(c[1]["total_steps"] == 7 for c in calls[:3])
  # Refit: the chosen option trains on the training split and its validation cut, joined.
  assert calls[3][1] == {"train_split": "train", "val_split": ""}
  assert all(c[1]["evals.fewshot.every"] == -1 for c in calls[:3])
  assert all(c[2] == ["--config.lr=0.002"] for c in calls)
  assert "| medium,flip (chosen) | 0.9000 |" in text
  assert "refit on the training and validation images" in text
  assert "test_accuracy 0.8500" in text
  assert (tmp_path / "results.md").read_text() == text
  assert small_data.run(small_data.CONFIG_FILE, "digits", epath.Path(tmp_path), options, 7,
                        []) == text
  assert len(calls) == 4  # everything had finished: nothing trained again.
  with pytest.raises(UserError, match=r"--strengths: unknown \['huge'\]"):
    small_data.candidates("digits", ["huge"], ["auto"])
  # Flips 'auto': the preset's where the data is known, both where it is not.
  assert small_data.candidates("digits", ["light"], ["auto"]) == ["light,noflip"]
  assert small_data.candidates("cifar10", ["light"], ["auto"]) == ["light,flip"]
  assert small_data.candidates("folder:/x", ["light", "medium"], ["auto"]) == [
      "light,noflip", "medium,noflip", "light,flip", "medium,flip"]
  # Without refit the chosen option keeps its validation split, and reports it.
  text = small_data.run(small_data.CONFIG_FILE, "digits", epath.Path(tmp_path / "b"), options,
                        7, [], refit=False)
  assert calls[-1][1] == {} and "val_accuracy 0.9000: test_accuracy 0.8500" in text


def test_small_data_strengths_differ_in_augmentation_only():
  from vit_jax.configs import small_data
  light, strong = (small_data.get_config(f"pureml_mnist,{s}") for s in ("light", "strong"))
  assert "randaug" not in light.pp_train and "randaug(2, 9" in strong.pp_train
  assert (light.mixup_alpha, strong.mixup_alpha) == (0.0, 0.8)
  assert light.model.hidden_size == strong.model.hidden_size and light.lr == strong.lr
  assert "flip_lr" not in light.pp_train  # MNIST's preset: no flips.
  assert "flip_lr" in small_data.get_config("pureml_mnist,light,flip").pp_train
