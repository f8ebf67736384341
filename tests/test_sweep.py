"""`python -m vit_jax.sweep` on the quickstart config: 2 x 2 points, shared between two
shards, then resumed without redoing anything."""
import csv
import os
import subprocess
import sys

from tests import helpers

QUICKSTART = os.path.join(helpers.REPO, "configs", "quickstart.py")
SWEEP = [sys.executable, "-m", "vit_jax.sweep", f"--config={QUICKSTART}",
         "--grid=lr=0.001,0.003", "--grid=total_steps=20,40", "--config.warmup_steps=5",
         "--config.log_every=10", "--config.evals.figures.every=-1"]


def run(workdir, *extra):
  return subprocess.run([*SWEEP, f"--workdir={workdir}", *extra], capture_output=True,
                        text=True, env=helpers.cli_env(), timeout=900)


def test_sweep_table_plot_shards_and_resume(tmp_path):
  first = run(tmp_path, "--shard=0/2")  # points 0 and 2 of 4: what one of two hosts runs.
  assert first.returncode == 0, first.stdout + first.stderr
  assert "2 of 4 points finished" in first.stdout
  rest = run(tmp_path)
  assert rest.returncode == 0, rest.stdout + rest.stderr
  assert rest.stdout.count("finished earlier, skipped") == 2
  assert rest.stdout.count("training ...") == 2 and "4 of 4 points finished" in rest.stdout
  with open(tmp_path / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["lr"], r["total_steps"]) for r in rows] == [
      ("0.001", "20"), ("0.001", "40"), ("0.003", "20"), ("0.003", "40")]
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
