"""The trainer: sharding invariance, FSDP, gradient accumulation, exact resume after kill -9
and SIGTERM, NaN guard, resharding restore, fine-tuning from .npz, the quickstart CLI."""
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers, tiny_config
from tests.test_models import random_params
from vit_jax import config as config_lib
from vit_jax.convert import npz_format, run_format
from vit_jax.objectives import classification
from vit_jax.models import posemb as posemb_lib
from vit_jax.trainer import checkpointer, loop, optim, steps
from vit_jax.trainer.state import TrainState
from vit_jax.models import create_model


def tiny(tfds_dir, **overrides):
  return config_lib.with_overrides(tiny_config.get_config(),
                                   {"data_dir": tfds_dir, **overrides}).lock()


def final_params(workdir):
  return run_format.restore_as_numpy(workdir)[0]


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_one_device_and_eight_devices_give_the_same_loss_curve(tfds_dir, tmp_path):
  """1 CPU device (subprocess) vs 8 devices as a data mesh and as a data x fsdp mesh.
  Measured: identical to ~1e-7 relative; asserted rtol 1e-5 (reduction order differs)."""
  one = helpers.run_cli(tmp_path / "one", f"--config.data_dir={tfds_dir}",
                        "--config.total_steps=6", devices=1)
  assert one.returncode == 0, one.stderr[-3000:]
  reference = helpers.losses(tmp_path / "one")
  assert sorted(reference) == [1, 2, 3, 4, 5, 6]
  for name, mesh in (("data", {"data": 8, "fsdp": 1, "model": 1}),
                     ("fsdp", {"data": 2, "fsdp": 4, "model": 1})):
    state = loop.train_and_evaluate(tiny(tfds_dir, total_steps=6, mesh=mesh), tmp_path / name)
    curve = helpers.losses(tmp_path / name)
    np.testing.assert_allclose([curve[s] for s in sorted(reference)],
                               [reference[s] for s in sorted(reference)], rtol=1e-5)
    if name == "fsdp":
      kernel = state.params["Transformer"]["encoderblock_0"]["MlpBlock_3"]["Dense_0"]["kernel"]
      shard = kernel.addressable_shards[0].data
      assert kernel.shape == (32, 64) and shard.shape == (8, 64)  # embed split 4 ways.
      mu = state.opt_state[1][0].mu["Transformer"]["encoderblock_0"]["MlpBlock_3"]["Dense_0"]
      assert mu["kernel"].addressable_shards[0].data.shape == (8, 64)


def test_resharding_restore_8_to_1_and_back(tfds_dir, tmp_path):
  eight = tmp_path / "eight"
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=5,
                                mesh={"data": 2, "fsdp": 4, "model": 1}), eight)
  # 8 devices (fsdp) -> 1 device: resumes from step 5 and trains on.
  one = helpers.run_cli(eight, f"--config.data_dir={tfds_dir}", "--config.total_steps=8",
                        "--config.checkpoint_every=4", devices=1)
  assert one.returncode == 0, one.stderr[-3000:]
  assert "Resumed from step 5" in one.stdout
  assert checkpointer.TrainCheckpointer(str(eight / "checkpoints"), keep=3).latest_step() == 8
  # ... and back to 8 devices (data mesh).
  state = loop.train_and_evaluate(tiny(tfds_dir, total_steps=10), eight)
  assert int(state.step) == 10
  assert set(helpers.losses(eight)) >= set(range(1, 11))


def test_gradient_accumulation_matches_the_full_batch():
  # SGD: its update is linear in the gradient. (Adam's g / sqrt(v) turns rounding noise in
  # near-zero gradients into visible differences, which says nothing about accumulation.)
  model = create_model("ViT-test", num_classes=10)
  config = tiny_config.get_config().unlock()
  config.update(dict(optimizer="sgd", weight_decay=0.0, lr=0.1))
  tx, schedule = optim.make_optimizer(config)
  params = random_params(model, 8)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(-1, 1, (32, 8, 8, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, 32), jnp.int32)}

  def run(accum_steps):
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state=tx.init(params),
                       rng=jax.random.key_data(jax.random.key(0)))
    step = jax.jit(steps.make_train_step(model, tx, schedule, loss="softmax",
                                         label_smoothing=0.0, accum_steps=accum_steps))
    return step(step(state, batch)[0], batch)

  (full, full_metrics), (accum, accum_metrics) = run(1), run(4)
  np.testing.assert_allclose(accum_metrics["train_loss"], full_metrics["train_loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(accum.params), jax.tree.leaves(full.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(full.params),
                                               jax.tree.leaves(params))]
  assert max(moved) > 1e-3  # the steps really updated the params.


