"""A run you can trust and read: damaged checkpoints fall back, a failed save stops cleanly,
metrics hold each step once after a resume, a finished run does nothing, mistakes are one
line before any work, fine-tuning says what it changed, the quickstart console is short
and the command ends promptly after its last line."""
import errno
import os
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from tests import helpers
from tests.test_train import tiny
from vit_jax.trainer import checkpointer, loop


def _steps_on_disk(workdir):
  return sorted(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())


def _damage(checkpoint_dir, kind: str) -> None:
  newest = checkpoint_dir / "state"
  data_files = sorted((os.path.join(d, f) for d, _, files in os.walk(newest / "d")
                       for f in files), key=os.path.getsize)
  if kind == "no_state":
    shutil.rmtree(newest)
  elif kind == "metadata":
    (newest / "_METADATA").write_text("{not json")
  elif kind == "ocdbt":
    shutil.rmtree(next(newest.glob("ocdbt.process_0")))
  elif kind == "4kb":  # 4 KB of garbage in the largest data file: it still decodes.
    with open(data_files[-1], "r+b") as f:
      f.seek(os.path.getsize(data_files[-1]) // 2)
      f.write(os.urandom(4096))
  else:
    for path in data_files:
      size = os.path.getsize(path)
      with open(path, "r+b") as f:
        if kind == "truncate":
          f.truncate(size // 3)
        else:
          f.seek(size // 4)
          f.write(os.urandom(max(1, size // 2)))


def test_damaged_newest_checkpoint_resumes_from_the_previous_one(tfds_dir, tmp_path, capsys):
  """Each kind of damage to the newest checkpoint (garbage over the data, 4 KB of garbage
  that still decodes - caught only by the arrays' fingerprints -, a truncated file, bad
  metadata, a missing state or OCDBT manifest): one warning, the step set aside as
  damaged, and the run resumes from the previous one to the same result as never
  stopping."""
  # A constant schedule: runs that end at different total_steps share their steps.
  straight = loop.train_and_evaluate(tiny(tfds_dir, total_steps=12, schedule="constant"),
                                     tmp_path / "straight")
  base = tmp_path / "base"
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=10, schedule="constant"), base)
  assert _steps_on_disk(base) == [5, 10]
  for kind in ("garbage", "4kb", "truncate", "metadata", "no_state", "ocdbt"):
    workdir = tmp_path / kind
    shutil.copytree(base, workdir)
    _damage(workdir / "checkpoints" / "10", kind)
    capsys.readouterr()
    resumed = loop.train_and_evaluate(tiny(tfds_dir, total_steps=12, schedule="constant"),
                                      workdir)
    out = capsys.readouterr().out
    assert "warning: the checkpoint of step 10 is damaged" in out, (kind, out)
    assert "Resumed from step 5" in out, (kind, out)
    assert (workdir / "checkpoints" / "10.damaged").is_dir()
    # Steps 6..12 were trained again from step 5: the same result as never stopping.
    np.testing.assert_allclose(resumed.params["head"]["kernel"],
                               straight.params["head"]["kernel"], rtol=1e-5, atol=1e-7)
    assert _steps_on_disk(workdir) == [5, 10, 12]


def test_checkpoint_of_another_model_is_a_user_error_not_damage(tfds_dir, tmp_path):
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=5), tmp_path)
  with pytest.raises(ValueError, match="does not fit this config's model"):
    loop.train_and_evaluate(tiny(tfds_dir, total_steps=10, model_name="ViT-digits"), tmp_path)
  assert _steps_on_disk(tmp_path) == [5]  # nothing set aside.


def test_failed_save_stops_the_run_and_removes_its_partial_files(tfds_dir, tmp_path,
                                                                 monkeypatch):
  """A fake full disk at the second checkpoint (step 10): the run stops there with one
  line; checkpoint 5 is intact, no temporary directory is left, and the same command
  resumes from step 5."""
  real = json_checkpoint_handler.JsonCheckpointHandler._save_fn

  def full_disk(self, item, directory):
    # The step is its own path part ("10" or orbax's "10.orbax-checkpoint-tmp-..."); the
    # test's own tmp path can hold "10" too (pytest-101).
    if any(re.fullmatch(r"10(\..*)?", part) for part in pathlib.Path(directory).parts):
      raise OSError(errno.ENOSPC, "No space left on device")
    return real(self, item, directory)
  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full_disk)
  with pytest.raises(checkpointer.CheckpointSaveError,
                     match=r"saving checkpoint 10 .* failed \(No space left on device\)"
                     r".*newest complete checkpoint: step 5"):
    loop.train_and_evaluate(tiny(tfds_dir, total_steps=15), tmp_path)
  assert _steps_on_disk(tmp_path) == [5]
  assert not [n for n in os.listdir(tmp_path / "checkpoints") if "tmp" in n]  # no partial files.
  assert max(helpers.losses(tmp_path)) == 10  # it stopped at the failed save.
  monkeypatch.undo()
  state = loop.train_and_evaluate(tiny(tfds_dir, total_steps=15), tmp_path)
  assert int(state.step) == 15


def test_after_a_resume_every_step_is_recorded_once(tfds_dir, tmp_path):
  """Killed after step 8 was logged but before its checkpoint (step 5 is the newest):
  the resumed run supersedes steps 6..8 in metrics.jsonl and in TensorBoard."""
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=8, checkpoint_every=5), tmp_path)
  import shutil
  shutil.rmtree(tmp_path / "checkpoints" / "8")  # as if killed before saving step 8.
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=12, checkpoint_every=5), tmp_path)
  steps = [m["step"] for m in helpers.read_metrics(tmp_path) if "train_loss" in m]
  assert steps == list(range(1, 13))
  from tensorboard.backend.event_processing import plugin_event_accumulator as event_accumulator
  events = event_accumulator.EventAccumulator(str(tmp_path), purge_orphaned_data=True,
                                              size_guidance={"tensors": 0})  # keep all.
  events.Reload()
  tb_steps = [e.step for e in events.Tensors("train/train_loss")]
  assert tb_steps == list(range(1, 13))


