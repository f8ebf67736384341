"""Multi-host on one machine: 2 processes x 4 CPU devices (jax.distributed over loopback)
against 1 process x 8 devices, and failing fast when a peer is missing or dies."""
import contextlib
import json
import os
import signal
import socket
import subprocess
import time

import jax
import numpy as np
import pytest

from tests import helpers
from tests.test_train import tiny
from vit_jax.convert import run_format
from vit_jax.trainer import loop


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_process(workdir, index, port, log_dir, *overrides, num_processes=2,
                  timeouts=("--initialization_timeout=60", "--heartbeat_timeout=10"),
                  cwd=helpers.REPO):
  log = open(os.path.join(log_dir, f"process_{index}.log"), "w")
  args = helpers.cli_args(workdir, *overrides, f"--coordinator_address=127.0.0.1:{port}",
                          f"--num_processes={num_processes}", f"--process_id={index}",
                          "--num_cpu_devices=4", *timeouts)
  return subprocess.Popen(args, env=helpers.cli_env(4), cwd=cwd, stdout=log,
                          stderr=subprocess.STDOUT), log


def read(path) -> str:
  with open(path) as f:
    return f.read()


@contextlib.contextmanager
def two_processes(workdir, log_dir, *overrides, **kwargs):
  """Both processes of a run on a fresh port; killed (if still running) and logs closed
  at the end."""
  port = free_port()
  procs = [start_process(workdir, i, port, log_dir, *overrides, **kwargs) for i in range(2)]
  try:
    yield [p for p, _ in procs]
  finally:
    for p, log in procs:
      p.kill()
      log.close()


def wait_for_step(procs, log_dir, step: int, limit: float = 240) -> None:
  deadline = time.time() + limit
  while f"step {step}/" not in read(log_dir / "process_0.log"):
    assert time.time() < deadline and procs[0].poll() is None, "training never started"
    time.sleep(0.5)


def _run_two(workdir, log_dir, overrides, *, cwd=helpers.REPO, until_step=None):
  """Both processes of a run to the end (or, with `until_step`, both killed with -9 as
  soon as that step's checkpoint is complete); returns their logs."""
  port = free_port()
  procs = [start_process(workdir, i, port, log_dir, *overrides, cwd=cwd) for i in range(2)]
  try:
    if until_step is None:
      codes = [p.wait(timeout=300) for p, _ in procs]
    else:
      deadline = time.time() + 300
      while until_step not in run_format.complete_steps(f"{workdir}/checkpoints"):
        assert time.time() < deadline and procs[0][0].poll() is None, read(log_dir / "process_0.log")
        time.sleep(0.2)
      codes = [0, 0]
  finally:
    for p, log in procs:
      p.kill()
      p.wait()
      log.close()
  logs = [read(log_dir / f"process_{i}.log") for i in range(2)]
  assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  return logs


