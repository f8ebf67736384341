"""Recovery, round 2: each fault a fault injector still broke, reproduced (see issue 35).

A save that fails on a full disk stops the run at the next step boundary; a stale
divergence marker never moves a good checkpoint; a run collapsing to chance loss is never
judged healthy and never costs the last good checkpoint; an all-damaged workdir is an
error, not a silent restart; malformed weight files, oversized images and unreadable eval
images are one named line; metrics after a stop equal an uninterrupted run's."""
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import uuid
import zlib

import numpy as np
import pytest

from tests import helpers
from tests.test_recovery import _aside, _signalled
from tests.test_train import tiny
from vit_jax import convert, losses
from vit_jax.errors import UserError, first_line
from vit_jax.trainer import health, loop, progress


# --- 1. A full disk mid-run ---------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
  """A 1 MiB tmpfs: room for one checkpoint of the tiny model, not two."""
  mount = tmp_path / "disk"
  mount.mkdir()
  made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                        capture_output=True, text=True)
  if made.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}): needs root")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_failed_save_stops_the_run_at_the_next_step_boundary_in_one_short_line(
    tfds_dir, small_disk):
  result = helpers.run_cli(small_disk / "run", f"--config.data_dir={tfds_dir}",
                           "--config.total_steps=100000", "--config.checkpoint_every=100",
                           "--config.log_every=50", "--config.keep_checkpoints=100")
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
  line = lines[0]
  assert line.startswith("error: saving checkpoint ") and len(line) <= 300, line
  failed = int(line.split("saving checkpoint ")[1].split(" ")[0])  # the disk's size says.
  assert "No space left on device" in line
  assert f"newest complete checkpoint: step {failed - 100}" in line
  stopped = int(line.split("stopped at step ")[1].split(",")[0])
  # Seen when the write fails (at once, or at a step boundary after it), not at the next
  # save.
  assert failed <= stopped < failed + 100, line
  assert f"Saving checkpoint at step {failed + 100}" not in result.stdout
  names = os.listdir(small_disk / "run" / "checkpoints")
  assert str(failed - 100) in names and not [n for n in names if "tmp" in n], names


# --- 2. Rollbacks: tests/test_recovery.py (each rollback reads another stretch) -----------
# --- 3. A stale divergence marker ------------------------------------------------------------
def test_a_stale_divergence_marker_never_moves_a_good_checkpoint(tfds_dir, tmp_path, capsys):
  workdir = tmp_path / "run"
  with pytest.raises(loop.NonFiniteStepError):  # diverges before its first checkpoint.
    loop.train_and_evaluate(tiny(tfds_dir, total_steps=20, lr=1e6, warmup_steps=0,
                                 schedule="constant", checkpoint_every=100), workdir)
  marker = workdir / "checkpoints" / "divergence.json"
  assert marker.exists()
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=8, checkpoint_every=4), workdir)
  assert not marker.exists()  # the sane run started over: the marker described nothing.
  capsys.readouterr()
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=12, checkpoint_every=4), workdir)
  out = capsys.readouterr().out
  assert "Resumed from step 8 " in out and "had stopped" not in out
  assert not _aside(workdir, ".suspect")
  # A marker left on disk by an older version, older than the newest checkpoint: stale.
  marker.write_text(json.dumps({"step": 4, "why": "a non-finite loss"}))
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=14, checkpoint_every=4), workdir)
  out = capsys.readouterr().out
  assert "Resumed from step 12 " in out and not _aside(workdir, ".suspect")
  assert not marker.exists()


# --- 4. A collapse to chance loss -------------------------------------------------------------
def test_the_normal_range_does_not_drift_up_with_a_slow_collapse():
  rng = np.random.default_rng(0)
  monitor = health.LossMonitor()
  descent = [monitor.assess(2.3 * np.exp(-i / 300) + 0.3 + 0.1 * rng.standard_normal())
             for i in range(1500)]
  assert all(v.healthy for v in descent)  # batch noise on a falling loss: never suspect.
  drift = [monitor.assess(loss + 0.05 * rng.standard_normal())
           for loss in np.linspace(0.4, 2.3, 300)]  # a little worse at every step.
  assert not any(v.healthy for v in drift[-100:])
  # Chance (ln 10) as the ceiling, for a run that was only a little below it.
  near = health.LossMonitor(chance=np.log(10))
  for loss in 1.85 + 0.04 * rng.standard_normal(60):
    near.assess(loss)
  assert not near.assess(2.25).healthy and near.assess(1.9).healthy
  assert losses.chance_loss("softmax", 10) == pytest.approx(2.302585)
  assert losses.chance_loss("sigmoid", 10) is None


