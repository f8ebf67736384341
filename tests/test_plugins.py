"""The open seams: an evaluator, a pp op and a model family from modules outside the
package, named only in the config; evaluation of an FSDP run on sharded parameters;
sharding rules from the config; the light config import; the CLI error convention."""
import json
import logging
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest

from tests import helpers
from tests.test_train import tiny
from vit_jax.trainer import build as build_lib
from vit_jax.convert import run_format
from vit_jax.trainer import loop
from vit_jax import sharding as sharding_lib
from vit_jax.trainer import evaluate as evaluate_lib
from vit_jax.evaluators import classification

PLUGINS = '''
"""A user's own module: one pp op and one evaluator, registered by name."""
import jax
import numpy as np

from vit_jax.pp import builder, registry

TRACED = []


@registry.register("darken")
def darken(factor):
  def op(image, rng):
    del rng
    TRACED.append(factor)
    return (image.astype(np.float32) * factor).astype(np.uint8)
  return op


class Evaluator:
  """Mean of the model's logits on one batch of the darkened test images."""

  def __init__(self, context, *, scale):
    self.scale = scale
    self.data = context.eval_data(pp="to_rgb|darken(0.5)|value_range(-1, 1)")
    self.model = context.model
    self.calls = 0

  def run(self, params):
    self.calls += 1
    batch = next(iter(self.data))
    params = jax.device_get(params)
    logits = self.model.apply({"params": params}, batch["image"])
    return {"mean_logit": self.scale * float(np.mean(logits)), "calls": self.calls}
'''


@pytest.fixture()
def plugins(tmp_path, monkeypatch):
  (tmp_path / "my_plugins.py").write_text(PLUGINS)
  monkeypatch.syspath_prepend(str(tmp_path))
  yield
  sys.modules.pop("my_plugins", None)


def test_evaluator_and_pp_op_from_outside_the_package(plugins, tfds_dir, tmp_path):
  config = tiny(tfds_dir, total_steps=8, pp_modules=("my_plugins",),
                pp_train="to_rgb|darken(0.75)|value_range(-1, 1)")
  config = config.unlock()
  config.evals.mine = ml_collections.ConfigDict({"type": "my_plugins", "every": 3,
                                                 "scale": 2.0})
  loop.train_and_evaluate(config.lock(), tmp_path / "run")
  import my_plugins  # pylint: disable=import-outside-toplevel
  assert 0.75 in my_plugins.TRACED and 0.5 in my_plugins.TRACED   # both pipelines used it.
  rows = [m for m in helpers.read_metrics(tmp_path / "run") if "mine_mean_logit" in m]
  assert [r["step"] for r in rows] == [3, 6, 8]                   # every 3 and at the end.
  assert [r["mine_calls"] for r in rows] == [1, 2, 3]
  assert all(np.isfinite(r["mine_mean_logit"]) for r in rows)


def test_unknown_evaluator_type_and_pp_module_are_user_errors(tfds_dir, tmp_path):
  config = tiny(tfds_dir, **{"evals.test.type": "no_such_evaluator"})
  with pytest.raises(ValueError, match="Evaluator type 'no_such_evaluator'"):
    loop.train_and_evaluate(config, tmp_path / "a")
  with pytest.raises(ValueError, match="pp_modules entry 'no_such_ops' is not an importable module"):
    loop.train_and_evaluate(tiny(tfds_dir, pp_modules=("no_such_ops",)), tmp_path / "b")
  config = tiny(tfds_dir, **{"evals.test.batch_size": 8})
  config = config.unlock()
  config.evals.test.bogus = 1
  with pytest.raises(ValueError, match="evals.test .*bogus"):
    loop.train_and_evaluate(config.lock(), tmp_path / "c")


FAMILY = '''
"""A user's own model family: a linear classifier on the flattened pixels."""
import flax.linen as nn


class Linear(nn.Module):
  num_classes: int
  width: int

  @nn.compact
  def __call__(self, images, *, train=False, return_representation=False):
    x = nn.Dense(self.width, kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), (None, "embed")))(images.reshape(len(images), -1))
    if return_representation or not self.num_classes:
      return x
    return nn.Dense(self.num_classes, name="head")(x)  # the contract: the head is 'head'.


def create(*, num_classes, width):
  return Linear(num_classes=num_classes, width=width)
'''

DATA = '''
"""A user's own data: two sources and a resize-like pp op, named only in the config."""
import numpy as np
from sklearn.datasets import load_digits

from vit_jax.data import sources
from vit_jax.pp import registry


def _split(max_class):
  digits = load_digits()
  keep = digits.target < max_class
  images = np.round(digits.images[keep] * 255 / 16).astype(np.uint8)[..., None]
  labels = digits.target[keep]
  return {"train": (images[:-100], labels[:-100]), "test": (images[-100:], labels[-100:])}


def digits():
  return sources.ArraySource("my_digits", _split(10))


five_digits = sources.ArraySource("my_five_digits", _split(5))  # an instance works too.


@registry.register("nearest_resize", sizes=("size",))
def nearest_resize(size):
  def op(image, rng):
    rows = np.arange(size) * image.shape[0] // size
    cols = np.arange(size) * image.shape[1] // size
    return image[rows][:, cols]
  return op
'''


