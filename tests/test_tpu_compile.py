"""The TPU compiler in the loop, on a machine without a TPU: the trainer's own step compiled
by libtpu for a deviceless TPU topology (the planner's --topology), and FSDP that shards at
pod sizes (checked on abstract meshes of 256 and 512 devices: no devices needed)."""
import json
import math

import jax
import pytest
from jax.sharding import AbstractMesh, AxisType

from tests import helpers
from vit_jax import config as config_lib
from vit_jax import sharding as sharding_lib
from vit_jax.bench import memory_plan
from vit_jax.errors import UserError
from vit_jax.trainer import build as build_lib


def test_a_small_config_compiles_for_a_v5e_topology_through_the_trainer_build(tmp_path):
  out = tmp_path / "plan.json"
  result = helpers.run_subprocess(
      ["-m", "vit_jax.cli.memory", "--config=configs/pretrain_large.py:ti16,imagenet2012",
       "--topology=v5e:2x2", "--config.batch_size=8", "--resolution=32",
       "--config.model.num_layers=2", "--config.model.scan_layers=False",
       "--config.model.attention_implementation=einsum", f"--json={out}"],
      timeout=600)  # unrolled: the compiler's costs cover the whole step.
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr.strip() == "", result.stderr[-2000:]  # libtpu's notes kept off.
  plan = json.loads(out.read_text())
  assert plan["device_kind"] == "TPU v5 lite" and plan["devices"] == 4
  assert plan["mesh"] == {"data": 1, "fsdp": 4, "model": 1}
  assert 0 < plan["total_bytes"] < 16 * 2**30 and plan["temp_bytes"] > 0
  # The TPU compiler's FLOPs against 3x the analytical forward (matmuls + attention).
  ratio = plan["flops_per_device"] / plan["analytical_flops_per_device"]
  # (a tiny model: element-wise ops, the head and norms weigh more than at B/16)
  assert 0.9 < ratio < 2.5, ratio
  assert plan["collectives"]["all-gather"]["count"] > 0  # FSDP gathers its weights.
  assert "| TPU v5e | 16 GiB | yes |" in result.stdout
  assert "roofline (TPU v5e: 197 TFLOP/s bf16, 819 GB/s HBM)" in result.stdout


@pytest.mark.parametrize("flags,message", [
    (["--topology=v9:2x2"], "--topology='v9:2x2' is not a TPU topology name"),
    (["--topology=v5e:2x2x2"], "is not a TPU topology name"),
    ([], "give --topology=NAME"),
    (["--topology=v5e:2x2", "--num_devices=4"], "not both or neither"),
])
def test_bad_planner_input_is_one_line(flags, message):
  result = helpers.run_subprocess(
      ["-m", "vit_jax.cli.memory", "--config=configs/pretrain.py:ti16,imagenet2012", *flags])
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
  assert lines[0].startswith("error: ") and message in lines[0], lines[0]


def test_without_libtpu_the_topology_names_the_pip_line(monkeypatch):
  real = memory_plan.importlib.util.find_spec
  monkeypatch.setattr(memory_plan.importlib.util, "find_spec",
                      lambda name: None if name == "libtpu" else real(name))
  with pytest.raises(UserError, match=r"pip install 'jax\[tpu\]==" + jax.__version__):
    memory_plan.topology_devices("v5e:2x2")


def test_collectives_are_read_from_compiled_hlo():
  hlo = """
  %all-gather.3 = bf16[16,1408]{1,0} all-gather(bf16[1,1408]{1,0} %p), dimensions={0}
  %ar = (f32[128]{0}, f32[64,2]{1,0}) all-reduce(f32[128]{0} %a, f32[64,2]{1,0} %b)
  %ags = (bf16[4]{0}, bf16[64]{0}) all-gather-start(bf16[4]{0} %x), dimensions={0}
  %agd = bf16[64]{0} all-gather-done((bf16[4]{0}, bf16[64]{0}) %ags)
  """
  found = memory_plan.collectives(hlo)
  assert found == {"all-gather": {"count": 2, "bytes": 16 * 1408 * 2 + 64 * 2,
                                  "largest": 16 * 1408 * 2},
                   "all-reduce": {"count": 1, "bytes": 128 * 4 + 128 * 4, "largest": 128 * 4}}


def _abstract_state(config_arg: str, mesh_shape: tuple[int, int, int], **overrides):
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location("pretrain_large",
                                                f"{helpers.REPO}/configs/pretrain_large.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(config_arg).unlock()
  for key, value in overrides.items():
    setattr(config, key, value)
  mesh = AbstractMesh(mesh_shape, sharding_lib.MESH_AXES, axis_types=(AxisType.Auto,) * 3)
  return build_lib.build(config, mesh, num_classes=1000, image_shape=(224, 224, 3)).state.abstract


def _per_device_over_even_share(abstract, devices: int) -> float:
  leaves = jax.tree.leaves((abstract.params, abstract.opt_state))
  per = sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in leaves)
  total = sum(math.prod(x.shape) * x.dtype.itemsize for x in leaves)
  return per / (total / devices)


