"""The first hour: --help shows the command's flags and an example, every config field is
listed with its meaning, configs ship inside the package (a `pip install .` trains the
quickstart by name from anywhere), the README names only fields that exist, an unused
accelerator is one warning with the install line, and an offline W&B run records what
metrics.jsonl records."""
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from tests import helpers
from tests.test_train import tiny
from vit_jax import config as config_lib
from vit_jax.errors import UserError
from vit_jax.runtime import accelerators
from vit_jax.trainer import loop


def test_help_and_the_config_fields_command():
  result = helpers.run_subprocess(["-m", "vit_jax.main", "--help"])
  assert result.returncode in (0, 1)  # absl's --help exits 1.
  assert "--workdir" in result.stdout and "--config" in result.stdout
  assert "python -m vit_jax.main --config=configs/quickstart.py" in result.stdout
  fields = helpers.run_subprocess(["-m", "vit_jax.cli.config", "--config=quickstart",
                                   "--config.lr=0.01"])
  assert fields.returncode == 0, fields.stderr
  lines = {line.split(" = ")[0].strip(): line for line in fields.stdout.splitlines()}
  assert "side of the square patches, in pixels" in lines["model.patch_size"]
  assert lines["lr"].startswith("lr") and "= 0.01  # peak learning rate." in lines["lr"]
  assert "moving average" in lines["ema_decay"] and len(lines) > 100
  # Each field its own meaning (data, not comments parsed from source), the model's
  # fields the preset's values (ViT-digits: width 64, 2-pixel patches).
  assert "Adam's second-moment decay" in lines["b2"]
  assert lines["test_split"].split("#")[1] != lines["val_split"].split("#")[1]
  assert "tensor parallelism" in lines["mesh.model"]
  assert "= 64  # token width." in lines["model.hidden_size"]
  assert "= 2  # side of the square patches" in lines["model.patch_size"]


def test_every_config_field_has_a_meaning():
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  from vit_jax.config_fields import MEANINGS  # pylint: disable=import-outside-toplevel
  fields = {key for key in traverse_util.flatten_dict(config_lib.base_config().to_dict(),
                                                      sep=".") if not key.startswith("evals.")}
  assert not fields - set(MEANINGS), sorted(fields - set(MEANINGS))
  assert not set(MEANINGS) - fields, sorted(set(MEANINGS) - fields)  # none left behind.


