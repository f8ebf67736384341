"""Runs whose workdir, data and checkpoints live in a bucket (gs://), against a real GCS
protocol server on loopback: the quickstart killed and resumed from another directory,
image folders in a bucket, the workdir lock as an object, every storage error one line,
and no local file API on a user's path anywhere in the package."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import helpers
from tests.test_train import tiny
from vit_jax.trainer import loop

QUICKSTART = os.path.join(helpers.REPO, "configs", "quickstart.py")


def _objects(url: str) -> list[str]:
  import fsspec  # pylint: disable=import-outside-toplevel
  return [f"gs://{name}" for name in fsspec.filesystem("gs").find(url)]


def test_quickstart_in_a_bucket_is_killed_then_resumes_from_another_directory(gcs, tmp_path):
  """The README's quickstart with --workdir=gs://BUCKET/run: SIGKILL after its first
  checkpoint, then the same command from another directory resumes from the bucket
  (taking over the dead run's lock) and finishes; everything is an object in the bucket,
  nothing is written under a local 'gs:' path, and load_pretrained reads the run."""
  import vit_jax  # pylint: disable=import-outside-toplevel
  workdir = f"gs://{gcs.new()}/run"
  args = [sys.executable, "-m", "vit_jax.main", f"--config={QUICKSTART}", f"--workdir={workdir}",
          "--config.total_steps=30", "--config.warmup_steps=3", "--config.checkpoint_every=10",
          "--config.log_every=5", "--config.evals.figures.every=-1"]
  first_dir, second_dir = tmp_path / "first", tmp_path / "second"
  first_dir.mkdir()
  second_dir.mkdir()
  proc = subprocess.Popen(args, cwd=first_dir, env=helpers.cli_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  from vit_jax.convert import run_format  # pylint: disable=import-outside-toplevel
  deadline = time.time() + 400
  try:  # killed as soon as the first checkpoint is complete in the bucket.
    while not run_format.complete_steps(f"{workdir}/checkpoints"):
      assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
      time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  killed_at = run_format.complete_steps(f"{workdir}/checkpoints")[-1]
  assert killed_at < 30
  resumed = subprocess.run(args, cwd=second_dir, env=helpers.cli_env(), capture_output=True,
                           text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
  out = resumed.stdout
  assert "warning: took over the workdir lock" in out and "no longer exists" in out, out
  assert f"Resumed from step {killed_at} in {workdir}/checkpoints" in out, out
  assert f"Done: {30 - killed_at} steps" in out and "test_accuracy" in out
  objects = _objects(workdir)
  assert f"{workdir}/config.json" in objects and f"{workdir}/metrics.jsonl" in objects
  assert any("/events.out.tfevents." in name for name in objects)
  assert any(name.startswith(f"{workdir}/checkpoints/30/") for name in objects)
  assert not any(name.endswith("/.lock") for name in objects)  # released at the end.
  for cwd in (first_dir, second_dir, helpers.REPO):
    assert not os.path.exists(os.path.join(cwd, "gs:"))
  rows = [json.loads(line) for line in _read_text(f"{workdir}/metrics.jsonl").splitlines()]
  steps = [r["step"] for r in rows if "train_loss" in r]
  assert steps == sorted(set(steps)) and steps[-1] == 30  # each step once after the resume.
  model, params = vit_jax.load_pretrained(workdir)
  images = vit_jax.preprocessing_of(workdir)(np.zeros((2, 8, 8, 3), np.uint8))
  assert model.apply({"params": params}, images).shape == (2, 10)


def _read_text(url: str) -> str:
  from etils import epath  # pylint: disable=import-outside-toplevel
  return epath.Path(url).read_text()


def test_an_image_folder_in_a_bucket_trains_and_a_bucket_is_one_lock(gcs, digits_folder,
                                                                      tmp_path, capsys):
  """folder:gs://BUCKET/images trains through Grain's workers; while the run holds the
  workdir's lock object, a second run there is one line; a stale lock is taken over."""
  from vit_jax import storage  # pylint: disable=import-outside-toplevel
  from vit_jax.runtime import workdir_lock  # pylint: disable=import-outside-toplevel
  bucket = gcs.new()
  storage.copy_tree(digits_folder, f"gs://{bucket}/images")
  workdir = f"gs://{bucket}/run"
  config = tiny(None, dataset=f"folder:gs://{bucket}/images", pp_train="resize(8)|value_range(-1, 1)",
                pp_eval="resize(8)|value_range(-1, 1)", input_workers=1, total_steps=6,
                checkpoint_every=3)
  with workdir_lock.held(workdir, is_first_process=True):
    second = helpers.run_cli(workdir, f"--config.dataset=folder:gs://{bucket}/images",
                             "--config.pp_train=resize(8)|value_range(-1, 1)",
                             "--config.pp_eval=resize(8)|value_range(-1, 1)")
  assert second.returncode == 2, second.stderr[-2000:]
  assert second.stderr.strip().splitlines() == [
      line for line in second.stderr.strip().splitlines() if line.startswith("error: ")]
  assert "error: Another run is training in gs://" in second.stderr
  state = loop.train_and_evaluate(config, workdir)
  assert int(state.step) == 6
  # A lock left by a process on another host that stopped refreshing it: taken over.
  lock = f"gs://{bucket}/other/.lock"
  storage.write_text(lock, '{"pid": 1, "host": "elsewhere", "time": 0}')
  capsys.readouterr()
  with workdir_lock.held(f"gs://{bucket}/other", is_first_process=True) as held:
    held.check()
  assert "warning: took over the workdir lock of gs://" in capsys.readouterr().out
  assert not storage.path(lock).exists()


READ_ONLY_SERVER = '''
import http.server, json, sys
class Handler(http.server.BaseHTTPRequestHandler):
  def _deny(self):
    body = json.dumps({"error": {"code": 403, "message": "caller does not have "
                       "storage.objects.create access"}}).encode()
    self.send_response(403)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)
  do_GET = do_POST = do_PUT = do_DELETE = _deny
  def log_message(self, *args):
    pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
'''

NO_GCSFS = "import tests.no_tensorflow as hide; hide.HIDDEN.append('gcsfs')\n"


def test_storage_mistakes_are_one_line_before_any_work(gcs, tmp_path):
  """A missing bucket, a bucket without write permission, unreachable storage and a
  gs:// path without the client library: each one `error:` line naming the path and the
  fix, exit 2, within seconds."""
  def train(workdir, env_update=None, prelude=""):
    env = helpers.cli_env()
    env.update(env_update or {})
    code = (prelude + "import runpy, sys; sys.argv[0] = 'vit_jax.main'; "
            "runpy.run_module('vit_jax.cli.train', run_name='__main__')")
    start = time.time()
    result = subprocess.run([sys.executable, "-c", code, f"--config={helpers.TINY_CONFIG}",
                             f"--workdir={workdir}"], env=env, cwd=helpers.REPO,
                            capture_output=True, text=True, timeout=300)
    return result, time.time() - start

  def assert_one_line(result, *fragments):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and all(f in lines[0] for f in fragments), lines[0]

  missing, _ = train("gs://no-such-bucket-here/run")
  assert_one_line(missing, "gs://no-such-bucket-here/run", "does not exist", "buckets create")
  server = subprocess.Popen([sys.executable, "-c", READ_ONLY_SERVER], stdout=subprocess.PIPE,
                            text=True)
  try:
    port = server.stdout.readline().strip()
    url = f"http://127.0.0.1:{port}"
    denied, _ = train("gs://locked-bucket/run", {"STORAGE_EMULATOR_HOST": url,
                                                 "TENSORSTORE_GCS_HTTP_URL": url})
  finally:
    server.kill()
  assert_one_line(denied, "gs://locked-bucket/run", "no permission", "Storage Object Admin")
  unreachable, seconds = train("gs://some-bucket/run", {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"})
  assert_one_line(unreachable, "gs://some-bucket/run", "cannot reach the storage service")
  assert seconds < 120
  no_client, _ = train(f"gs://{gcs.new()}/run", prelude=NO_GCSFS)
  assert_one_line(no_client, "gs://", "gcsfs", "pip install 'vit_jax[gcs]'")


ALLOWED_LOCAL_IO = {
    "vit_jax/storage.py": "the I/O layer itself",
    "vit_jax/runtime/workdir_lock.py": "flock works on local files only (bucket locks are objects)",
    "vit_jax/runtime/processes.py": "/proc, this host's process table",
    "vit_jax/data/pipeline.py": "/dev/shm, the workers' shared memory, is local by nature",
    "vit_jax/bench/profile_summary.py": "the JAX profiler writes its trace to a local folder",
    "vit_jax/cli/common.py": "stderr redirection around TensorFlow's import",
    "vit_jax/config.py": "config files are Python modules, loaded from the local disk",
    "vit_jax/runtime/accelerators.py": "/dev, this host's device files",
    "vit_jax/configs/pretrain_large.py": "a sibling config file of the package",
    "vit_jax/trainer/wandb_writer.py": "W&B writes its run files on the local disk",
    "vit_jax/serving/onnx_export.py": "torch reads the weights from a local temporary file",
}


def test_no_local_file_api_on_a_users_path():
  """Every user path goes through vit_jax.storage (epath): `open(`, `os.path.`,
  `os.makedirs`, `os.listdir`, `glob` and `shutil` appear only where a local file is the
  point (listed with the reason)."""
  pattern = re.compile(r"(?<![\w.])open\(|\bos\.path\.|\bos\.(makedirs|listdir|walk|remove|"
                       r"rename|replace)\(|\bglob\.|\bshutil\.")
  found = []
  for directory, _, files in os.walk(os.path.join(helpers.REPO, "vit_jax")):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.relpath(os.path.join(directory, name), helpers.REPO)
      with open(os.path.join(directory, name)) as f:
        for number, line in enumerate(f, 1):
          code = line.split("#")[0]
          if pattern.search(code) and path not in ALLOWED_LOCAL_IO:
            found.append(f"{path}:{number}: {line.strip()}")
  assert not found, "\n".join(found)