def test_two_processes_equal_one_process_with_eight_devices(tfds_dir, gcs, tmp_path):
  """A 2-process run with its workdir in a bucket, both processes killed after the first
  checkpoint and restarted from another directory (a new slice): it resumes from the
  bucket and ends where 1 process x 8 devices ends on the same global batches."""
  # SGD: its update is linear in the gradient, so the different summation order across
  # processes stays at rounding level. (Adam turns the rounding noise of exactly-zero
  # gradients, e.g. of the attention key bias, into lr-sized steps.)
  overrides = (f"--config.data_dir={tfds_dir}", "--config.data_shards=2",
               "--config.total_steps=6", "--config.optimizer=sgd", "--config.lr=0.1",
               "--config.weight_decay=0.0", "--config.checkpoint_every=2")
  bucket_run = f"gs://{gcs.new()}/two"
  logs = _run_two(bucket_run, tmp_path, overrides, until_step=2)
  # Each process reads only its own shard of the data.
  assert "process 0 reads data shard(s) [0] of 2" in logs[0]
  assert "process 1 reads data shard(s) [1] of 2" in logs[1]
  elsewhere = tmp_path / "new_slice"
  elsewhere.mkdir()
  logs = _run_two(bucket_run, tmp_path, overrides, cwd=elsewhere)
  assert "Resumed from step" in logs[0], logs[0][-3000:]
  # gloo's "[Gloo] Rank N is connected to 1 peer ranks" is not shown; the rest all is.
  assert not any("[Gloo]" in log for log in logs), logs[0][-3000:]
  assert "Done: " in logs[0] and "process 1 reads data shard(s)" in logs[1]
  # The checkpoint both processes wrote restores in this single process.
  two_params, step = run_format.restore_as_numpy(bucket_run)
  assert step == 6, logs[0][-4000:]
  state = loop.train_and_evaluate(
      tiny(tfds_dir, data_shards=2, total_steps=6, optimizer="sgd", lr=0.1, weight_decay=0.0),
      tmp_path / "one")
  one_params = jax.device_get(state.params)
  for a, b in zip(jax.tree.leaves(two_params), jax.tree.leaves(one_params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Every step recorded once across the restart, each loss as on one process (a resume
  # that fed other batches would differ from step 3 on).
  two_losses = {m["step"]: m["train_loss"] for m in _bucket_metrics(bucket_run)
                if "train_loss" in m}
  one_losses = helpers.losses(tmp_path / "one")
  assert sorted(two_losses) == sorted(one_losses) == list(range(1, 7))
  np.testing.assert_allclose([two_losses[k] for k in range(1, 7)],
                             [one_losses[k] for k in range(1, 7)], rtol=1e-5)


def _bucket_metrics(workdir: str) -> list[dict]:
  from etils import epath  # pylint: disable=import-outside-toplevel
  return [json.loads(line) for line in
          epath.Path(workdir, "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_missing_peer_fails_fast_with_a_clear_error(tfds_dir, tmp_path):
  start = time.time()
  proc, log = start_process(tmp_path / "run", 0, free_port(), tmp_path,
                            f"--config.data_dir={tfds_dir}",
                            timeouts=("--initialization_timeout=5", "--heartbeat_timeout=5"))
  try:
    code = proc.wait(timeout=120)
  finally:
    proc.kill()
    log.close()
  output = read(tmp_path / "process_0.log")
  assert code == 2, output[-3000:]
  assert "error: Could not start 2 processes with 127.0.0.1:" in output
  assert time.time() - start < 90


def test_hung_peer_stops_the_others_with_one_line_in_bounded_time(tfds_dir, tmp_path):
  """A peer that hangs (SIGSTOP: its connections stay open, so neither the collectives nor
  JAX's heartbeat notice soon) is found by the peer watch."""
  overrides = (f"--config.data_dir={tfds_dir}", "--config.data_shards=2",
               "--config.total_steps=100000", "--config.checkpoint_every=100000")
  with two_processes(tmp_path / "run", tmp_path, *overrides,
                     timeouts=("--initialization_timeout=60", "--heartbeat_timeout=5")) as procs:
    wait_for_step(procs, tmp_path, 3)
    procs[1].send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    code = procs[0].wait(timeout=120)
    waited = time.time() - stopped_at
  output = read(tmp_path / "process_0.log")
  assert code == 1, output[-3000:]
  assert waited < 60, waited  # --heartbeat_timeout=5; measured ~6 s.
  assert "error: process 1 stopped responding for 5s" in output, output[-3000:]
  assert "Fatal Python error" not in output and "Thread 0x" not in output  # no abort dump.


@pytest.mark.parametrize("killed", [1, 0])  # a worker; the coordinator itself.
def test_killed_peer_stops_the_survivor_with_one_line_naming_it(tfds_dir, tmp_path, killed):
  """kill -9 of one process. The survivor may notice through the collectives (gloo throws
  in C++), through JAX's runtime client (the coordinator's service is gone: a fatal log
  by default) or through the peer watch; each way it names the dead process in one line
  and exits 1, within the heartbeat timeout."""
  overrides = (f"--config.data_dir={tfds_dir}", "--config.data_shards=2",
               "--config.total_steps=100000", "--config.checkpoint_every=100000")
  with two_processes(tmp_path / "run", tmp_path, *overrides,
                     timeouts=("--initialization_timeout=60", "--heartbeat_timeout=10")) as procs:
    wait_for_step(procs, tmp_path, 3)
    procs[killed].kill()
    killed_at = time.time()
    code = procs[1 - killed].wait(timeout=120)
    waited = time.time() - killed_at
  output = read(tmp_path / f"process_{1 - killed}.log")
  assert code == 1, output[-3000:]
  assert waited < 30, waited  # --heartbeat_timeout=10.
  errors = [line for line in output.splitlines() if "error" in line.lower()]
  assert len(errors) == 1 and errors[0].startswith(f"error: process {killed} "), errors
  for noise in ("terminate called", "Fatal Python error", "Thread 0x", "Check failure"):
    assert noise not in output, output[-3000:]


def test_sigterm_to_one_process_stops_every_process_at_one_step_then_resumes(tfds_dir,
                                                                             tmp_path):
  """A maintenance event reaches one host: all processes agree on the step, save it and
  exit 0; the same command resumes from it."""
  overrides = (f"--config.data_dir={tfds_dir}", "--config.data_shards=2",
               "--config.checkpoint_every=100000", "--config.schedule=constant")
  with two_processes(tmp_path / "run", tmp_path, *overrides,
                     "--config.total_steps=100000") as procs:
    wait_for_step(procs, tmp_path, 3)
    procs[1].send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=120) for p in procs]
  output = read(tmp_path / "process_0.log")
  assert codes == [0, 0], output[-3000:]
  stopped = int(output.split("Stopped by SIGTERM at step ")[1].split()[0])
  saved = sorted(int(n) for n in os.listdir(tmp_path / "run" / "checkpoints") if n.isdigit())
  assert saved == [stopped]
  with two_processes(tmp_path / "run", tmp_path, *overrides,
                     f"--config.total_steps={stopped + 2}") as procs:
    codes = [p.wait(timeout=300) for p in procs]
  output = read(tmp_path / "process_0.log")
  assert codes == [0, 0], output[-3000:]
  assert f"Resumed from step {stopped}" in output and "Done: 2 steps" in output
