r"""SLURM launcher for multi-node GPU training: writes an sbatch script and submits it.

    python scripts/launch_slurm.py --nodes=4 --gpus_per_node=8 --workdir=/shared/b16_i1k \
        --time=24:00:00 -- --config=configs/pretrain.py:b16,imagenet2012

One process per GPU by default (--per=node for one process per node driving all its
GPUs). jax.distributed reads the coordinator (first node), process count and index from
the SLURM environment (main.py --distributed). SLURM sends SIGTERM two minutes before the
time limit; the trainer saves and exits 0, and --requeue restarts the job, which resumes
from the workdir (it must be on a shared filesystem). --dry-run prints the script and the
sbatch command without submitting.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sbatch_script(args) -> str:
  tasks_per_node = args.gpus_per_node if args.per == "gpu" else 1
  train = ["python", "-m", "vit_jax.main", "--distributed", f"--workdir={args.workdir}",
           *args.train_args]
  # One process per GPU: each task sees only its own GPU.
  pin = ("CUDA_VISIBLE_DEVICES=$SLURM_LOCALID " if args.per == "gpu" else "")
  lines = [
      "#!/bin/bash",
      f"#SBATCH --job-name={args.job_name}",
      f"#SBATCH --nodes={args.nodes}",
      f"#SBATCH --ntasks-per-node={tasks_per_node}",
      f"#SBATCH --gpus-per-node={args.gpus_per_node}",
      f"#SBATCH --cpus-per-task={args.cpus_per_task}",
      f"#SBATCH --time={args.time}",
      f"#SBATCH --output={args.workdir}/slurm-%j.out",
      "#SBATCH --signal=TERM@120",
      "#SBATCH --requeue",
  ]
  if args.partition:
    lines.append(f"#SBATCH --partition={args.partition}")
  lines += [
      "set -euo pipefail",
      f"cd {shlex.quote(REPO)}",
      f"mkdir -p {shlex.quote(args.workdir)}",
      f"srun --kill-on-bad-exit=1 bash -c {shlex.quote(pin + shlex.join(train))}",
  ]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--nodes", type=int, required=True)
  parser.add_argument("--gpus_per_node", type=int, default=8)
  parser.add_argument("--per", choices=["gpu", "node"], default="gpu",
                      help="one process per GPU (default) or per node")
  parser.add_argument("--cpus_per_task", type=int, default=12)
  parser.add_argument("--time", default="24:00:00")
  parser.add_argument("--partition", default=None)
  parser.add_argument("--job_name", default="vit_jax")
  parser.add_argument("--workdir", required=True, help="on a filesystem all nodes share")
  parser.add_argument("--dry-run", action="store_true")
  argv = list(sys.argv[1:] if argv is None else argv)
  # Everything after `--` goes to vit_jax.main unchanged.
  split = argv.index("--") if "--" in argv else len(argv)
  args = parser.parse_args(argv[:split])
  args.train_args = argv[split + 1:]
  script = sbatch_script(args)
  if args.dry_run:
    print(script, end="")
    print("sbatch <the script above>")
    return 0
  with tempfile.NamedTemporaryFile("w", suffix=".sbatch", delete=False) as f:
    f.write(script)
  print(f"sbatch {f.name}")
  return subprocess.run(["sbatch", f.name], check=False).returncode


if __name__ == "__main__":
  sys.exit(main())