def test_a_run_collapsing_to_chance_is_suspect_and_keeps_its_last_good_checkpoint(
    tfds_dir, tmp_path, capsys):
  """The issue's case in miniature: a trained run resumed at a learning rate that makes
  it forget (loss back to ~ln 10), a checkpoint every 2 steps, 3 kept."""
  workdir = tmp_path / "run"
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=60, checkpoint_every=20, log_every=20),
                          workdir)
  capsys.readouterr()
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=110, checkpoint_every=2, log_every=10,
                               lr=3.0), workdir)
  out = capsys.readouterr().out
  verdicts = json.loads((workdir / "checkpoints" / "health.json").read_text())
  collapsed = {s: v for s, v in verdicts.items() if v["loss"] and v["loss"] > 2.0}
  assert collapsed and not any(v["healthy"] for v in collapsed.values()), verdicts
  assert "60" in os.listdir(workdir / "checkpoints")  # the last good one is kept.
  assert out.count("is suspect") == 1  # then one line per 10 suspects in a row.
  assert "checkpoints in a row are suspect" in out and "step 60, is kept" in out


# --- 5. Every checkpoint damaged ---------------------------------------------------------------
def _damage(step_dir):
  for dirpath, _, files in os.walk(step_dir / "state"):
    for name in files:
      path = os.path.join(dirpath, name)
      with open(path, "r+b") as f:
        f.write(os.urandom(max(os.path.getsize(path), 16)))


def test_a_workdir_whose_every_checkpoint_is_damaged_never_starts_over_silently(
    tfds_dir, tmp_path, capsys):
  workdir = tmp_path / "run"
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=6, checkpoint_every=3), workdir)
  for step in ("3", "6"):
    _damage(workdir / "checkpoints" / step)
  capsys.readouterr()
  with pytest.raises(UserError, match=r"every checkpoint in .* is damaged \(step\(s\) \[3, 6\]"
                                      r".*--config.start_over=True"):
    loop.train_and_evaluate(tiny(tfds_dir, total_steps=6, checkpoint_every=3), workdir)
  assert "Training steps" not in capsys.readouterr().out
  with pytest.raises(UserError, match=r"step\(s\) \[3, 6\]"):  # still, on the next try.
    loop.train_and_evaluate(tiny(tfds_dir, total_steps=6, checkpoint_every=3), workdir)
  state = loop.train_and_evaluate(tiny(tfds_dir, total_steps=6, checkpoint_every=3,
                                       start_over=True), workdir)
  out = capsys.readouterr().out
  assert int(state.step) == 6 and "start_over=True: training from step 0" in out
  assert len(_aside(workdir, ".damaged")) == 2  # kept for a person to look at.


# --- 6. Malformed weight files -------------------------------------------------------------
def _safetensors(header: bytes, body: bytes = b"") -> bytes:
  return struct.pack("<Q", len(header)) + header + body


