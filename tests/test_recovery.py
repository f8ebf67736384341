"""Runs that recover: a diverged run restarts from its newest healthy checkpoint (or rolls
back by itself), storage problems and signals are one line before or without losing work,
a killed final evaluation runs again, and a SIGKILL leaves no process or shared memory."""
import json
import os
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import psutil
import pytest

from tests import helpers
from tests.test_train import tiny
from vit_jax import convert, storage
from vit_jax.errors import UserError
from vit_jax.trainer import loop

DIVERGE = dict(lr=1e6, warmup_steps=0, schedule="constant", checkpoint_every=1)


def _aside(workdir, suffix):
  return sorted(n for n in os.listdir(workdir / "checkpoints") if n.endswith(suffix))


def _finite(state):
  return all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_a_diverged_run_restarts_from_its_newest_healthy_checkpoint(tfds_dir, tmp_path,
                                                                     capsys):
  """The issue's scenario: a healthy run, resumed at lr 1e6 with a checkpoint every step
  (some saved as it diverged), then the same command at the sane lr finishes, from the
  newest healthy step, with no manual deletion; `resume_step` picks any intact step."""
  workdir = tmp_path / "run"
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=10), workdir)
  with pytest.raises(loop.NonFiniteStepError) as stopped:
    loop.train_and_evaluate(tiny(tfds_dir, total_steps=24, **DIVERGE), workdir)
  # The hint reflects the config: clipping is already on, rollback is not.
  assert "grad_clip_norm" not in str(stopped.value)
  assert "on_divergence='rollback'" in str(stopped.value)
  assert "is suspect" in capsys.readouterr().out  # verdicts as the loss left its range.
  healthy = json.loads((workdir / "checkpoints" / "health.json").read_text())
  newest_healthy = max(int(s) for s, v in healthy.items() if v["healthy"])
  assert newest_healthy >= 10
  state = loop.train_and_evaluate(tiny(tfds_dir, total_steps=24), workdir)
  out = capsys.readouterr().out
  assert f"Resumed from step {newest_healthy} " in out and "newest healthy" in out
  assert int(state.step) == 24 and _finite(state)
  assert _aside(workdir, ".suspect")  # kept for a person to look at, never deleted.
  # resume_step: an older intact step; the newer ones are set aside, not deleted.
  state = loop.train_and_evaluate(tiny(tfds_dir, total_steps=24, resume_step=20), workdir)
  assert "Resumed from step 20 " in capsys.readouterr().out
  assert int(state.step) == 24 and _aside(workdir, ".superseded")
  with pytest.raises(UserError, match=r"resume_step=7: .* has no complete checkpoint"):
    loop.train_and_evaluate(tiny(tfds_dir, total_steps=24, resume_step=7), workdir)


def _nan_once_before(step_to_poison: int, times: int = 1):
  """A fault injector around the compiled train step: the parameters going into step
  `step_to_poison` are NaN, the first `times` times only (a transient fault)."""
  real = loop._compile_train_step  # pylint: disable=protected-access
  fired = []

  class Poisoned:
    def __init__(self, programs):
      self.programs = programs
      self.base = programs.base  # cost analysis.

    def at(self, step):
      compiled = self.programs.at(step)

      def run(state, batch):
        if len(fired) < times and int(state.step) == step_to_poison - 1:
          fired.append(True)
          state = state.replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
        return compiled(state, batch)
      return run
  return lambda *a, **k: Poisoned(real(*a, **k))


