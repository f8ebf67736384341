"""What one training step needs, without the hardware: the trainer's own step (the `build`
path) compiled ahead of time for a set of devices, and what the compiled program says.

Two kinds of devices: simulated CPU devices (XLA:CPU's view of activations), or the
devices of a TPU topology that libtpu compiles for on any machine, TPU or not (MaxText's
`train_compile.py` idea): then HBM per chip, FLOPs and bytes per step, the collectives
and a roofline come from the TPU compiler itself.
"""
from __future__ import annotations

import importlib.util
import math
import re
import time
from typing import Optional

from vit_jax.errors import UserError, first_line

# Topology names libtpu takes: generation, then chips per side (v4 / v5p: a 3-D torus).
GENERATIONS = {"v4": 3, "v5e": 2, "v5p": 3, "v6e": 2}
EXAMPLES = "v5e:2x2, v5e:2x4 (v5e-8), v5e:16x16 (v5e-256), v4:2x2x2, v5p:4x4x4, v6e:16x16"
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all",
               "collective-permute")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}


def topology_devices(name: str, *, num_slices: int = 1) -> list:
  """The devices of TPU topology `name` (e.g. 'v5e:16x16') x `num_slices`, for the TPU
  compiler; one UserError line when libtpu is missing or the name is not a topology."""
  generation, _, shape = name.partition(":")
  sides = shape.split("x") if shape else []
  if (generation not in GENERATIONS or len(sides) != GENERATIONS[generation]
      or not all(s.isdigit() and int(s) > 0 for s in sides)):
    raise UserError(f"--topology={name!r} is not a TPU topology name: "
                    f"<generation>:<chips per side>, with generation one of "
                    f"{list(GENERATIONS)} (v4 and v5p have 3 sides), e.g. {EXAMPLES}.")
  if num_slices < 1:
    raise UserError(f"--num_slices={num_slices} must be at least 1.")
  if importlib.util.find_spec("libtpu") is None:
    import jax  # pylint: disable=g-import-not-at-top
    raise UserError(f"--topology needs the TPU compiler (libtpu), which runs on any "
                    f"machine: pip install 'jax[tpu]=={jax.__version__}'.")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    return list(topologies.get_topology_desc(platform="tpu", topology_name=name,
                                             num_slices=num_slices).devices)
  except Exception as e:  # pylint: disable=broad-except  (JaxRuntimeError from libtpu)
    raise UserError(f"--topology={name!r}: the TPU compiler refused it "
                    f"({first_line(e, 200)}); e.g. {EXAMPLES}.") from None