def test_configs_ship_with_the_package_and_train_by_name(tfds_dir, tmp_path):
  site = tmp_path / "site"
  install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                            "--quiet", f"--target={site}", helpers.REPO], capture_output=True,
                           text=True, timeout=600)
  assert install.returncode == 0, install.stderr[-2000:]
  assert (site / "vit_jax" / "configs" / "quickstart.py").exists()
  env = dict(helpers.cli_env(), PYTHONPATH=str(site))
  result = subprocess.run([sys.executable, "-m", "vit_jax.main", "--config=quickstart",
                           f"--workdir={tmp_path / 'run'}", f"--config.data_dir={tfds_dir}",
                           "--config.total_steps=2", "--config.warmup_steps=1",
                           "--config.evals.fewshot.every=-1",
                           "--config.evals.figures.every=-1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "Done: 2 steps" in result.stdout


def test_every_config_field_the_readme_names_exists():
  with open(os.path.join(helpers.REPO, "README.md")) as f:
    readme = f.read()
  known = set()
  for path in glob.glob(os.path.join(helpers.REPO, "vit_jax", "configs", "*.py")):
    name = os.path.basename(path)[:-3]
    if name not in ("__init__", "run"):
      from flax import traverse_util
      known |= set(traverse_util.flatten_dict(
          config_lib.base_config().to_dict(), sep=".")) | {"evals"}
  named = set(re.findall(r"--config\.([A-Za-z_][\w.]*[\w])", readme))
  named.discard("batchsize")  # the README's example of a misspelt field.
  missing = sorted(n for n in named if n not in known and not n.startswith("evals.")
                   and n.split(".")[0] not in ("model", "lora", "mesh"))
  assert not missing, missing
  modules = set(re.findall(r"python -m (vit_jax[\w.]*)", readme))
  import importlib.util
  assert all(importlib.util.find_spec(m) is not None for m in modules), modules


def test_an_accelerator_jax_does_not_see_is_one_warning_with_the_install_line():
  gpu = lambda pattern: pattern.startswith("/dev/nvidia")  # noqa: E731
  warning = accelerators.unused_accelerator_warning("cpu", exists=gpu)
  assert "NVIDIA GPU but JAX sees only the CPU" in warning and "jax[cuda12]" in warning
  tpu = lambda pattern: pattern.startswith("/dev/accel")  # noqa: E731
  assert "jax[tpu]" in accelerators.unused_accelerator_warning("cpu", exists=tpu)
  assert accelerators.unused_accelerator_warning("gpu", exists=gpu) is None
  assert accelerators.unused_accelerator_warning("cpu", exists=lambda p: False) is None


def _wandb_history(run_file) -> list[dict]:
  """The logged rows of an offline W&B run file (W&B's record log: a 7-byte file header,
  then records in 32 KiB blocks, each piece behind a 7-byte header: crc, length, kind)."""
  from wandb.proto import wandb_internal_pb2
  with open(run_file, "rb") as f:
    data = f.read()
  rows, position, pending, block = [], 7, b"", 32768
  while position + 7 <= len(data):
    if block - position % block < 7:
      position += block - position % block
      continue
    length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
    pending += data[position + 7:position + 7 + length]
    position += 7 + length
    if kind in (1, 4):  # a whole record, or the last piece of one.
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pending)
      pending = b""
      if record.WhichOneof("record_type") == "history":
        rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item})
  return rows


def test_offline_wandb_run_records_what_metrics_jsonl_records(tfds_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  config = tiny(tfds_dir, total_steps=4, trackers=("tensorboard", "wandb"))
  loop.train_and_evaluate(config, tmp_path)
  final = [m for m in helpers.read_metrics(tmp_path) if "test_accuracy" in m][-1]
  runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
  assert len(runs) == 1, os.listdir(tmp_path)
  history = _wandb_history(runs[0])
  logged = [row for row in history if "test_accuracy" in row][-1]
  assert logged["test_accuracy"] == pytest.approx(final["test_accuracy"])
  assert logged["_step"] == final["step"] == 4
  assert [r["_step"] for r in history if "train_loss" in r] == [
      m["step"] for m in helpers.read_metrics(tmp_path) if "train_loss" in m]
  with pytest.raises(UserError, match=r"trackers=.*unknown \['mlflow'\]"):
    loop.train_and_evaluate(tiny(tfds_dir, trackers=("mlflow",)), tmp_path / "other")


@pytest.mark.parametrize("module,config,reason", [
    ("vit_jax.main", "configs/finetune.py:ViT-digits,folder:/tmp,probee",
     "fine-tuning variant 'probee' is not one of"),
    ("vit_jax.cli.config", "configs/finetune.py:ViT-digits,folder:/tmp,probee",
     "fine-tuning variant 'probee' is not one of"),
    ("vit_jax.main", "configs/finetune.py:ViT-digit,cifar10",
     "Unknown model name 'ViT-digit'. Did you mean 'ViT-digits'?"),
])
def test_a_typo_in_a_config_argument_keeps_its_reason(tmp_path, module, config, reason):
  """get_config's own message, not ml_collections' bare 'Error whilst parsing config
  file:' (its traceback is in the exception, of which the console shows one line)."""
  result = helpers.run_subprocess(["-m", module, f"--config={config}",
                                   *([f"--workdir={tmp_path}"] if module.endswith("main")
                                     else [])])
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
  assert lines[0].startswith("error: --config: ") and reason in lines[0], lines[0]