def test_rollback_restores_the_newest_healthy_step_skips_batches_and_finishes(
    tfds_dir, tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(loop, "_compile_train_step", _nan_once_before(8))
  config = tiny(tfds_dir, total_steps=12, checkpoint_every=3, on_divergence="rollback",
                rollback_skip_batches=2, max_rollbacks=1)
  state = loop.train_and_evaluate(config, tmp_path)
  out = capsys.readouterr().out
  assert "non-finite step 8: rolled back to step 6" in out
  assert "skipping the next 2 batches (the batches of steps 7-8 are not used; rollback 1 of 1)" in out
  assert int(state.step) == 12 and _finite(state)
  steps = [m["step"] for m in helpers.read_metrics(tmp_path) if "train_loss" in m]
  assert steps == sorted(set(steps)) and steps[-1] == 12  # each step recorded once.


def test_each_rollback_reads_a_stretch_of_the_stream_no_other_try_read(
    tfds_dir, tmp_path, capsys, monkeypatch):
  """Three divergences at the same step: rollback k skips k x rollback_skip_batches, so
  the step after each rollback trains on another batch (before: three exact replays)."""
  monkeypatch.setattr(loop, "_compile_train_step", _nan_once_before(8, times=3))
  config = tiny(tfds_dir, total_steps=10, checkpoint_every=3, on_divergence="rollback",
                rollback_skip_batches=2, max_rollbacks=3)
  state = loop.train_and_evaluate(config, tmp_path)
  out = capsys.readouterr().out
  for k in (1, 2, 3):
    assert (f"skipping the next {2 * k} batches (the batches of steps 7-{6 + 2 * k} are not "
            f"used; rollback {k} of 3)") in out
  # Step 7's loss after each rollback (and before the first): four different batches.
  step7 = [line.split("loss ")[1].split(" ")[0] for line in out.splitlines()
           if "] step 7/10 " in line]
  assert len(step7) == 4 and len(set(step7)) == 4, step7
  assert int(state.step) == 10 and _finite(state)


def test_storage_problems_fail_before_compiling_and_write_nothing(tfds_dir, tmp_path,
                                                                   capsys, monkeypatch):
  workdir = tmp_path / "run"
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=5), workdir)
  capsys.readouterr()
  # A read-only checkpoints folder (root ignores permissions: its EACCES is injected).
  checkpoints = workdir / "checkpoints"
  os.chmod(checkpoints, 0o555)
  if os.geteuid() == 0:
    real_open = open

    def denied(path, *args, **kwargs):
      if str(path).startswith(str(checkpoints)):
        raise PermissionError(13, "Permission denied", str(path))
      return real_open(path, *args, **kwargs)
    monkeypatch.setattr(storage, "open", denied, raising=False)
  try:
    with pytest.raises(UserError, match=r"the checkpoints folder=.*cannot write .*Permission"):
      loop.train_and_evaluate(tiny(tfds_dir, total_steps=10), workdir)
  finally:
    os.chmod(checkpoints, 0o755)
  monkeypatch.undo()
  assert "Compiled" not in capsys.readouterr().out
  # A disk without room for two checkpoints: one line before anything is written.
  monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 100))  # pylint: disable=protected-access
  with pytest.raises(UserError, match=r"100 bytes free, but each checkpoint takes about "
                                      r"0\.\d\d MiB"):  # MiB where GiB rounds to 0.00.
    loop.train_and_evaluate(tiny(tfds_dir, total_steps=10), tmp_path / "full")
  assert not (tmp_path / "full").exists() or not os.listdir(tmp_path / "full")


def test_killed_during_the_final_evaluation_the_rerun_runs_it(tfds_dir, tmp_path, capsys,
                                                              monkeypatch):
  real = loop._evaluate  # pylint: disable=protected-access

  def killed_at_the_end(*args, final, **kwargs):
    if final:
      raise KeyboardInterrupt("killed")
    return real(*args, final=final, **kwargs)
  monkeypatch.setattr(loop, "_evaluate", killed_at_the_end)
  with pytest.raises(KeyboardInterrupt):
    loop.train_and_evaluate(tiny(tfds_dir, total_steps=5), tmp_path)
  assert not (tmp_path / "final.json").exists()
  monkeypatch.undo()
  capsys.readouterr()
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=5), tmp_path)
  assert "final evaluation was not recorded: running it now" in capsys.readouterr().out
  final = json.loads((tmp_path / "final.json").read_text())
  assert final["step"] == 5 and "test_accuracy" in final
  assert [m["step"] for m in helpers.read_metrics(tmp_path) if "test_accuracy" in m] == [5]
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=5), tmp_path)
  assert "Nothing to do" in capsys.readouterr().out


def test_skipped_non_finite_steps_are_counted_and_metrics_are_strict_json(tfds_dir, tmp_path,
                                                                          capsys):
  config = tiny(tfds_dir, total_steps=10, log_every=5, skip_nonfinite_steps=True,
                optimizer="sgd", lr=1e38, grad_clip_norm=0.0, warmup_steps=0,
                schedule="constant", weight_decay=0.0)
  loop.train_and_evaluate(config, tmp_path)
  out = capsys.readouterr().out
  assert "non-finite step(s) skipped" in out
  assert "skipped as non-finite: their updates were dropped" in out

  def refuse(constant):
    raise AssertionError(f"{constant} in metrics.jsonl is not JSON")
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line, parse_constant=refuse) for line in f]
  assert sum(r.get("skipped_steps", 0) for r in rows) >= 1
  assert any(r.get("train_loss", 0) is None for r in rows)  # a NaN mean becomes null.


# --- The CLI: one line on each failure path ---------------------------------------------
def _one_error_line(result, code: int, *fragments: str) -> str:
  lines = result.stderr.strip().splitlines()
  assert result.returncode == code and len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith("error: ") and len(lines[0]) < 1500, lines[0]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  return lines[0]