def plan(config, devices, *, resolution: int, num_classes: int) -> dict:
  """Per-device bytes (and, where the compiler reports them, FLOPs, bytes accessed and
  collectives) of the trainer's step for `config` compiled for `devices`."""
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.trainer import build as build_lib, resolve, setup  # pylint: disable=g-import-not-at-top
  from vit_jax.models import lora  # pylint: disable=g-import-not-at-top

  mesh = sharding_lib.make_mesh(dict(config.mesh), devices=devices)
  setup.check_batch_size(config, mesh, num_data_shards=1)
  resolved = resolve.resolve(config)  # uint8 input, normalised in the step, as trained.
  built = build_lib.build(resolved.config, mesh, num_classes=num_classes,
                          image_shape=build_lib.example_shape(resolved.config, resolution),
                          host_pp_train=resolved.host_pp_train,
                          input_affine=resolved.input_affine)

  def per_device(tree):
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
               for x in jax.tree.leaves(tree))

  abstract = built.state.abstract
  result = {
      "model": config.model_name, "mesh": dict(mesh.shape), "batch": config.batch_size,
      "resolution": resolution, "devices": len(devices),
      "device_kind": devices[0].device_kind,
      "num_params": built.state.num_params,
      "num_param_arrays": len(jax.tree.leaves(abstract.params)),
      "params_bytes": per_device(abstract.params),
      "optimizer_bytes": per_device(abstract.opt_state),
      "batch_bytes": per_device(built.abstract_batch(config.batch_size)),
      "unsharded_state_fraction": sharding_lib.unsharded_fraction(abstract, "fsdp"),
      "state_bytes_total": built.state.num_bytes,
  }
  start = time.perf_counter()
  try:
    compiled = built.compile_train_step()
  except Exception as e:  # pylint: disable=broad-except  (the TPU compiler's OOM)
    if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
      raise
    return {**result, "fits": False, "compile_seconds": time.perf_counter() - start,
            "compiler_error": first_line(e, 400)}
  result["compile_seconds"] = time.perf_counter() - start
  analysis = compiled.memory_analysis()
  result.update({
      "temp_bytes": int(analysis.temp_size_in_bytes),
      "argument_bytes": int(analysis.argument_size_in_bytes),
      "output_bytes": int(analysis.output_size_in_bytes),
      "alias_bytes": int(analysis.alias_size_in_bytes),
      "code_bytes": int(getattr(analysis, "generated_code_size_in_bytes", 0) or 0),
  })
  result["total_bytes"] = (result["argument_bytes"] + result["output_bytes"]
                           - result["alias_bytes"] + result["temp_bytes"] + result["code_bytes"])
  result.update(_costs(compiled))
  hlo = compiled.as_text()
  result["collectives"] = collectives(hlo)
  result["matmul_operand_dtypes"] = matmul_dtypes(hlo)
  # Pallas kernels (Mosaic) in the program: the TPU flash attention, where chosen.
  result["tpu_kernels"] = hlo.count('custom_call_target="tpu_custom_call"')
  model = lora.unwrapped(built.objective.backbone(built.model))
  result["attention_implementation"] = getattr(model, "attention_implementation", None)
  result["analytical_flops_per_device"] = _analytical_flops(built, config.batch_size) / len(devices)
  if config.model.get("scan_layers") and "flops_per_device" in result:
    # XLA's cost analysis counts a loop's body once: a scanned encoder's costs are those
    # of one block. The whole step's: two and three unrolled blocks compiled, the third
    # block's costs (the difference) counted for every block past the second.
    result["collectives_in_program"] = result["collectives"]
    result.update(_scanned_costs(config, devices, model.num_layers, resolution=resolution,
                                 num_classes=num_classes))
  return result


def _scanned_costs(config, devices, layers: int, *, resolution: int,
                   num_classes: int) -> dict:
  # Two and three blocks: a middle block's costs (the first and last fuse with the
  # embedding and the head, so one block against two misjudges bytes by a third).
  first = min(2, layers)
  costs = []
  for count in (first, first + 1):
    trial = config.copy_and_resolve_references()
    with trial.unlocked():
      trial.model.num_layers, trial.model.scan_layers = count, False
    costs.append(plan(trial, devices, resolution=resolution, num_classes=num_classes))
  one, two = costs
  if "flops_per_device" not in one or "flops_per_device" not in two:
    # No whole-step costs (the unrolled blocks did not compile): none shown.
    return {"flops_per_device": None, "bytes_accessed_per_device": None}
  layers -= first - 1  # counted from the first unrolled program on.
  grow = lambda a, b: a + (layers - 1) * (b - a)  # noqa: E731  (the last block, repeated)
  none = {"count": 0, "bytes": 0, "largest": 0}
  found = {}
  for kind in set(one["collectives"]) | set(two["collectives"]):
    a, b = one["collectives"].get(kind, none), two["collectives"].get(kind, none)
    found[kind] = {"count": grow(a["count"], b["count"]), "bytes": grow(a["bytes"], b["bytes"]),
                   "largest": max(a["largest"], b["largest"])}
  return {"flops_per_device": grow(one["flops_per_device"], two["flops_per_device"]),
          "bytes_accessed_per_device": grow(one["bytes_accessed_per_device"],
                                            two["bytes_accessed_per_device"]),
          "collectives": {k: v for k, v in sorted(found.items()) if v["count"]},
          "costs_from_unrolled_blocks": True,
          "cost_compile_seconds": one["compile_seconds"] + two["compile_seconds"]}