@pytest.mark.parametrize("model,mesh_shape", [("g14", (1, 16, 16)), ("G14", (1, 32, 16))])
def test_pod_sized_fsdp_holds_at_most_1_1x_an_even_share_per_chip(model, mesh_shape):
  """g/14 on 256 chips and G/14 on 512 (v5p-512), FSDP x 16-way heads/MLP: parameters and
  optimizer state per chip within 1.1x of total / chips (before: fully replicated)."""
  abstract = _abstract_state(f"{model},imagenet2012", mesh_shape, batch_size=4096)
  assert _per_device_over_even_share(abstract, math.prod(mesh_shape)) <= 1.1


def test_a_dimension_fsdp_does_not_divide_hands_it_to_one_it_does(capsys):
  mesh = AbstractMesh((1, 8, 1), sharding_lib.MESH_AXES, axis_types=(AxisType.Auto,) * 3)
  shardings = sharding_lib.param_shardings(
      {"w": _boxed((36, 64), ("embed", None)), "qkv": _boxed((36, 3, 12), ("embed", "heads", "kv")),
       "v": _boxed((36, 16, 40), ("embed", None, "mlp"))}, mesh, config_lib.DEFAULT_SHARDING_RULES)
  assert tuple(shardings["w"].spec) == (None, "fsdp")        # moved to the dimension of 64.
  assert tuple(shardings["qkv"].spec) == (None, "model", None)  # nothing takes fsdp.
  # The largest dimension that divides (40), beside the axis it already had.
  assert tuple(shardings["v"].spec) == (None, None, ("model", "fsdp"))
  # At pod sizes, a state FSDP cannot split is said on the console.
  abstract = _abstract_state("g14,imagenet2012", (1, 256, 1), batch_size=4096)
  assert "of the training state" in capsys.readouterr().out
  assert 0.25 < sharding_lib.unsharded_fraction(abstract, "fsdp") < 0.4  # attention's q/k/v/out


def _boxed(shape, names):
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  return nn.LogicallyPartitioned(jax.ShapeDtypeStruct(shape, jax.numpy.float32), names)


