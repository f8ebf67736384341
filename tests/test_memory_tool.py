"""The memory planner: ViT-H/14 on a simulated 64-device mesh, parameter bytes checked
against the analytical count (params x bytes / shards)."""
import json
import os

from tests import helpers


def test_h14_on_64_simulated_devices(tmp_path):
  out = tmp_path / "plan.json"
  result = helpers.run_subprocess(
      ["-m", "vit_jax.cli.memory", "--config=configs/pretrain.py:h14,imagenet2012",
       "--mesh=data:8,fsdp:8", "--batch=64", f"--json={out}"], devices=1, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  plan = json.loads(out.read_text())
  assert plan["num_params"] == 632_045_800 and plan["mesh"]["fsdp"] == 8
  # FSDP splits every parameter with an 'embed' axis 8 ways (the data axis replicates);
  # parameters without one stay whole: the 1000-class head, and per block the MLP's hidden
  # bias and the query/key/value biases (sharded over 'model' only, size 1 here).
  whole = (1280 * 1000 + 1000) + 32 * (5120 + 3 * 1280)
  expected = (plan["num_params"] - whole) * 4 / 8 + whole * 4
  assert plan["params_bytes"] == expected
  # Adam: first moment in bfloat16 (pretrain config), second in float32, plus two
  # replicated int32 step counters (Adam's and the schedule's).
  assert plan["optimizer_bytes"] == expected * 6 / 4 + 2 * 4
  assert plan["temp_bytes"] > 0 and plan["total_bytes"] > plan["params_bytes"]
  assert "| H100 | 80 GiB |" in result.stdout
  assert os.path.getsize(out) > 0