def _costs(compiled) -> dict:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  if not cost:
    return {}
  return {"flops_per_device": float(cost.get("flops", 0.0)),
          "bytes_accessed_per_device": float(cost.get("bytes accessed", 0.0))}


def _analytical_flops(built, batch: int) -> float:
  """3 x the model's forward FLOPs (matmuls and attention) per step: what training needs."""
  try:
    return 3.0 * built.forward_flops() * batch
  except ValueError:  # not a ViT (hybrids, other families): no analytical count.
    return 0.0


def collectives(hlo: str) -> dict[str, dict[str, int]]:
  """{kind: {'count', 'bytes', 'largest'}} of the collectives in compiled HLO text, per
  device: each op's result shapes (an async op counted once, at its start), and the
  largest single result. Static counts: the body of a loop (scanned blocks) is counted
  once, not once per iteration."""
  found = {kind: {"count": 0, "bytes": 0, "largest": 0} for kind in COLLECTIVES}
  pattern = re.compile(r"=\s*(\(.*?\)|\S+)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
  for line in hlo.splitlines():
    match = pattern.search(line)
    if not match:
      continue
    shapes = [math.prod(int(d) for d in dims.split(",") if d) * _BYTES.get(dtype, 4)
              for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", match.group(1))]
    found[match.group(2)]["count"] += 1
    # An async start returns (operand, result, ...): the result is the largest.
    size = max(shapes) if match.group(3) else sum(shapes)
    found[match.group(2)]["bytes"] += size
    found[match.group(2)]["largest"] = max(found[match.group(2)]["largest"], max(shapes))
  return {k: v for k, v in found.items() if v["count"]}


def matmul_dtypes(hlo: str) -> dict[str, int]:
  """{operand dtype: count} of the matmuls (dot, convolution) in compiled HLO text: a
  config that computes in bfloat16 should show no f32 (accumulation in f32 is the
  result type, not the operands')."""
  # Compiled HLO names its operands without their types: each name's type from where
  # it is defined.
  types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", hlo))
  found: dict[str, int] = {}
  for operands in re.findall(r"\s(?:dot|convolution)\(([^)]*)\)", hlo):
    names = re.findall(r"%([\w.\-]+)", operands)
    dtypes = sorted({types.get(name, "?") for name in names}) or ["?"]
    key = "/".join(dtypes)
    found[key] = found.get(key, 0) + 1
  return found


def roofline(result: dict, chip) -> Optional[dict]:
  """Step time and images/s at the chip's roofs (FLOPs at peak bf16, bytes at HBM
  bandwidth; the slower bounds the step), and the MFU that would be."""
  if chip is None or not result.get("flops_per_device"):
    return None
  compute = result["flops_per_device"] / chip.peak_bf16_flops
  memory = result["bytes_accessed_per_device"] / chip.hbm_bandwidth
  step = max(compute, memory)
  out = {"step_seconds": step, "bound": "compute" if compute >= memory else "HBM bandwidth",
         "images_per_second": result["batch"] / step}
  if result.get("analytical_flops_per_device"):
    out["mfu"] = result["analytical_flops_per_device"] / chip.peak_bf16_flops / step
  return out


def max_batch(config, devices, *, resolution: int, num_classes: int, chip,
              limit: int = 1 << 16) -> int:
  """The largest global batch (a multiple of the batch-sharding devices) whose step fits
  the chip's HBM: doubled until it does not, then halved in between (a compile each)."""
  from vit_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  unit = sharding_lib.batch_divisor(sharding_lib.make_mesh(dict(config.mesh), devices=devices))

  def fits(batch: int) -> bool:
    trial = config.copy_and_resolve_references()
    with trial.unlocked():
      trial.batch_size = batch
    result = plan(trial, devices, resolution=resolution, num_classes=num_classes)
    return result.get("fits", True) and result["total_bytes"] <= chip.memory_bytes

  good, batch = 0, unit
  while batch <= limit and fits(batch):
    good, batch = batch, batch * 2
  bad = batch
  while good and bad - good > unit:
    middle = (good + bad) // 2 // unit * unit
    good, bad = (middle, bad) if fits(middle) else (good, middle)
  return good
