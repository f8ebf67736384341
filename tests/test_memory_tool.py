"""The memory planner: ViT-H/14 on a simulated 64-device mesh, parameter bytes checked
against the analytical count (params x bytes / shards). The large-model config scans its
blocks (one compiled block): the plan takes seconds, not the minutes of 32 unrolled ones."""
import json
import os

from tests import helpers


def test_h14_on_64_simulated_devices(tmp_path):
  out = tmp_path / "plan.json"
  result = helpers.run_subprocess(
      ["-m", "vit_jax.cli.memory", "--config=configs/pretrain_large.py:h14,imagenet2012",
       "--num_devices=64", "--config.mesh.data=8", "--config.mesh.fsdp=8",
       "--config.batch_size=64", f"--json={out}"], devices=1, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  plan = json.loads(out.read_text())
  assert plan["num_params"] == 632_045_800 and plan["mesh"]["fsdp"] == 8
  # FSDP splits every parameter with an 'embed' axis 8 ways (the data axis replicates),
  # the head's kernel too; parameters without one stay whole: the head's bias, and per
  # block the MLP's hidden bias and the query/key/value biases (sharded over 'model' only,
  # size 1 here).
  whole = 1000 + 32 * (5120 + 3 * 1280)
  expected = (plan["num_params"] - whole) * 4 / 8 + whole * 4
  assert plan["params_bytes"] == expected
  # Adam: first moment in bfloat16 (pretrain config), second in float32, plus two
  # replicated int32 step counters (Adam's and the schedule's).
  assert plan["optimizer_bytes"] == expected * 6 / 4 + 2 * 4
  assert plan["temp_bytes"] > 0 and plan["total_bytes"] > plan["params_bytes"]
  assert "| H100 | 80 GiB |" in result.stdout
  assert os.path.getsize(out) > 0


def test_boolean_and_tuple_overrides_take_effect(tmp_path):
  """--config.model.scan_layers=False must mean False (argparse's bool('False') was True):
  one array per block and weight instead of one stacked array per weight. A tuple override
  (the sharding rules) must reach the shardings: with 'embed' mapped to nothing, FSDP
  shards nothing. (ViT-Ti/16 cut to 2 blocks at 32 px: what is checked needs no more.)"""
  def plan(*overrides):
    out = tmp_path / f"plan{len(overrides)}.json"
    result = helpers.run_subprocess(
        ["-m", "vit_jax.cli.memory", "--config=configs/pretrain_large.py:ti16,imagenet2012",
         "--num_devices=8", "--config.batch_size=8", "--resolution=32",
         "--config.model.num_layers=2", f"--json={out}", *overrides], devices=1, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())

  scanned = plan()
  sharded = plan("--config.model.scan_layers=False")
  # Counted by hand: width 192, MLP 768, 2x2 patches of 16 px + the class token, 1000 classes.
  block = 2 * 2 * 192 + 3 * (192 * 192 + 192) + (192 * 192 + 192) + 2 * 192 * 768 + 768 + 192
  stem = 16 * 16 * 3 * 192 + 192 + 192 + 5 * 192
  assert sharded["num_params"] == scanned["num_params"] == \
      stem + 2 * block + 2 * 192 + 192 * 1000 + 1000
  blocks_arrays = 16  # 2 norms x 2, query/key/value/out x 2, MLP 2 x 2
  assert sharded["num_param_arrays"] == scanned["num_param_arrays"] + blocks_arrays
  unsharded = plan("--config.model.scan_layers=False",
                   "--config.sharding_rules=(('act_batch', ('data', 'fsdp')),)")
  assert unsharded["params_bytes"] == sharded["num_params"] * 4
  # Sharded 8 ways but for what has no 'embed' axis (as for ViT-H/14 above).
  whole = 1000 + 2 * (768 + 3 * 192)
  assert sharded["params_bytes"] == (sharded["num_params"] - whole) * 4 / 8 + whole * 4


def test_bad_override_is_one_line_with_exit_2(tmp_path):
  result = helpers.run_subprocess(
      ["-m", "vit_jax.cli.memory", "--config=configs/pretrain.py:b16,imagenet2012",
       "--num_devices=8", "--config.mesh.fsdp=3"], devices=1)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: Mesh")
