"""FLOP counts (analytical vs the paper and XLA) and a CI smoke run of the benchmark."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from tests import helpers
from vit_jax.bench import profile_summary
from vit_jax.models import flops
from vit_jax.runtime import accelerators
from vit_jax.models import create_model

PAPER_GFLOPS = {"ViT-Ti_16": 2.5, "ViT-S_16": 9.2, "ViT-B_32": 8.8, "ViT-B_16": 35.1,
                "ViT-L_16": 123.1, "ViT-H_14": 334.6}


@pytest.mark.parametrize("name,gflops", sorted(PAPER_GFLOPS.items()))
def test_analytical_forward_flops_match_the_paper(name, gflops):
  model = create_model(name, num_classes=1000)
  assert flops.vit_forward_flops(model, (224, 224)) / 1e9 == pytest.approx(gflops, rel=0.01)


def test_b16_forward_flops_formula_and_xla():
  """ViT-B/16 at 224 px: 35.1 GFLOPs per image (multiply-add = 2), by the formula and by
  XLA's count of the compiled forward pass (which adds the softmax/LayerNorm/GELU
  element-wise work: measured +0.4%)."""
  model = create_model("ViT-B_16", num_classes=1000)
  d, t, mlp, layers = 768, 197, 3072, 12
  formula = (2 * 196 * 768 * 768 + layers * (2 * t * d * 3 * d + 4 * t * t * d
                                              + 2 * t * d * d + 4 * t * d * mlp)
             + 2 * d * 1000)
  analytical = flops.vit_forward_flops(model, (224, 224))
  assert analytical == formula and round(analytical / 1e9, 1) == 35.1
  params = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0),
                                                      jnp.zeros((1, 224, 224, 3)))["params"]))
  compiled = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(
      params, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)).compile()
  assert flops.xla_flops(compiled) == pytest.approx(analytical, rel=0.02)


def test_peak_table_lookup():
  class Fake:
    def __init__(self, kind):
      self.device_kind = kind
  assert accelerators.peak_flops(Fake("NVIDIA H100 80GB HBM3")) == 989e12
  assert accelerators.peak_flops(Fake("TPU v5 lite")) == 197e12
  assert accelerators.peak_flops(Fake("TPU v5p")) == 459e12
  assert accelerators.peak_flops(Fake("cpu")) is None


TINY = ["-m", "vit_jax.cli.benchmark", "--config=configs/benchmark.py:ViT-test",
        "--config.model.dtype=float32", "--resolution=16", "--warmup=1"]


def test_benchmark_smoke_prints_table_and_json(tmp_path):
  out = tmp_path / "bench.json"
  result = helpers.run_subprocess([*TINY, "--config.batch_size=8", "--steps=3", "--compare",
                                   "--host_input", "--log_every=2", f"--json={out}"])
  assert result.returncode == 0, result.stderr[-3000:]
  printed = result.stdout
  for row in ("| vit_jax |", "| vit_jax, host-fed loop |", "| minimal JAX |"):
    assert row in printed
  assert "step time / minimal JAX step time" in printed
  saved = json.loads(out.read_text())
  timing = saved["ours"]["train_step_s"]
  assert 0 < timing["min"] <= timing["median"] <= timing["max"]
  assert saved["minimal_jax"]["train_step_s"]["median"] > 0
  assert saved["host_fed"]["train_step_s"]["mean"] > 0
  assert saved["model"] == "ViT-test" and saved["batch"] == 8 and saved["dtype"] == "float32"


def _trace(events):
  meta = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
          {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}}]
  return {"traceEvents": meta + events}


def test_profile_summary_sums_device_kernels_per_step():
  trace = _trace([
      {"ph": "X", "pid": 1, "name": "nvjet_sm90_tst_128x160_NNT", "dur": 300},
      {"ph": "X", "pid": 1, "name": "nvjet_sm90_tst_128x160_NNT", "dur": 300},
      {"ph": "X", "pid": 1, "name": "cudnn_generated_fort_native_sdpa_sm90_flash_bprop", "dur": 200},
      {"ph": "X", "pid": 1, "name": "loop_convert_multiply_fusion_11", "dur": 100},
      {"ph": "X", "pid": 1, "name": "sm80_xmma_fprop_implicit_gemm_indexed", "dur": 40},
      {"ph": "X", "pid": 2, "name": "PjitFunction(train_step)", "dur": 5000},  # host: ignored
  ])
  summary = profile_summary.summarize(trace, steps=2)
  assert summary["device_us_per_step"] == pytest.approx(470)
  assert summary["classes"] == {"matmul": 300, "attention": 100,
                                "fusion (elementwise, norms, reductions)": 50,
                                "convolution": 20}
  assert summary["top_kernels"][0] == {"name": "nvjet_sm90_tst_128x160_NNT",
                                       "us_per_step": 300, "class": "matmul"}
  text = profile_summary.format_summary({**summary, "log_dir": "/tmp/x"}, 0.001)
  assert "| matmul | 0.30 | 63.8% |" in text


def test_profile_on_cpu_writes_the_step_hlo(tmp_path):
  result = helpers.run_subprocess([*TINY, "--config.batch_size=4", "--steps=1",
                                   f"--profile={tmp_path}"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Device time per step" in result.stdout
  assert "ENTRY" in (tmp_path / "train_step.hlo.txt").read_text()