def test_kill_9_mid_run_then_resume_is_bit_identical(tfds_dir, tmp_path):
  overrides = (f"--config.data_dir={tfds_dir}", "--config.total_steps=40",
               "--config.checkpoint_every=10")
  straight = helpers.run_cli(tmp_path / "straight", *overrides)
  assert straight.returncode == 0, straight.stderr[-3000:]

  killed = tmp_path / "killed"
  proc = subprocess.Popen(helpers.cli_args(killed, *overrides), env=helpers.cli_env(1),
                          cwd=helpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True)
  try:
    for line in proc.stdout:  # kill as soon as the async save of step 20 has started.
      if line.startswith("Saving checkpoint at step 20"):
        proc.send_signal(signal.SIGKILL)
        break
  finally:
    proc.kill()
    proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  latest = checkpointer.TrainCheckpointer(str(killed / "checkpoints"), keep=3).latest_step()
  assert latest in (10, 20)
  resumed = helpers.run_cli(killed, *overrides)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resumed from step {latest}" in resumed.stdout
  assert_trees_equal(final_params(killed), final_params(tmp_path / "straight"))


def test_sigterm_saves_and_exits_0_then_resumes_exactly(tfds_dir, tmp_path):
  # A constant schedule: the comparison runs below end at another total_steps.
  overrides = (f"--config.data_dir={tfds_dir}", "--config.schedule=constant",
               "--config.total_steps=400", "--config.checkpoint_every=1000",
               "--config.log_every=1")
  workdir = tmp_path / "preempted"
  proc = subprocess.Popen(helpers.cli_args(workdir, *overrides), env=helpers.cli_env(1),
                          cwd=helpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True)
  output = []
  for line in proc.stdout:
    output.append(line)
    if "] step 5/" in line:
      proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0
  text = "".join(output)
  assert "Stopped by SIGTERM at step" in text
  stopped = checkpointer.TrainCheckpointer(str(workdir / "checkpoints"), keep=3).latest_step()
  assert 5 <= stopped < 400 and f"Saving checkpoint at step {stopped}" in text
  # Resuming for a few more steps gives what an uninterrupted run gives.
  total = f"--config.total_steps={stopped + 3}"
  resumed = helpers.run_cli(workdir, *overrides[:2], total)
  straight = helpers.run_cli(tmp_path / "straight", *overrides[:2], total)
  assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr[-2000:]
  assert_trees_equal(final_params(workdir), final_params(tmp_path / "straight"))


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    tfds_dir, tmp_path):
  config = tiny(tfds_dir, lr=1e38, warmup_steps=0, grad_clip_norm=0.0, optimizer="sgd",
                weight_decay=0.0, checkpoint_every=1, total_steps=20)
  with pytest.raises(loop.NonFiniteStepError, match=r"Non-finite training step \d+"):
    loop.train_and_evaluate(config, tmp_path)
  saved = checkpointer.TrainCheckpointer(str(tmp_path / "checkpoints"), keep=3)
  latest = saved.latest_step()
  assert latest is not None and latest >= 1
  params = final_params(tmp_path)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  bad_step = max(helpers.losses(tmp_path) or {0: 0}) + 1
  assert latest < bad_step or latest == 1


def _poison_parameters_at(step_to_poison: int):
  """A fault injector: wraps the real train step so that the update of one step makes
  the parameters NaN while that step's loss (computed before the update) stays finite."""
  real = steps.make_train_step

  def make(*args, **kwargs):
    step_fn = real(*args, **kwargs)

    def poisoned(state, batch):
      new_state, metrics = step_fn(state, batch)
      poison = new_state.step == step_to_poison
      params = jax.tree.map(lambda p: jnp.where(poison, p * jnp.nan, p), new_state.params)
      return new_state.replace(params=params), metrics
    return poisoned
  return make


