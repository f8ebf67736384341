"""Running the real CLI in subprocesses (other device counts, kills, preemption)."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "tests", "tiny_config.py")


def cli_env(devices: int = 1) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env["PYTHONUNBUFFERED"] = "1"
  return env  # os.environ carries the gs:// settings of the `gcs` fixture, when in use.


def cli_args(workdir, *overrides, config=TINY_CONFIG) -> list[str]:
  return [sys.executable, "-m", "vit_jax.main", f"--config={config}", f"--workdir={workdir}",
          *overrides]


def run_cli(workdir, *overrides, devices=1, timeout=300, config=TINY_CONFIG):
  return subprocess.run(cli_args(workdir, *overrides, config=config), env=cli_env(devices),
                        cwd=REPO, capture_output=True, text=True, timeout=timeout)


def read_metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def losses(workdir) -> dict[int, float]:
  return {m["step"]: m["train_loss"] for m in read_metrics(workdir) if "train_loss" in m}


def run_subprocess(args, *, devices=1, timeout=300):
  return subprocess.run([sys.executable, *args], env=cli_env(devices), cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def run_cli_timed(workdir, *overrides, config=TINY_CONFIG, timeout=600):
  """run_cli, also measuring `exit_pause`: seconds from the last output line to exit."""
  import threading
  import time
  import types
  proc = subprocess.Popen(cli_args(workdir, *overrides, config=config), env=cli_env(1),
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  stderr = []
  reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)
  reader.start()
  lines, last = [], time.time()
  for line in proc.stdout:
    lines.append(line)
    last = time.time()
  proc.wait(timeout=timeout)
  exited = time.time()
  reader.join()
  return types.SimpleNamespace(returncode=proc.returncode, stdout="".join(lines),
                               stderr="".join(stderr), exit_pause=exited - last)