def test_outside_family_and_data_train_finetune_and_round_trip_npz(tfds_dir, tmp_path,
                                                                    monkeypatch, capsys):
  """A model family, two data sources and a resize-like op from the user's own modules,
  named only in the config: the op's size follows --config.resolution; the family
  trains (on an FSDP mesh), fine-tunes from its own run onto 5 classes with a new head,
  and its parameters round-trip through .npz with the architecture recorded."""
  import vit_jax  # pylint: disable=import-outside-toplevel
  from vit_jax import convert  # pylint: disable=import-outside-toplevel
  (tmp_path / "my_family.py").write_text(FAMILY)
  (tmp_path / "my_data.py").write_text(DATA)
  monkeypatch.syspath_prepend(str(tmp_path))
  pp = "to_rgb|nearest_resize(8)|value_range(-1, 1)"
  common = dict(model_name="my_family", pp_modules=("my_data",), pp_train=pp, pp_eval=pp,
                resolution=12, lr=0.01, **{"evals.test.every": 0})
  config = tiny(tfds_dir, total_steps=30, dataset="my_data:digits",
                mesh={"data": 2, "fsdp": 4, "model": 1}, **common).unlock()
  config.model = ml_collections.ConfigDict({"width": 16})  # the family's own fields only.
  loop.train_and_evaluate(config.lock(), tmp_path / "run")
  final = [m for m in helpers.read_metrics(tmp_path / "run") if "test_accuracy" in m][-1]
  assert final["test_accuracy"] > 0.5  # a linear model on digits learns quickly.
  params, _ = run_format.restore_as_numpy(tmp_path / "run")
  assert params["Dense_0"]["kernel"].shape == (12 * 12 * 3, 16)  # the op's size rescaled.
  assert params["head"]["kernel"].shape == (16, 10)

  capsys.readouterr()
  finetune = tiny(tfds_dir, total_steps=4, dataset="my_data:five_digits",
                  pretrained=str(tmp_path / "run"), **common).unlock()
  finetune.model = ml_collections.ConfigDict({"width": 16})
  state = loop.train_and_evaluate(finetune.lock(), tmp_path / "finetuned")
  assert "replaced the head (16, 10) by a fresh (16, 5)" in capsys.readouterr().out
  assert state.params["head"]["kernel"].shape == (16, 5)

  read = convert.read(str(tmp_path / "run"))
  convert.write_npz(read, str(tmp_path / "linear.npz"))
  model, loaded = vit_jax.load_pretrained(str(tmp_path / "linear.npz"))
  assert vit_jax.preprocessing_of(str(tmp_path / "linear.npz")).resolution == 12
  images = np.linspace(-1, 1, 2 * 12 * 12 * 3, dtype=np.float32).reshape(2, 12, 12, 3)
  np.testing.assert_array_equal(model.apply({"params": loaded}, images),
                                model.apply({"params": params}, images))
  for module in ("my_family", "my_data"):
    sys.modules.pop(module, None)


