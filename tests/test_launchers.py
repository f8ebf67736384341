"""The launch scripts' --dry-run commands."""
import os
import shlex
import subprocess
import sys

from tests import helpers


def dry_run(script, *args) -> str:
  split = args.index("--") if "--" in args else len(args)
  args = (*args[:split], "--dry-run", *args[split:])
  result = subprocess.run([sys.executable, f"scripts/{script}", *args],
                          cwd=helpers.REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  return result.stdout


def test_tpu_vm_up_creates_or_reuses_then_installs_on_every_worker():
  lines = dry_run("launch_tpu_vm.py", "up", "--name=vit", "--zone=us-central2-b",
                  "--accelerator=v4-32", "--spot").splitlines()
  assert len(lines) == 4
  assert "gcloud compute tpus tpu-vm describe vit --zone=us-central2-b" in lines[0]
  assert ("|| gcloud compute tpus tpu-vm create vit --zone=us-central2-b "
          "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot") in lines[0]
  scp = shlex.split(lines[2])
  assert scp[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "vit"]
  assert "--worker=all" in scp and scp[-1] == "vit:~/vit_jax/"
  assert shlex.split(lines[3])[-1] == "--command=cd ~/vit_jax && pip install -q -e '.[gcs]' 'jax[tpu]'"


def test_tpu_vm_run_same_command_on_all_workers():
  out = dry_run("launch_tpu_vm.py", "run", "--name=vit", "--zone=europe-west4-a",
                "--workdir=gs://bucket/run", "--", "--config=configs/pretrain.py:b16,imagenet2012",
                "--config.batch_size=1024")
  cmd = shlex.split(out.strip())
  assert cmd[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "vit", "--zone=europe-west4-a"]
  assert "--worker=all" in cmd
  assert cmd[-1] == ("--command=set -o pipefail; cd ~/vit_jax && python3 -m vit_jax.main "
                     "--distributed "
                     "--workdir=gs://bucket/run --config=configs/pretrain.py:b16,imagenet2012 "
                     "--config.batch_size=1024 2>&1 | tee ~/vit_jax_train.log")
  stop = shlex.split(dry_run("launch_tpu_vm.py", "stop", "--name=vit", "--zone=z").strip())
  assert stop[-1] == "--command=pkill -TERM -f '[v]it_jax.main' || true"


def test_tpu_vm_run_needs_a_workdir():
  result = subprocess.run([sys.executable, "scripts/launch_tpu_vm.py", "run", "--name=v",
                           "--zone=z", "--dry-run"], cwd=helpers.REPO, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 2 and "run needs --workdir" in result.stderr


def test_tpu_vm_run_refuses_a_local_workdir_on_a_multi_worker_slice():
  def run(accelerator, workdir):
    return subprocess.run([sys.executable, "scripts/launch_tpu_vm.py", "run", "--name=v",
                           "--zone=z", f"--accelerator={accelerator}", f"--workdir={workdir}",
                           "--dry-run", "--", "--config=configs/quickstart.py"],
                          cwd=helpers.REPO, capture_output=True, text=True, timeout=60)
  refused = run("v4-32", "/tmp/run")
  assert refused.returncode == 2 and not refused.stdout
  assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]  # one line.
  assert refused.stderr.startswith("error: --workdir=/tmp/run is a local path, but each of "
                                   "the 4 workers of a v4-32 has its own disk")
  assert "gs://BUCKET/run" in refused.stderr
  assert run("v4-8", "/tmp/run").returncode == 0          # one worker: its disk will do.
  assert run("v5litepod-16", "gs://b/run").returncode == 0


def test_slurm_script_one_process_per_gpu():
  out = dry_run("launch_slurm.py", "--nodes=4", "--gpus_per_node=8", "--workdir=/shared/run",
                "--time=02:00:00", "--", "--config=configs/finetune.py:b16,cifar10")
  assert "#SBATCH --nodes=4" in out and "#SBATCH --ntasks-per-node=8" in out
  assert "#SBATCH --gpus-per-node=8" in out and "#SBATCH --signal=TERM@120" in out
  assert "#SBATCH --requeue" in out and "#SBATCH --time=02:00:00" in out
  srun = [line for line in out.splitlines() if line.startswith("srun")][0]
  inner = shlex.split(srun)[-1]
  assert inner == ("CUDA_VISIBLE_DEVICES=$SLURM_LOCALID python -m vit_jax.main --distributed "
                   "--workdir=/shared/run --config=configs/finetune.py:b16,cifar10")
  per_node = dry_run("launch_slurm.py", "--nodes=2", "--per=node", "--workdir=/w")
  assert "#SBATCH --ntasks-per-node=1" in per_node and "CUDA_VISIBLE_DEVICES" not in per_node


def test_stop_pattern_spares_its_own_shell_and_run_keeps_the_exit_status():
  """`pkill -f PATTERN` run through a shell must not match that very shell (whose command
  line contains the pattern); a failing training command piped through tee must fail."""
  import re
  import subprocess
  import time
  stop = shlex.split(dry_run("launch_tpu_vm.py", "stop", "--name=vit", "--zone=z").strip())
  pattern = shlex.split(stop[-1].removeprefix("--command="))[3]
  assert re.search(pattern, "python3 -m vit_jax.main --distributed --workdir=gs://b/r")
  assert not re.search(pattern, stop[-1])  # the remote shell's own command line.
  # The same trick, live, on a name no other test process has.
  name = f"vit_jax_stop_test_{os.getpid()}"
  target = subprocess.Popen(["bash", "-c", f"exec -a {name} sleep 30"])
  try:
    time.sleep(0.5)  # let bash exec the renamed process.
    shell = subprocess.run(["sh", "-c", f"pkill -TERM -f '[v]{name[1:]}' || true"],
                           capture_output=True, text=True, timeout=30)
    assert shell.returncode == 0 and target.wait(timeout=10) == -15
  finally:
    target.kill()
  piped = subprocess.run(["bash", "-c", "set -o pipefail; false 2>&1 | tee /dev/null"])
  assert piped.returncode == 1