def test_nan_parameters_behind_a_finite_loss_are_never_checkpointed(tfds_dir, tmp_path,
                                                                    monkeypatch):
  """Step 8's update is poisoned and step 8 is a checkpoint step with keep=1: the run
  stops naming step 8, step 4's checkpoint survives, and a clean rerun resumes from it."""
  monkeypatch.setattr(steps, "make_train_step", _poison_parameters_at(8))
  config = tiny(tfds_dir, checkpoint_every=4, total_steps=12, keep_checkpoints=1, log_every=50)
  with pytest.raises(loop.NonFiniteStepError, match=r"Non-finite training step 8 \(loss \d"):
    loop.train_and_evaluate(config, tmp_path)
  saved = checkpointer.TrainCheckpointer(str(tmp_path / "checkpoints"), keep=1)
  assert saved.latest_step() == 4
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(final_params(tmp_path)))
  monkeypatch.undo()
  state = loop.train_and_evaluate(config, tmp_path)
  assert int(state.step) == 12
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(final_params(tmp_path)))


def test_skip_nonfinite_steps_drops_the_bad_update_and_goes_on(tfds_dir, tmp_path,
                                                             monkeypatch):
  monkeypatch.setattr(steps, "make_train_step", _poison_parameters_at(3))
  config = tiny(tfds_dir, skip_nonfinite_steps=True, total_steps=6, checkpoint_every=3)
  state = loop.train_and_evaluate(config, tmp_path)
  assert int(state.step) == 6
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(final_params(tmp_path)))
  skipped = {row["step"]: row["skipped_steps"] for row in helpers.read_metrics(tmp_path)
             if "skipped_steps" in row}
  assert skipped[3] == 1 and sum(skipped.values()) == 1


def test_finetune_from_npz_written_by_save_npz(tfds_dir, tmp_path):
  """Pre-trained at 16 px with a 5-class head and pre_logits -> digits at 8 px, 10 classes.
  With lr = 0 the fine-tuned params are exactly the adapted ones."""
  source_model = create_model("ViT-test", num_classes=5, representation_size=16)
  pretrained = random_params(source_model, 16)
  npz_format.save_npz(pretrained, tmp_path / "pretrained.npz")
  config = tiny(tfds_dir, pretrained=str(tmp_path / "pretrained.npz"), lr=0.0, total_steps=3,
                optimizer="sgd", weight_decay=0.0)
  state = loop.train_and_evaluate(config, tmp_path / "run")
  params = jax.device_get(state.params)
  assert "pre_logits" not in params and params["head"]["kernel"].shape == (32, 10)
  np.testing.assert_array_equal(params["head"]["kernel"], 0)
  np.testing.assert_array_equal(params["embedding"]["kernel"], pretrained["embedding"]["kernel"])
  np.testing.assert_allclose(
      params["Transformer"]["posembed_input"]["pos_embedding"],
      posemb_lib.resize_posemb(pretrained["Transformer"]["posembed_input"]["pos_embedding"],
                               target_grid=(2, 2)), rtol=1e-6)


def test_finetune_errors_are_one_clear_line(tfds_dir, tmp_path):
  result = helpers.run_cli(tmp_path, f"--config.data_dir={tfds_dir}",
                           f"--config.pretrained={tmp_path}/missing.npz")
  assert result.returncode == 2
  assert "missing.npz': no such file or directory" in result.stderr and "Traceback" not in result.stderr


def test_optimizer_state_dtype_and_weight_decay_mask():
  config = tiny_config.get_config().unlock()
  config.optimizer_dtype = "bfloat16"
  tx, _ = optim.make_optimizer(config)
  params = random_params(create_model("ViT-test", num_classes=3), 8)
  opt_state = tx.init(params)
  mu = opt_state[1][0].mu
  assert {x.dtype for x in jax.tree.leaves(mu)} == {jnp.dtype(jnp.bfloat16)}
  # Zero gradients: Adam's step is 0, what is left is the decay, -lr * wd * p, on weight
  # matrices only (wd_mults: per group).
  config.update(weight_decay=0.1, warmup_steps=0, schedule="constant", grad_clip_norm=0.0,
                wd_mults=(("^head/", 0.5),))
  tx, _ = optim.make_optimizer(config)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  decay = -config.lr * 0.1
  np.testing.assert_allclose(updates["embedding"]["kernel"],
                             decay * params["embedding"]["kernel"], rtol=1e-6)
  np.testing.assert_allclose(updates["head"]["kernel"], decay * 0.5 * params["head"]["kernel"],
                             rtol=1e-6)
  for undecayed in (updates["embedding"]["bias"], updates["cls"],
                    updates["Transformer"]["posembed_input"]["pos_embedding"],
                    updates["Transformer"]["encoderblock_0"]["LayerNorm_0"]["scale"]):
    assert not np.any(undecayed)


