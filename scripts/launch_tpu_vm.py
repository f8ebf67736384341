r"""Cloud TPU VM / pod-slice launcher: the same command on every worker.

    # Create (or reuse) a v4-32 slice, copy this checkout to every worker and install it:
    python scripts/launch_tpu_vm.py up --name=vit --zone=us-central2-b --accelerator=v4-32
    # Train: the same command starts on all workers; their logs stream here (Ctrl-C stops
    # streaming, not the run, with --detach).
    python scripts/launch_tpu_vm.py run --name=vit --zone=us-central2-b \
        --workdir=gs://my-bucket/b16_i1k -- --config=configs/pretrain.py:b16,imagenet2012
    python scripts/launch_tpu_vm.py logs --name=vit --zone=us-central2-b
    python scripts/launch_tpu_vm.py stop --name=vit --zone=us-central2-b   # or `delete`

Every subcommand takes --dry-run: print the exact commands instead of running them.
The workdir must be shared by all workers (a gs:// bucket): orbax writes each worker's
shards there and a restarted slice resumes from it. jax.distributed finds the other
workers through the TPU metadata (main.py --distributed).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = "~/vit_jax"
LOG = "~/vit_jax_train.log"


def _tpu(args, verb: str, *extra: str) -> list[str]:
  cmd = ["gcloud", "compute", "tpus", "tpu-vm", verb, args.name, f"--zone={args.zone}"]
  if args.project:
    cmd.append(f"--project={args.project}")
  return cmd + list(extra)


def _ssh(args, command: str) -> list[str]:
  return _tpu(args, "ssh", "--worker=all", f"--command={command}")


def commands(args) -> list[list[str]]:
  if args.action == "up":
    create = _tpu(args, "create", f"--accelerator-type={args.accelerator}",
                  f"--version={args.version}") + (["--spot"] if args.spot else [])
    # Reuse the VM when it exists: `describe` fails fast when it does not.
    exists = " ".join(map(shlex.quote, _tpu(args, "describe")))
    return [["bash", "-c", f"{exists} >/dev/null 2>&1 || {shlex.join(create)}"],
            _ssh(args, f"mkdir -p {REMOTE_DIR}"),
            _tpu(args, "scp", "--worker=all", "--recurse",
                 *[os.path.join(REPO, p) for p in ("setup.py", "README.md", "vit_jax",
                                                   "configs")],
                 f"{args.name}:{REMOTE_DIR}/"),
            _ssh(args, f"cd {REMOTE_DIR} && pip install -q -e '.[gcs]' 'jax[tpu]'")]
  if args.action == "run":
    train = (f"cd {REMOTE_DIR} && python3 -m vit_jax.main --distributed "
             f"--workdir={shlex.quote(args.workdir)} "
             + " ".join(shlex.quote(a) for a in args.train_args))
    if args.detach:
      return [_ssh(args, f"nohup sh -c {shlex.quote(train)} > {LOG} 2>&1 &")]
    # pipefail: the exit status is training's, not tee's.
    return [_ssh(args, f"set -o pipefail; {train} 2>&1 | tee {LOG}")]
  if args.action == "logs":
    return [_ssh(args, f"tail -n 100 -f {LOG}")]
  if args.action == "stop":
    # SIGTERM: save and exit. '[v]' keeps the pattern from matching this shell's own
    # command line (which contains the pattern itself).
    return [_ssh(args, "pkill -TERM -f '[v]it_jax.main' || true")]
  if args.action == "delete":
    return [_tpu(args, "delete", "--quiet")]
  raise ValueError(args.action)


def hosts_of(accelerator: str) -> int:
  """Workers (hosts) of a Cloud TPU accelerator type: v2/v3/v4/v5p-N count TensorCores
  (8 per host), v5litepod/v6e-N count chips (up to 8 on one host, else 4 per host)."""
  kind, _, size = accelerator.rpartition("-")
  count = int(size) if size.isdigit() else 8
  if kind.startswith(("v5litepod", "v5e", "v6e")):
    return 1 if count <= 8 else count // 4
  return max(count // 8, 1)


def check_workdir(args) -> str | None:
  """Why a workdir cannot serve the slice (None: it can)."""
  if args.workdir.startswith("gs://") or hosts_of(args.accelerator) == 1:
    return None
  return (f"--workdir={args.workdir} is a local path, but each of the "
          f"{hosts_of(args.accelerator)} workers of a {args.accelerator} has its own disk: "
          f"each would write its own fragment of every checkpoint, and a restarted slice "
          f"would find nothing to resume. Use a bucket all workers share, e.g. "
          f"--workdir=gs://BUCKET/run.")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("action", choices=["up", "run", "logs", "stop", "delete"])
  parser.add_argument("--name", required=True, help="TPU VM name")
  parser.add_argument("--zone", required=True)
  parser.add_argument("--project", default=None)
  parser.add_argument("--accelerator", default="v4-8", help="e.g. v4-32, v5p-64, v5litepod-16 "
                      "(`run`: decides whether a local --workdir can serve every worker)")
  parser.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU VM software image")
  parser.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")
  parser.add_argument("--workdir", default=None, help="shared workdir, e.g. gs://bucket/run")
  parser.add_argument("--detach", action="store_true", help="run in the background")
  parser.add_argument("--dry-run", action="store_true", help="print the commands only")
  argv = list(sys.argv[1:] if argv is None else argv)
  # Everything after `--` goes to vit_jax.main unchanged.
  split = argv.index("--") if "--" in argv else len(argv)
  args = parser.parse_args(argv[:split])
  args.train_args = argv[split + 1:]
  if args.action == "run" and not args.workdir:
    parser.error("run needs --workdir (shared by all workers, e.g. gs://bucket/run)")
  if args.action == "run" and check_workdir(args):
    print(f"error: {check_workdir(args)}", file=sys.stderr)
    return 2
  for cmd in commands(args):
    print(shlex.join(cmd), flush=True)
    if not args.dry_run:
      subprocess.run(cmd, check=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