def test_fsdp_run_is_evaluated_on_sharded_parameters(tfds_dir, tmp_path, monkeypatch):
  """Trained with every weight split 8 ways over 'fsdp'; `vit_jax.cli.evaluate` restores
  the parameters straight onto that layout (no replicated copy) and reproduces the
  trainer's own final evaluation."""
  fsdp = {"data": 1, "fsdp": 8, "model": 1}
  run = tmp_path / "run"
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=6, mesh=fsdp), run)
  seen = []
  real_run = classification.Evaluator.run

  def spy(self, params):
    seen.append(params)
    return real_run(self, params)
  monkeypatch.setattr(classification.Evaluator, "run", spy)
  step, results = evaluate_lib.evaluate_checkpoint(tiny(tfds_dir, mesh=fsdp), str(run))
  kernel = seen[0]["Transformer"]["encoderblock_0"]["MlpBlock_3"]["Dense_0"]["kernel"]
  assert kernel.sharding.spec[0] == "fsdp"
  assert kernel.addressable_shards[0].data.shape == (32 // 8, 64)
  final = [m for m in helpers.read_metrics(run) if "test_accuracy" in m][-1]
  assert step == 6 and results["test_accuracy"] == pytest.approx(final["test_accuracy"])
  assert results["test_loss"] == pytest.approx(final["test_loss"], rel=1e-5)

  result = helpers.run_subprocess(
      ["-m", "vit_jax.cli.evaluate", f"--checkpoint={run}",
       f"--config=configs/run.py:{run}", "--config.mesh.data=1", "--config.mesh.fsdp=-1"],
      devices=8)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"test_accuracy {final['test_accuracy']:.4f}" in result.stdout
  assert "test_examples 359" in result.stdout


def test_sharding_rules_come_from_the_config_and_fallbacks_are_logged_once(caplog, monkeypatch):
  # Logged once per process: start from a process that has logged nothing yet.
  monkeypatch.setattr(sharding_lib, "_logged_fallbacks", set())
  config = tiny("/unused", model_name="vit",
                model={"patch_size": 4, "hidden_size": 36, "num_layers": 1, "num_heads": 2,
                       "mlp_dim": 64})
  mesh = sharding_lib.make_mesh({"data": 1, "fsdp": 8})
  # absl's own logger at INFO: a command run in this process before may have set absl's
  # verbosity to WARNING (the quiet console).
  with caplog.at_level(logging.INFO, logger="absl"):
    built = build_lib.build(config, mesh, num_classes=10, image_shape=(8, 8, 3))
    build_lib.build(config, mesh, num_classes=10, image_shape=(8, 8, 3))
  fallbacks = [r.getMessage() for r in caplog.records if "not divisible" in r.getMessage()]
  assert any("embedding/kernel dimension 3 (size 36)" in m for m in fallbacks)
  assert len(fallbacks) == len(set(fallbacks))  # the second build logged nothing again.
  params = built.state.param_shardings
  assert params["Transformer"]["encoderblock_0"]["MlpBlock_3"]["Dense_0"]["kernel"].spec[0] \
      is None  # 36 rows cannot be split 8 ways: replicated.
  assert params["Transformer"]["encoderblock_0"]["MlpBlock_3"]["Dense_1"]["kernel"].spec[1] \
      is None

  # Rules changed in the config: the MLP's hidden units split over 'fsdp' instead.
  config = tiny("/unused", sharding_rules=(("mlp", "fsdp"),))
  built = build_lib.build(config, mesh, num_classes=10, image_shape=(8, 8, 3))
  dense = built.state.param_shardings["Transformer"]["encoderblock_0"]["MlpBlock_3"]["Dense_0"]
  assert tuple(dense["kernel"].spec) == (None, "fsdp")
  with pytest.raises(ValueError, match="unknown mesh axes \\['gpu'\\]"):
    build_lib.build(tiny("/unused", sharding_rules=(("mlp", "gpu"),)), mesh, num_classes=10,
                    image_shape=(8, 8, 3))


def test_config_import_is_light():
  code = textwrap.dedent("""
      import sys, time
      start = time.perf_counter()
      import vit_jax.config
      config = vit_jax.config.base_config()
      seconds = time.perf_counter() - start
      heavy = sorted(m for m in ("tensorflow", "tensorflow_datasets", "jax", "flax", "clu")
                     if m in sys.modules)
      print(seconds, heavy)
      """)
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=helpers.REPO, env=helpers.cli_env(), check=True).stdout.split(" ", 1)
  assert float(out[0]) < 2.0 and out[1].strip() == "[]"


def test_cli_user_error_is_one_line_exit_2_and_bugs_keep_their_traceback(tfds_dir, tmp_path):
  bad = helpers.run_cli(tmp_path / "a", f"--config.data_dir={tfds_dir}",
                        "--config.model.classifier=tokne")
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert bad.stderr.strip().splitlines()[-1] == (
      "error: model.classifier='tokne' is not one of ['token', 'gap', 'map'].")
  (tmp_path / "crashing_eval.py").write_text(
      "class Evaluator:\n  def __init__(self, context, **settings):\n"
      "    raise RuntimeError('a bug in an evaluator')\n")
  env = helpers.cli_env()
  env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
  crash = subprocess.run(helpers.cli_args(tmp_path / "b", f"--config.data_dir={tfds_dir}",
                                          "--config.evals.test.type=crashing_eval"),
                         env=env, cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
  assert crash.returncode == 1 and "Traceback" in crash.stderr
  assert "RuntimeError: a bug in an evaluator" in crash.stderr


def test_run_config_round_trips_through_config_json(tfds_dir, tmp_path):
  from vit_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from vit_jax.runtime import workdir  # pylint: disable=import-outside-toplevel
  config = tiny(tfds_dir, total_steps=3, **{"evals.test.every": 0})
  loop.train_and_evaluate(config, tmp_path)
  restored = config_lib.from_stored(workdir.read_config(str(tmp_path)))
  assert restored.sharding_rules == config.sharding_rules  # tuples again, not JSON lists.
  assert restored.to_dict() == config.to_dict()
  stored = json.loads((tmp_path / "config.json").read_text())
  stored.pop("evals")
  stored["eval_every"] = 5   # a field of an older version: dropped, defaults fill in.
  (tmp_path / "config.json").write_text(json.dumps(stored))
  assert "eval_every" not in config_lib.from_stored(workdir.read_config(str(tmp_path)))
  assert (config_lib.from_stored(workdir.read_config(str(tmp_path))).evals.test.type
          == "classification")
