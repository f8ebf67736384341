"""The fine-tuning toolbox: parameter groups (frozen, lr_mults, wd_mults, layer_decay)
give exactly the per-parameter learning rates a hand computation gives, a linear probe
leaves everything but the head bit-identical and holds optimizer state for the head only,
EMA follows its formula and is evaluated beside the live parameters, LoRA trains adapters
on a frozen base and merges into plain weights with the same logits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers, tiny_config
from tests.test_models import random_params
from tests.test_train import tiny
from vit_jax import convert
from vit_jax.errors import UserError
from vit_jax.models import create_model, lora
from vit_jax.models.params import flatten
from vit_jax.trainer import loop, optim, param_groups, steps
from vit_jax.trainer.state import TrainState


def _config(**overrides):
  config = tiny_config.get_config().unlock()
  config.update(warmup_steps=0, schedule="constant", grad_clip_norm=0.0, weight_decay=0.0,
                **overrides)
  return config


def _first_update(config, params):
  tx, _ = optim.make_optimizer(config)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  return flatten(jax.device_get(updates))


@pytest.mark.parametrize("scan", [False, True])
def test_layer_decay_and_lr_mults_give_the_hand_computed_rates(scan):
  """ViT-test has L = 2 blocks; decay 0.5: block 0 x 0.25, block 1 x 0.5, embeddings
  x 0.125, final norm and head x 1, then lr_mults (first match wins) on top. The ratio of
  each parameter's first Adam update to the plain one is its multiplier, exactly."""
  params = random_params(create_model("ViT-test", num_classes=3, scan_layers=scan), 8)
  plain = _first_update(_config(optimizer="adam"), params)
  grouped = _first_update(_config(optimizer="adam", layer_decay=0.5,
                                  lr_mults=(("^head/kernel", 10.0), ("^head/", 3.0))), params)
  expected = {"embedding/kernel": 0.125, "cls": 0.125,
              "Transformer/posembed_input/pos_embedding": 0.125,
              "Transformer/encoder_norm/scale": 1.0, "head/kernel": 10.0, "head/bias": 3.0}
  if scan:
    layers = np.array([0.25, 0.5])
    expected["Transformer/encoderblock/MlpBlock_3/Dense_0/kernel"] = layers[:, None, None]
    expected["Transformer/encoderblock/LayerNorm_0/scale"] = layers[:, None]
  else:
    expected["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"] = 0.25
    expected["Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel"] = 0.5
  for name, multiplier in expected.items():
    np.testing.assert_allclose(grouped[name], plain[name] * multiplier, rtol=1e-6, err_msg=name)
  assert set(grouped) == set(plain)


def test_frozen_parameters_get_no_update_and_no_optimizer_state():
  params = random_params(create_model("ViT-test", num_classes=3), 8)
  config = _config(optimizer="adam", frozen=r"^(?!head/)")
  tx, _ = optim.make_optimizer(config)
  moments = sum(x.size for x in jax.tree.leaves(tx.init(params)) if x.ndim)  # not counts.
  head_sizes = sum(x.size for x in jax.tree.leaves(params["head"]))
  assert moments == 2 * head_sizes  # Adam's mu and nu of the head only.
  updates = _first_update(config, params)
  assert all(not np.any(u) for k, u in updates.items() if not k.startswith("head/"))
  assert all(np.all(u != 0) for k, u in updates.items() if k.startswith("head/"))
  assert param_groups.count_trained(config, params) == (
      head_sizes, sum(x.size for x in jax.tree.leaves(params)))