def test_a_finished_run_does_nothing_and_says_so(tfds_dir, tmp_path, capsys):
  config = tiny(tfds_dir, total_steps=5, **{"evals.test.every": 0})
  loop.train_and_evaluate(config, tmp_path)
  rows = helpers.read_metrics(tmp_path)
  capsys.readouterr()
  state = loop.train_and_evaluate(config, tmp_path)
  out = capsys.readouterr().out
  assert int(state.step) == 5
  assert "Nothing to do: this run already finished (step 5 of 5)" in out
  assert "Compiled" not in out and helpers.read_metrics(tmp_path) == rows
  # The command says it before JAX starts (no JAX, Flax or TensorFlow imported at all).
  command = helpers.cli_args(tmp_path, f"--config.data_dir={tfds_dir}",
                             "--config.total_steps=5", "--config.evals.test.every=0")
  result = subprocess.run([command[0], "-X", "importtime", *command[1:]], env=helpers.cli_env(),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.startswith("Nothing to do: this run already finished (step 5 of 5)")
  imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
              if line.startswith("import time:")}
  assert not imported & {"jax", "flax", "tensorflow"}, sorted(imported & {"jax", "flax"})
  assert helpers.read_metrics(tmp_path) == rows


ERRORS = [
    (("--config.batchsize=8",),
     "error: --config.batchsize: the config has no field 'batchsize'; did you mean "
     "--config.batch_size?"),
    (("--config.total_steps=0",), "error: total_steps=0 must be a positive integer."),
    (("--config.batch_size=-1",), "error: batch_size=-1 must be a positive integer."),
    (("--config.pretrained=/nonexistent/model.npz",),
     "error: pretrained='/nonexistent/model.npz': no such file or directory."),
    (("--config.dataset=folder:/nonexistent/images",),
     "error: Image folder '/nonexistent/images' has no train/ subfolder"),
    (("--config.model.classifier=tokne",), "error: model.classifier='tokne' is not one of"),
    (("--config.mesh.fsdp=3",), "error: Mesh"),
]