def test_schedule_warmup_then_cosine_to_end_lr():
  config = tiny_config.get_config().unlock()
  config.update(dict(lr=1.0, end_lr=0.1, warmup_steps=10, total_steps=110, schedule="cosine"))
  schedule = optim.make_schedule(config)
  assert schedule(0) == 0 and schedule(5) == pytest.approx(0.5)
  assert schedule(10) == pytest.approx(1.0)
  assert schedule(60) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-5)
  assert schedule(110) == pytest.approx(0.1)


def test_quickstart_cli_end_to_end_shortened(quickstart_run):
  """The README's command with fewer steps; TensorBoard, metrics.jsonl, config saved."""
  workdir, result = quickstart_run
  final = [m for m in helpers.read_metrics(workdir) if "test_accuracy" in m][-1]
  assert final["step"] == 250 and final["test_accuracy"] > 0.75
  assert final["test_examples"] == 359 and final["fewshot_5shot_accuracy"] > 0.5
  assert final["val_examples"] == 144 and final["val_accuracy"] > 0.75  # train[90%:].
  assert (workdir / "config.json").exists()
  assert "img/s" in result.stdout and "ETA" in result.stdout and "MFU n/a" in result.stdout
  events = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]
  assert events
  from tensorboard.backend.event_processing import plugin_event_accumulator
  board = plugin_event_accumulator.EventAccumulator(str(workdir))
  board.Reload()
  tags = set(board.Tags()["tensors"])
  assert {"train/train_loss", "eval/test_accuracy", "eval/fewshot_5shot_accuracy",
          "figures/attention_rollout_0", "figures/position_embedding_similarity"} <= tags
  # The figures as PNG files too, said on the console; example counts once, MFU n/a once.
  pngs = {p.name for p in (workdir / "figures").glob("*.png")}
  assert "figures_position_embedding_similarity_step250.png" in pngs, pngs
  assert f" as PNGs in {workdir / 'figures'}/ (and TensorBoard)" in result.stdout
  assert result.stdout.count("test_examples 359") == 1, result.stdout
  assert result.stdout.count("MFU n/a") == 1, result.stdout


def test_training_needs_no_tensorflow(tmp_path):
  """A run (train, evaluate, few-shot, checkpoint, TensorBoard) in a process where
  TensorFlow cannot be imported, as on a machine without it."""
  script = f"""
import sys
import tests.no_tensorflow
from tests import tiny_config
from vit_jax.trainer import loop
config = tiny_config.get_config()
config.total_steps = 4
loop.train_and_evaluate(config, {str(tmp_path)!r})
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
print("trained without TensorFlow")
"""
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=helpers.REPO, env=helpers.cli_env(1), timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "trained without TensorFlow" in result.stdout
  assert [m["step"] for m in helpers.read_metrics(tmp_path) if "test_accuracy" in m] == [4]


def test_mixup_blends_neighbours_with_one_lambda():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(-1, 1, (4, 8, 8, 3)), jnp.float32)
  targets = jax.nn.one_hot(jnp.array([0, 1, 2, 3]), 5)
  mixed_images, mixed_targets = classification.mixup(jax.random.key(3), images, targets, 0.4)
  lam = float(mixed_targets[0, 0])  # example 0 is mixed with example 3 (the roll).
  assert 0 < lam < 1 and float(mixed_targets[0, 3]) == pytest.approx(1 - lam)
  np.testing.assert_allclose(mixed_images, lam * images + (1 - lam) * jnp.roll(images, 1, 0),
                             rtol=1e-6)
  np.testing.assert_allclose(mixed_targets.sum(-1), 1.0, rtol=1e-6)


def test_train_step_with_mixup_is_deterministic_and_trains():
  model = create_model("ViT-test", num_classes=10)
  config = tiny_config.get_config()
  tx, schedule = optim.make_optimizer(config)
  params = random_params(model, 8)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(-1, 1, (16, 8, 8, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, 16), jnp.int32)}
  step = jax.jit(steps.make_train_step(model, tx, schedule, loss="softmax",
                                       label_smoothing=0.0, accum_steps=1, mixup_alpha=0.5))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(0)))
  (a, metrics_a), (b, metrics_b) = step(state, batch), step(state, batch)
  plain = jax.jit(steps.make_train_step(model, tx, schedule, loss="softmax",
                                        label_smoothing=0.0, accum_steps=1))(state, batch)[1]
  assert float(metrics_a["train_loss"]) == float(metrics_b["train_loss"])
  assert np.isfinite(float(metrics_a["train_loss"]))
  assert float(metrics_a["train_loss"]) != float(plain["train_loss"])  # really mixed.