MALFORMED = {
    "bad_json.safetensors": _safetensors(b"{not json"),
    "too_large.safetensors": struct.pack("<Q", 1 << 40) + b"{}",
    "too_small.safetensors": b"\x01\x00",
    "short.safetensors": _safetensors(json.dumps(
        {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode(), b"\0" * 8),
    "not_torch.pth": b"this is no zip and no pickle",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_weight_file_is_one_line_naming_it(tmp_path, name):
  path = tmp_path / name
  path.write_bytes(MALFORMED[name])
  with pytest.raises(UserError) as raised:
    convert.read(str(path))
  message = str(raised.value)
  assert str(path) in message and "\n" not in message and len(message) < 500, message


def test_a_pth_the_weights_only_loader_refuses_is_one_line_in_every_command(tfds_dir, tmp_path):
  import torch  # pylint: disable=import-outside-toplevel
  path = tmp_path / "code.pth"
  torch.save({"weights": torch.zeros(2), "extra": uuid.UUID(int=1)}, path)  # not a tensor.
  with pytest.raises(UserError, match=r"weights-only loader refused it"):
    convert.read(str(path))
  image = tmp_path / "x.png"
  from PIL import Image  # pylint: disable=import-outside-toplevel
  Image.new("RGB", (8, 8)).save(image)
  bad = tmp_path / "bad_json.safetensors"
  bad.write_bytes(MALFORMED["bad_json.safetensors"])
  for args in (["-m", "vit_jax.cli.convert", str(path), str(tmp_path / "out.npz")],
               ["-m", "vit_jax.cli.predict", f"--checkpoint={bad}", str(image)],
               ["-m", "vit_jax.main", f"--config={helpers.TINY_CONFIG}",
                f"--workdir={tmp_path / 'ft'}", f"--config.data_dir={tfds_dir}",
                f"--config.pretrained={bad}"]):
    result = helpers.run_subprocess(args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, (args, result.stderr[-2000:])
    assert lines[0].startswith("error: ") and (".pth " in lines[0] or ".safetensors " in lines[0])
  assert not (tmp_path / "ft").exists()


# --- 7. An oversized image ---------------------------------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
  """A PNG that declares width x height (gray) and holds one tiny IDAT: what PIL's
  decompression-bomb guard looks at, without 400 MB of pixels."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def test_an_oversized_image_is_skipped_and_named_by_config_loading_and_the_pipeline(
    digits_folder, tmp_path, capsys):
  from vit_jax.data import folder_stats  # pylint: disable=import-outside-toplevel
  from vit_jax.pp import images  # pylint: disable=import-outside-toplevel
  folder = tmp_path / "folder"
  shutil.copytree(digits_folder, folder)
  huge = folder / "train" / "digit_3" / "huge.png"
  huge.write_bytes(_png_header_only(20000, 20000))
  stats = folder_stats.folder_stats(str(folder), sample=10000)  # every file looked at.
  assert stats.num_train > 0 and stats.median_side == 16
  warned = capsys.readouterr().out
  assert f"skipping unreadable image {huge}: Image size (400000000 pixels) exceeds limit" in warned
  with pytest.raises(images.UnreadableImageError) as raised:  # the pipeline's path.
    images.load_image(str(huge))
  assert str(huge) in str(raised.value) and "exceeds limit" in str(raised.value)
  result = helpers.run_subprocess(["-m", "vit_jax.cli.config",
                                   f"--config=configs/finetune.py:ViT-test,folder:{folder}"])
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"skipping unreadable image {huge}" in result.stdout


def test_an_unreadable_image_reason_has_no_object_repr():
  from vit_jax.pp import images  # pylint: disable=import-outside-toplevel
  with pytest.raises(images.UnreadableImageError) as raised:
    images._decode(io.BytesIO(b"not an image"), "a.png", keep_gray=False)  # pylint: disable=protected-access
  assert "0x" not in str(raised.value) and "not an image file PIL can identify" in str(raised.value)
  tensorstore = ValueError("DATA_LOSS: Error reading <bound method pybind11_detail_function_"
                           "record_v1.spec of TensorStore({'dtype': '<f4', 'a': {'b': 1}})>: "
                           "checksum mismatch")
  assert first_line(tensorstore) == "ValueError: DATA_LOSS: Error reading: checksum mismatch"


# --- 8. An unreadable test image -------------------------------------------------------------
def test_a_skipped_test_image_is_said_in_the_eval_line_and_summary_or_is_an_error(
    digits_folder, tfds_dir, tmp_path, capsys):
  folder = tmp_path / "folder"
  shutil.copytree(digits_folder, folder)
  (folder / "test" / "digit_0" / "broken.png").write_bytes(b"not a png")
  total = sum(len(files) for _, _, files in os.walk(folder / "test"))
  pp = "resize(8)|value_range(-1, 1)"
  config = dict(dataset=f"folder:{folder}", pp_train=pp, pp_eval=pp, total_steps=4,
                train_split="train", val_split="", test_split="test")
  run = tiny(tfds_dir, **config)
  loop.train_and_evaluate(run, tmp_path / "run")
  out = capsys.readouterr().out
  assert f"test_examples {total - 1}, " in out and "test_skipped_examples 1" in out
  assert f"test on {total - 1} of {total} examples (1 unreadable, skipped)" in out
  assert "evaluated without it" in out
  with pytest.raises(UserError, match=r"strict_eval=True: 1 of the .* examples of split 'test'"):
    loop.train_and_evaluate(tiny(tfds_dir, **config, strict_eval=True), tmp_path / "strict")


# --- 9. Metrics after a stop --------------------------------------------------------------------
def test_metrics_after_a_stop_between_log_lines_equal_an_uninterrupted_run(
    tfds_dir, tmp_path, capsys, monkeypatch):
  config = dict(total_steps=10, log_every=5, checkpoint_every=100)
  loop.train_and_evaluate(tiny(tfds_dir, **config), tmp_path / "straight")
  from vit_jax.runtime import preemption  # pylint: disable=import-outside-toplevel
  real = preemption.StopWatcher.reached

  def stop_at_7(self, step):
    if step == 7:
      self.signal = signal.SIGTERM
    return real(self, step)
  monkeypatch.setattr(preemption.StopWatcher, "reached", stop_at_7)
  loop.train_and_evaluate(tiny(tfds_dir, **config), tmp_path / "stopped")
  monkeypatch.undo()
  assert "Stopped by SIGTERM at step 7" in capsys.readouterr().out
  loop.train_and_evaluate(tiny(tfds_dir, **config), tmp_path / "stopped")
  straight = [r for r in helpers.read_metrics(tmp_path / "straight") if "train_loss" in r]
  resumed = [r for r in helpers.read_metrics(tmp_path / "stopped") if "train_loss" in r]
  assert [r["step"] for r in resumed] == [r["step"] for r in straight] == [1, 5, 10]
  for a, b in zip(straight, resumed):
    assert a["train_loss"] == b["train_loss"] and a["grad_norm"] == b["grad_norm"], (a, b)


# --- 10. The smaller ones -----------------------------------------------------------------------
def test_a_save_and_an_evaluation_are_not_in_the_training_rate(monkeypatch):
  clock = iter([0.0, 12.0])
  monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
  meter = progress.Progress(total_steps=100, start_step=0, batch_size=10, flops_per_step=None,
                            peak_flops=None)
  meter.measure(1)       # the clock starts (t=0).
  meter.exclude(10.0)    # a 10 s save between the log points.
  assert meter.measure(11)["steps_per_sec"] == pytest.approx(10 / 2)  # 10 steps in 2 s.


def test_sigterm_while_compiling_ends_at_once_and_leaves_no_run_behind(tfds_dir, tmp_path):
  workdir = tmp_path / "compiling"
  code, out, err = _signalled(workdir, (f"--config.data_dir={tfds_dir}",
                                        "--config.model.num_layers=5",
                                        "--config.model.hidden_size=48"),
                              "workdir ", [signal.SIGTERM])
  assert code == 0 and err.strip() == "", err[-2000:]
  assert "Stopped by SIGTERM before the first step" in out and "Compiled" not in out
  left = sorted(os.listdir(workdir)) if workdir.exists() else []
  assert [n for n in left if not n.startswith(".")] == [], left  # (.lock is released)


def test_a_double_ctrl_c_never_glues_its_error_to_a_console_line(tfds_dir, tmp_path):
  import time  # pylint: disable=import-outside-toplevel
  from tests.test_recovery import _read_until, _start  # pylint: disable=import-outside-toplevel
  proc = _start(tmp_path / "twice", f"--config.data_dir={tfds_dir}",
                "--config.total_steps=100000", "--config.checkpoint_every=3")
  _read_until(proc, "Saving checkpoint at step 3")
  while proc.poll() is None:
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
  out, err = proc.communicate(timeout=300)
  assert "error:" not in out and all(not line.endswith("error") for line in out.splitlines())
  assert err.strip().startswith("error: interrupted again"), err[-2000:]