def test_ema_follows_its_formula():
  model = create_model("ViT-test", num_classes=3)
  params = random_params(model, 8)
  tx, schedule = optim.make_optimizer(_config(optimizer="sgd", lr=0.1))
  step = jax.jit(steps.make_train_step(model, tx, schedule, loss="softmax",
                                       label_smoothing=0.0, accum_steps=1, ema_decay=0.5))
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params),
                     jax.random.key_data(jax.random.key(0)),
                     ema_params=jax.tree.map(jnp.copy, params))
  batch = {"image": jax.random.normal(jax.random.key(1), (4, 8, 8, 3)),
           "label": jnp.array([0, 1, 2, 0])}
  ema = params
  for s in range(3):
    state, _ = step(state, batch)
    decay = min(0.5, (1 + s) / (10 + s))  # warm-up: 0.1, 0.18, 0.25.
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, state.params)
  for a, b in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(ema)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _count_pretrained_reads(monkeypatch, source) -> dict:
  """Counts what a run reads of the checkpoint `source`: its listing of steps, its
  config.json and its weights."""
  from vit_jax.convert import checkpoint as checkpoint_lib, run_format
  counts = {"listings": 0, "config.json": 0, "weights": 0}

  def counted(key, fn, applies=lambda *a, **k: True):
    def wrapper(*args, **kwargs):
      counts[key] += bool(applies(*args, **kwargs))
      return fn(*args, **kwargs)
    return wrapper
  under_source = lambda path, *a, **k: str(source) in str(path)  # noqa: E731
  monkeypatch.setattr(run_format, "latest_complete_step",
                      counted("listings", run_format.latest_complete_step, under_source))
  monkeypatch.setattr(checkpoint_lib, "read_json", counted(
      "config.json", checkpoint_lib.read_json,
      lambda path: under_source(path) and str(path).endswith("config.json")))
  for name in ("restore_as_numpy", "restore_params"):
    monkeypatch.setattr(run_format, name, counted("weights", getattr(run_format, name),
                                                  under_source))
  return counts


def test_linear_probe_lora_and_ema_from_a_run(tfds_dir, tmp_path, capsys, monkeypatch):
  """From a trained run: a linear probe changes the head only (bit-identical rest); a
  LoRA fine-tune keeps the base kernels bit-identical, trains the adapters, and reads back
  merged with the adapted model's logits; EMA metrics sit beside the live ones. The
  pretrained run is read once: one listing, one config.json, one weights read."""
  source = tmp_path / "source"
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=4), source)
  before = flatten(convert.read(str(source)).params)
  capsys.readouterr()
  probe = tmp_path / "probe"
  with monkeypatch.context() as patched:
    reads = _count_pretrained_reads(patched, source)
    loop.train_and_evaluate(tiny(tfds_dir, total_steps=4, pretrained=str(source),
                                 frozen=r"^(?!head/)", ema_decay=0.9), probe)
  assert reads == {"listings": 1, "config.json": 1, "weights": 1}, reads
  assert "19,242 parameters, 330 trained (1.7%)" in capsys.readouterr().out
  after = flatten(convert.read(str(probe)).params)
  for name, value in before.items():
    if name.startswith("head/"):
      assert np.any(after[name] != value), name
    else:
      np.testing.assert_array_equal(after[name], value, err_msg=name)
  final = [m for m in helpers.read_metrics(probe) if "test_accuracy" in m][-1]
  assert "test_ema_accuracy" in final and "test_ema_loss" in final
  ema = flatten(convert.read(str(probe), params="ema").params)
  assert np.any(ema["head/kernel"] != after["head/kernel"])

  config = tiny(tfds_dir, total_steps=4, pretrained=str(source), lr=0.05).unlock()
  config.lora.rank = 2
  adapted = tmp_path / "lora"
  state = loop.train_and_evaluate(config.lock(), adapted)
  trained = flatten(jax.device_get(state.params))
  assert "Dense_0/lora_a" in " ".join(trained)
  for name, value in before.items():
    if not name.startswith("head/"):
      np.testing.assert_array_equal(trained[name], value, err_msg=name)
  assert all(np.any(v != 0) for k, v in trained.items() if k.endswith("lora_b"))
  merged = convert.read(str(adapted))
  images = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  spec = lora.LoraSpec.from_config(config)
  model = create_model("ViT-test", num_classes=10)
  ours = lora.LoraModel(model, spec).apply({"params": state.params}, images)
  exported = model.apply({"params": merged.params}, images)
  np.testing.assert_allclose(exported, ours, atol=1e-5)
  assert np.max(np.abs(np.asarray(exported) - np.asarray(
      model.apply({"params": convert.read(str(source)).params}, images)))) > 1e-4