def test_mlp_mixer_trains_with_the_same_config(tfds_dir, tmp_path):
  """The second family through the same trainer, evaluators included (figures: the
  patch-embedding filters, as a Mixer has no attention)."""
  config = tiny(tfds_dir, model_name="Mixer-S_16", total_steps=6, checkpoint_every=6,
                **{"model.patch_size": 4, "model.hidden_size": 32, "model.num_layers": 2,
                   "model.tokens_mlp_dim": 16, "model.channels_mlp_dim": 64})
  with config.unlocked():
    config.evals.figures = config_lib.figures_eval()
  state = loop.train_and_evaluate(config, tmp_path)
  assert int(state.step) == 6 and "MixerBlock_1" in jax.device_get(state.params)
  rows = helpers.read_metrics(tmp_path)
  assert any("test_accuracy" in row for row in rows)


def test_normalising_in_the_train_step_equals_normalising_on_the_host():
  """uint8 images + the affine in the step (normalize_on_device) give the step of the
  host-normalised float images, to float32 rounding."""
  from vit_jax.pp import builder  # pylint: disable=g-import-not-at-top
  model = create_model("ViT-test", num_classes=10)
  config = tiny_config.get_config()
  tx, schedule = optim.make_optimizer(config)
  params = random_params(model, 8)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
  labels = jnp.asarray(rng.integers(0, 10, 16), jnp.int32)
  affine = builder.split_device_affine("flip_lr|normalize((0.5, 0.4, 0.3), (0.2, 0.3, 0.4))")[1]
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(0)))
  make = lambda transform: jax.jit(steps.make_train_step(  # noqa: E731
      model, tx, schedule, loss="softmax", label_smoothing=0.0, accum_steps=2,
      input_transform=transform))
  host = make(None)(state, {"image": jnp.asarray(affine(images)), "label": labels})
  device = make(affine)(state, {"image": jnp.asarray(images), "label": labels})
  np.testing.assert_allclose(device[1]["train_loss"], host[1]["train_loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(device[0].params), jax.tree.leaves(host[0].params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_trainer_streams_uint8_and_normalises_in_the_step(tfds_dir, tmp_path, monkeypatch):
  """The trainer's input stream carries uint8 (the affine runs in the compiled step); the
  loss curve is that of normalising on the host."""
  from vit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  seen = []
  real_next = pipeline.TrainStream.__next__

  def spy(self):
    batch = real_next(self)
    seen.append(batch["image"].dtype)
    return batch
  monkeypatch.setattr(pipeline.TrainStream, "__next__", spy)
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=4), tmp_path / "device")
  assert set(seen) == {np.dtype(np.uint8)}
  seen.clear()
  loop.train_and_evaluate(tiny(tfds_dir, total_steps=4, normalize_on_device=False),
                           tmp_path / "host")
  assert set(seen) == {np.dtype(np.float32)}
  device, host = helpers.losses(tmp_path / "device"), helpers.losses(tmp_path / "host")
  assert sorted(device) == sorted(host) == [1, 2, 3, 4]
  np.testing.assert_allclose([device[k] for k in device], [host[k] for k in device], rtol=1e-5)


def test_files_a_run_writes_are_readable_by_others_as_the_umask_says(quickstart_run,
                                                                     tmp_path):
  """A shared cluster: colleagues and a TensorBoard server under another user read a
  run's files. Every file the quickstart wrote has the mode the umask gives (not
  mkstemp's 0600), and storage.write_bytes follows a umask of 022 and of 002."""
  from vit_jax import storage
  workdir, _ = quickstart_run
  umask = os.umask(0o022)
  os.umask(umask)
  unreadable = [str(p.relative_to(workdir)) for p in workdir.rglob("*")
                if p.is_file() and (p.stat().st_mode & 0o044) != (0o044 & ~umask)]
  assert not unreadable, unreadable
  for mask, mode in ((0o022, 0o644), (0o002, 0o664)):
    previous = os.umask(mask)
    try:
      storage.write_text(tmp_path / f"file_{mask:o}.json", "{}")
    finally:
      os.umask(previous)
    assert (tmp_path / f"file_{mask:o}.json").stat().st_mode & 0o777 == mode