@pytest.mark.parametrize("overrides,message", ERRORS)
def test_mistakes_are_one_line_before_any_work_and_leave_nothing(tfds_dir, tmp_path, overrides,
                                                                  message):
  workdir = tmp_path / "new_run"
  result = helpers.run_cli(workdir, f"--config.data_dir={tfds_dir}", *overrides)
  assert result.returncode == 2
  assert result.stderr.strip().startswith(message), result.stderr[-2000:]
  assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout.strip()
  assert not workdir.exists()


def test_bad_config_file_and_unwritable_workdir(tmp_path):
  missing = helpers.run_subprocess(["-m", "vit_jax.main", "--config=configs/nope.py",
                                    f"--workdir={tmp_path}/a"])
  assert missing.returncode == 2 and missing.stderr.strip() == (
      "error: --config: cannot load the config file ([Errno 2] No such file or directory: "
      "'configs/nope.py')")
  blocker = tmp_path / "file"
  blocker.write_text("")
  result = helpers.run_cli(blocker / "run")
  assert result.returncode == 2
  assert result.stderr.strip() == f"error: --workdir={blocker}/run: {blocker} is not a directory."


def test_finetuning_says_what_it_changed(tfds_dir, tmp_path, capsys):
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=3), tmp_path / "source")
  capsys.readouterr()
  config = tiny(tfds_dir, total_steps=3, pretrained=str(tmp_path / "source"),
                pp_eval="to_rgb|resize(16)|value_range(-1, 1)",
                pp_train="to_rgb|resize(16)|value_range(-1, 1)")
  loop.train_and_evaluate(config, tmp_path / "tuned")
  line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("Fine-tuning")][0]
  assert "replaced the head (32, 10) by a fresh (32, 10)" in line
  assert "resampled the position embeddings from 4 to 4x4 patches (bilinear)" in line


def test_quickstart_console_is_short_and_exits_promptly(quickstart_run):
  _, result = quickstart_run
  lines = result.stdout.strip().splitlines() + result.stderr.strip().splitlines()
  assert len(lines) <= 30, "\n".join(lines)
  assert lines[0].startswith("ViT-digits, 136,650 parameters | sklearn_digits train[:90%]: 1,294")
  assert lines[-1].startswith("Done: 250 steps in ")
  # The tf.data iterator's 30-50 s teardown is gone with tf.data (measured 0.7 s alone).
  assert result.exit_pause < 10.0, result.exit_pause  # not a timing test: 30 s would fail.


def test_second_run_in_a_busy_workdir_is_refused(tfds_dir, tmp_path):
  """A relaunch while a run is still training (or saving) in the same workdir would
  interleave two writers: it is one line, exit 2, and the first run goes on untouched."""
  import signal
  import subprocess
  overrides = (f"--config.data_dir={tfds_dir}", "--config.total_steps=5000",
               "--config.log_every=1", "--config.checkpoint_every=100000")
  first = subprocess.Popen(helpers.cli_args(tmp_path, *overrides), env=helpers.cli_env(1),
                           cwd=helpers.REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
  try:
    for line in first.stdout:
      if "] step 3/" in line:
        break
    second = helpers.run_cli(tmp_path, *overrides)
    assert second.returncode == 2
    assert second.stderr.startswith(f"error: Another run is training in {tmp_path} (pid "
                                    f"{first.pid} on "), second.stderr
    assert second.stderr.count("\n") == 1 and first.poll() is None
    first.send_signal(signal.SIGTERM)
    rest = first.stdout.read()
    assert first.wait(timeout=120) == 0 and "Stopped by SIGTERM at step" in rest
  finally:
    first.kill()
  # The lock went with the process: the same command now resumes.
  resumed = helpers.run_cli(tmp_path, *overrides[:1], "--config.total_steps=4")
  assert resumed.returncode == 0, resumed.stderr[-2000:]