def test_checkpoint_failures_are_one_line_from_the_cli(tfds_dir, tmp_path):
  data = f"--config.data_dir={tfds_dir}"
  workdir = tmp_path / "run"
  first = helpers.run_cli(workdir, data, "--config.total_steps=10")
  assert first.returncode == 0, first.stderr[-3000:]
  # A truncated data file: a warning, the fallback, no traceback from the reader threads.
  for dirpath, _, files in os.walk(workdir / "checkpoints" / "10" / "state" / "d"):
    for name in files:
      os.truncate(os.path.join(dirpath, name), os.path.getsize(os.path.join(dirpath, name)) // 3)
  resumed = helpers.run_cli(workdir, data, "--config.total_steps=12")
  assert resumed.returncode == 0 and resumed.stderr.strip() == "", resumed.stderr[-3000:]
  assert "the checkpoint of step 10 is damaged" in resumed.stdout
  assert "Resumed from step 5" in resumed.stdout
  # A shape change on resume names the parameters that differ.
  changed = helpers.run_cli(workdir, data, "--config.total_steps=20", "--config.model.mlp_dim=48")
  _one_error_line(changed, 2, "does not fit this config's model",
                  "MlpBlock_3/Dense_0/kernel: saved (32, 64), model (32, 48)")
  # A .npz of another architecture: a short line, nothing written.
  other = tmp_path / "other.npz"
  arrays = {"embedding/kernel": np.zeros((16, 16, 3, 768), np.float32),
            "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel":
                np.zeros((768, 3072), np.float32)}
  np.savez(other, **arrays)
  with pytest.raises(UserError, match=r"lacks what its architecture is read from"):
    convert.read(str(other))  # a partial file.
  np.savez(other, cls=np.zeros((1, 1, 768), np.float32), **arrays, **{
      "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel":
          np.zeros((768, 12, 64), np.float32)})
  fresh = tmp_path / "fresh"
  wrong = helpers.run_cli(fresh, data, f"--config.pretrained={other}")
  _one_error_line(wrong, 2, "does not fit the model", "more missing")
  assert not fresh.exists()


def _start(workdir, *overrides):
  return subprocess.Popen(helpers.cli_args(workdir, *overrides), env=helpers.cli_env(1),
                          cwd=helpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _read_until(proc, text: str) -> None:
  for line in proc.stdout:
    if text in line:
      return
  raise AssertionError(f"the run ended before printing {text!r}: {proc.stderr.read()[-2000:]}")


def _signalled(workdir, overrides, wait_for: str, signals) -> tuple[int, str, str]:
  """Starts a run, sends `signals` (50 ms apart) once it printed `wait_for`."""
  proc = _start(workdir, *overrides)
  _read_until(proc, wait_for)
  for i, sig in enumerate(signals):
    time.sleep(0.05 if i else 0)
    proc.send_signal(sig)
  out, err = proc.communicate(timeout=300)
  return proc.returncode, out, err


def test_signals_save_or_stop_with_one_line(tfds_dir, tmp_path):
  run = (f"--config.data_dir={tfds_dir}", "--config.total_steps=100000",
         "--config.checkpoint_every=100000")
  # Ctrl-C saves and exits 0, like SIGTERM.
  code, out, err = _signalled(tmp_path / "int", run, "step 3/", [signal.SIGINT])
  assert code == 0 and err.strip() == "", err[-2000:]
  assert "Stopped by SIGINT (Ctrl-C) at step" in out
  # Twice: at once, one line, exit 130. Ctrl-C every 50 ms until the process ends: two
  # signals sent while it is not scheduled arrive as one (the kernel does not queue them),
  # so a fixed pair can read as a single Ctrl-C on a loaded machine.
  proc = _start(tmp_path / "twice", *run)
  _read_until(proc, "step 3/")
  while proc.poll() is None:
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
  out, err = proc.communicate(timeout=300)
  # 130, or killed by a later Ctrl-C of the loop after the line (a shell shows 130 too).
  assert proc.returncode in (130, -signal.SIGINT), proc.returncode
  assert err.strip().startswith("error: interrupted again"), err
  assert len(err.strip().splitlines()) == 1, err[-2000:]
  # SIGTERM before the first step (while compiling): one line, exit 0, nothing saved.
  code, out, err = _signalled(tmp_path / "compiling", (*run, "--config.model.num_layers=3"),
                              "workdir ", [signal.SIGTERM])
  assert code == 0 and err.strip() == "", err[-2000:]
  assert "Stopped by SIGTERM before the first step" in out


def test_sigkill_leaves_no_input_worker_and_no_shared_memory(digits_folder, tmp_path):
  proc = _start(tmp_path / "run", f"--config.dataset=folder:{digits_folder}",
                "--config.pp_train=resize(8)|value_range(-1, 1)",
                "--config.pp_eval=resize(8)|value_range(-1, 1)", "--config.input_workers=2",
                "--config.total_steps=100000", "--config.checkpoint_every=100000")
  _read_until(proc, "step 3/")
  tree = psutil.Process(proc.pid)
  children = tree.children(recursive=True)
  assert len(children) >= 2  # the input workers (and multiprocessing's resource tracker).
  # The shared-memory segments this run's processes map (other tests may run beside it).
  shared = {m.path for p in [tree, *children] for m in p.memory_maps()
            if m.path.startswith("/dev/shm/")}
  assert shared
  proc.kill()
  proc.communicate()
  deadline = time.time() + 30
  alive = children
  while alive and time.time() < deadline:
    alive = [c for c in alive if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    time.sleep(0.2)
  assert not alive, [(c.pid, c.cmdline()) for c in alive]
  deadline = time.time() + 10
  while any(os.path.exists(p) for p in shared) and time.time() < deadline:
    time.sleep(0.2)
  assert not [p for p in shared if os.path.exists(p)]