def test_libtpu_on_a_machine_without_a_tpu_is_not_tried(tfds_dir, tmp_path):
  from vit_jax.runtime import accelerators  # pylint: disable=import-outside-toplevel
  none = lambda pattern: False  # noqa: E731
  assert accelerators.platforms_without_an_absent_tpu(none, libtpu_installed=True) == "cpu"
  assert accelerators.platforms_without_an_absent_tpu(
      lambda p: "nvidia" in p, libtpu_installed=True) == "cuda,cpu"
  assert accelerators.platforms_without_an_absent_tpu(
      lambda p: "accel" in p, libtpu_installed=True) is None  # a TPU VM: JAX's own choice.
  assert accelerators.platforms_without_an_absent_tpu(none, libtpu_installed=False) is None
  # A run as a user types it (no JAX_PLATFORMS), libtpu installed: not a line on stderr.
  import subprocess  # pylint: disable=import-outside-toplevel
  env = {k: v for k, v in helpers.cli_env(1).items() if k != "JAX_PLATFORMS"}
  result = subprocess.run(helpers.cli_args(tmp_path / "run", f"--config.data_dir={tfds_dir}",
                                           "--config.total_steps=3"),
                          env=env, cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0 and result.stderr.strip() == "", result.stderr[-2000:]


def _plan(config_arg: str, **overrides):
  import importlib.util  # pylint: disable=import-outside-toplevel
  path, _, argument = config_arg.partition(":")
  spec = importlib.util.spec_from_file_location("plan_config", f"{helpers.REPO}/{path}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(argument)
  with config.unlocked():
    for key, value in overrides.items():
      node, *rest = key.split(".")
      if rest:
        config[node][rest[0]] = value
      else:
        config[key] = value
  return config


def test_a_scanned_encoder_plan_counts_every_block_and_gathers_per_block():
  """XLA's cost analysis counts a loop body once; the planner's whole-step FLOPs and
  bytes for scanned blocks (from 2 and 3 unrolled blocks) equal the unrolled program's.
  Under FSDP the scanned program gathers one block's weights at a time, never the
  stacked (num_layers x) arrays."""
  devices = memory_plan.topology_devices("v5e:2x2")
  # The preset's depth (12 blocks; num_layers is not set in the config itself).
  common = {"batch_size": 8, "model.attention_implementation": "einsum"}
  config = "configs/pretrain_large.py:ti16,imagenet2012"
  scanned = memory_plan.plan(_plan(config, **common), devices, resolution=32, num_classes=10)
  unrolled = memory_plan.plan(_plan(config, **common, **{"model.scan_layers": False}),
                              devices, resolution=32, num_classes=10)
  assert scanned["costs_from_unrolled_blocks"]
  assert scanned["flops_per_device"] == pytest.approx(unrolled["flops_per_device"], rel=0.02)
  # Bytes are not additive in blocks at this size (12 unrolled blocks read 0.33 GB where
  # 2, 3 and 4 blocks grow by 0.036 GB each: the compiler combines the small FSDP
  # transfers of a longer program); the extrapolation is within 40%, one block's is not.
  assert scanned["bytes_accessed_per_device"] == pytest.approx(
      unrolled["bytes_accessed_per_device"], rel=0.4)
  assert scanned["collectives"]["all-gather"]["count"] == pytest.approx(
      unrolled["collectives"]["all-gather"]["count"], rel=0.05)
  # The largest gathered array is one block's MLP kernel (192 x 768, bf16 or f32), not
  # the twelve blocks' stacked kernel.
  one_kernel_f32 = 192 * 768 * 4
  assert scanned["collectives_in_program"]["all-gather"]["largest"] <= one_kernel_f32
  # bfloat16 compute: no float32 matmul operands.
  assert set(scanned["matmul_operand_dtypes"]) == {"bf16"}, scanned["matmul_operand_dtypes"]


def test_pallas_flash_attention_compiles_for_v5e_inside_the_train_step():
  """attention_implementation='auto' is the Pallas TPU kernel on a TPU topology for long
  sequences (24 x 24 patches + [class]): the trainer's step (FSDP over 4 chips: the
  kernel runs per shard) compiles with it."""
  devices = memory_plan.topology_devices("v5e:2x2")
  plan = memory_plan.plan(_plan("configs/pretrain.py:ti16,imagenet2012", batch_size=8,
                                **{"model.num_layers": 1, "model.patch_size": 2,
                                   "mesh.data": 1, "mesh.fsdp": 4}),
                          devices, resolution=48, num_classes=10)
  assert plan["attention_implementation"] == "pallas"
  assert plan["tpu_kernels"] >= 2  # the kernel forward, and its backward.
  assert plan["total_bytes"] < 16 * 2**30


def test_matmul_operand_dtypes_are_read_from_compiled_hlo():
  hlo = """
  %p.1 = bf16[8,192]{1,0} parameter(0)
  %p.2 = f32[192,768]{1,0} parameter(1)
  %p.3 = bf16[192,768]{1,0} parameter(2)
  %convolution.5 = f32[8,768]{1,0} convolution(%p.1, %p.3), dim_labels=bf_io->bf
  %dot.1 = f32[8,768]{1,0} dot(%p.1, %p.2), lhs_contracting_dims={1}
  """
  assert memory_plan.matmul_dtypes(hlo) == {"bf16": 1, "bf16/f32": 1}


def test_naflex_sequences_compile_for_v5e_with_the_pallas_kernel():
  """NaFlex (max_num_patches=576, 2x2 patches): the train step takes padded patch
  sequences with coordinates; the TPU kernel masks each example's own padding (segment
  ids from its length) and compiles with the per-image position-grid resize."""
  devices = memory_plan.topology_devices("v5e:2x2")
  plan = memory_plan.plan(_plan("configs/pretrain.py:ti16,imagenet2012", batch_size=8,
                                max_num_patches=576,
                                **{"model.num_layers": 1, "model.patch_size": 2,
                                   "model.posemb_grid": (8, 8), "mesh.data": 1,
                                   "mesh.fsdp": 4}),
                          devices, resolution=48, num_classes=10)
  assert plan["attention_implementation"] == "pallas"
  assert plan["tpu_kernels"] >= 2
  assert 0 < plan["total_bytes"] < 16 * 2**30
  # The analytical count is of the whole padded sequence (what is computed).
  assert plan["analytical_flops_per_device"] > 0


def test_naflex_masks_cost_no_more_hbm_than_square_images():
  """bf16 einsum attention, 576 tokens: the NaFlex step (masked attention, per-image
  position resize) holds at most 2% more HBM per v5e chip than the square step of the
  same length. Masking the float32 copy of the logits held a second copy per layer for
  the backward pass (B/16, batch 1,024, v5e-8: 11.64 GiB per chip against 8.11)."""
  devices = memory_plan.topology_devices("v5e:2x2")
  common = {"model.num_layers": 1, "model.patch_size": 2, "model.posemb_grid": (8, 8),
            "model.attention_implementation": "einsum", "model.dtype": "bfloat16",
            "mesh.data": 1, "mesh.fsdp": 4}
  square, sequences = (
      memory_plan.plan(_plan("configs/pretrain.py:ti16,imagenet2012", batch_size=8,
                             **common, **extra), devices, resolution=48, num_classes=10)
      for extra in ({}, {"max_num_patches": 576}))
  assert sequences["total_bytes"] <= 1.02 * square["total_bytes"], (
      sequences["total_bytes"], square["total_bytes"])