@pytest.mark.parametrize("overrides,message", [
    (dict(frozen="^nothing_like_this/"), r"frozen='\^nothing_like_this/' matches no parameter"),
    (dict(frozen=".*"), r"freezes every parameter: nothing would train"),
    (dict(lr_mults=(("^heads/", 2.0),)), r"lr_mults='\^heads/' matches no parameter"),
    (dict(layer_decay=1.5), r"layer_decay=1.5 must be in \(0, 1\]"),
    (dict(ema_decay=1.0), r"ema_decay=1.0 must be in \[0, 1\)"),
    (dict(lora_targets="conv/kernel"), r"lora.targets='conv/kernel' matches no kernel"),
])
def test_parameter_group_mistakes_are_one_line_before_anything_is_written(
    tfds_dir, tmp_path, overrides, message):
  config = tiny(tfds_dir).unlock()
  if "lora_targets" in overrides:
    config.lora.rank, config.lora.targets = 2, overrides.pop("lora_targets")
  config.update(overrides)
  with pytest.raises(UserError, match=message):
    loop.train_and_evaluate(config.lock(), tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_per_class_results_write_a_confusion_matrix(tfds_dir, tmp_path):
  config = tiny(tfds_dir, total_steps=3).unlock()
  config.evals.test.per_class = True
  loop.train_and_evaluate(config.lock(), tmp_path)
  final = [m for m in helpers.read_metrics(tmp_path) if "test_accuracy" in m][-1]
  lines = (tmp_path / "test_confusion.csv").read_text().splitlines()
  assert lines[0] == "true \\ predicted," + ",".join(str(i) for i in range(10)) + ",accuracy"
  table = np.array([[int(v) for v in line.split(",")[1:11]] for line in lines[1:]])
  assert table.shape == (10, 10) and table.sum() == final["test_examples"] == 359
  # The matrix agrees with the accuracy computed on its own path (argmax hits).
  assert np.trace(table) / table.sum() == pytest.approx(final["test_accuracy"], abs=1e-6)
  per_class = [float(line.split(",")[-1]) for line in lines[1:]]
  np.testing.assert_allclose(per_class, np.diag(table) / table.sum(1), atol=1e-4)
  assert final["test_worst_class_accuracy"] == pytest.approx(min(per_class), abs=1e-4)
  assert "val_confusion" not in final  # tables go to CSV, not to the metrics.


def test_families_name_their_blocks_for_last_n_and_layer_decay():
  """`last<N>` (train_last_blocks) and layer decay ask the family what its names mean:
  a ViT and a Mixer train their own last block and top; a family that declares no blocks
  is one line."""
  import re
  from vit_jax.configs import common
  from vit_jax.param_names import names
  for model_name, kwargs, trained in (
      ("ViT-test", {}, {"Transformer/encoderblock_1/", "Transformer/encoder_norm/", "head/"}),
      ("Mixer-S_16", {"patch_size": 4, "hidden_size": 16, "num_layers": 2,
                      "tokens_mlp_dim": 8, "channels_mlp_dim": 16},
       {"MixerBlock_1/", "pre_head_layer_norm/", "head/"})):
    config = _config(model_name=model_name)
    config.model.update(kwargs)
    common.apply_finetune_variant(config, "last1")
    params = random_params(create_model(model_name, num_classes=3, **kwargs), 8)
    pattern = param_groups.frozen_pattern(config, params)
    moving = {n for n in names(params) if not re.search(pattern, n)}
    assert moving and all(n.startswith(tuple(trained)) for n in moving), moving
    assert {p for p in trained if any(n.startswith(p) for n in moving)} == trained
    updates = _first_update(config, params)
    assert all(np.any(v) == (k in moving) for k, v in updates.items()), model_name
  config = _config(model_name="ViT-test", train_last_blocks=3)
  with pytest.raises(UserError, match=r"train_last_blocks=3: ViT-test has 2 numbered blocks"):
    param_groups.frozen_pattern(config, random_params(create_model("ViT-test", num_classes=3), 8))
