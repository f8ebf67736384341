r"""The paper's comparison in miniature: a BiT ResNet against a ViT of the same forward
FLOPs, through the same trainer, recipes and evaluators, on the offline data.

    python scripts/bit_vs_vit.py --workdir=/tmp/bit_vs_vit [--json=OUT] [--skip_training]

For each of ViT-digits and BiT-digits (5.1 vs 5.3 MFLOP per 16 px image, XLA's count):
MNIST pre-training (configs/mnist_pretrain.py, 1,500 Adam steps, labels of 60k images,
the 10-shot probe and k-NN evaluators on the digits), then the 200-label digits
fine-tuning of configs/digits_finetune.py from that run and from scratch, at the recipe's
24 px and at MNIST's 16 px. Prints accuracies, training
images/s and wall times; then, with the TPU compiler (libtpu, no TPU needed), the
fine-tuning step of the published sizes of similar compute, BiT-R50x1 and ViT-S/16, at
224 px, batch 512 on a v5e-8: FLOPs per image, HBM per chip, the roofline's img/s.
Every run is a plain `python -m vit_jax.main` in its own workdir (a rerun skips finished
ones). Writes the table, and JSON with --json.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ("ViT-digits", "BiT-digits")
# configs/mnist_pretrain.py with the label-free evaluators of the pre-trained features on
# the digits (10-shot linear probe, k-NN) at the end: a config file written to the workdir.
PROBES_CONFIG = """
import importlib.util
from vit_jax import config as config_lib
_spec = importlib.util.spec_from_file_location("mnist", {path!r})
_mnist = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mnist)
_DIGITS = dict(dataset="sklearn_digits", train_split="train", test_split="test",
               pp="to_rgb|resize(16)|value_range(-1, 1)")

def get_config(arg=None):
  c = _mnist.get_config(arg).unlock()
  c.evals.fewshot = config_lib.fewshot_eval(shots=(10,), **_DIGITS)
  c.evals.knn = config_lib.knn_eval(k=(10,), **_DIGITS)
  return c.lock()
"""


def _train(config: str, workdir: pathlib.Path, *flags: str) -> float:
  """One run (skipped when finished): its wall seconds, or the earlier run's."""
  final = workdir / "final.json"
  if final.exists():
    return json.loads((workdir / "wall.json").read_text())["seconds"]
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "vit_jax.main", f"--config={config}",
                  f"--workdir={workdir}", *flags], cwd=ROOT, check=True)
  seconds = time.perf_counter() - start
  (workdir / "wall.json").write_text(json.dumps({"seconds": seconds}))
  return seconds


def _metrics(workdir: pathlib.Path) -> dict:
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()
          if line.strip()]
  final = json.loads((workdir / "final.json").read_text())
  speeds = sorted(r["images_per_sec"] for r in rows if "images_per_sec" in r)
  return {**final, "img_per_s": speeds[len(speeds) // 2] if speeds else None}


def _forward_mflops(model: str, size: int) -> float:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from vit_jax.models import create_model, flops  # pylint: disable=import-outside-toplevel
  net = create_model(model, num_classes=10, **({"patch_size": 4} if model == "ViT-digits"
                                               else {}))
  images = jnp.zeros((1, size, size, 3))
  params = jax.eval_shape(lambda: net.init(jax.random.key(0), images))["params"]
  compiled = jax.jit(lambda p, x: net.apply({"params": p}, x)).lower(params, images).compile()
  return flops.xla_flops(compiled) / 1e6


def offline(workdir: pathlib.Path, skip_training: bool) -> dict:
  results = {}
  probes = workdir / "mnist_with_probes.py"
  probes.write_text(PROBES_CONFIG.format(path=str(ROOT / "configs" / "mnist_pretrain.py")))
  for model in MODELS:
    mnist = workdir / f"{model}_mnist"
    if not skip_training:
      results[model] = {"mnist_seconds": _train(f"{probes}:{model}", mnist)}
    results.setdefault(model, {}).update(mnist=_metrics(mnist),
                                         forward_mflops_16px=_forward_mflops(model, 16))
    # The digits recipe's 24 px (a ViT resamples its position embeddings), and MNIST's 16.
    for size in (24, 16):
      for kind, flags in (("ft", [f"--config.pretrained={mnist}"]), ("scratch", [])):
        run = workdir / f"{model}_{kind}{size}"
        if not skip_training:
          _train(f"configs/digits_finetune.py:{model}", run, f"--config.resolution={size}",
                 *flags)
        results[model][f"{kind}{size}"] = _metrics(run)
  return results


def tpu_rows() -> dict:
  """BiT-R50x1 and ViT-S/16 fine-tuning steps compiled for a v5e-8 by the TPU compiler."""
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  import importlib.util  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_platforms", "cpu")
  from vit_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from vit_jax.bench import memory_plan  # pylint: disable=import-outside-toplevel
  from vit_jax.runtime import accelerators  # pylint: disable=import-outside-toplevel
  devices = memory_plan.topology_devices("v5e:2x4")
  chip = accelerators.chip_of_device(devices[0])
  spec = importlib.util.spec_from_file_location("finetune", ROOT / "configs" / "finetune.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  rows = {}
  for model in ("bit-r50x1", "s16"):
    config = config_lib.with_overrides(module.get_config(f"{model},imagenet2012"),
                                       {"batch_size": 512})
    result = memory_plan.plan(config, devices, resolution=224, num_classes=1000)
    line = memory_plan.roofline(result, chip) or {}
    rows[config.model_name] = {
        "gflops_per_image": result["flops_per_device"] * len(devices) / 512 / 1e9,
        "hbm_gib_per_chip": result["total_bytes"] / 2**30,
        "roofline_img_per_s": line.get("images_per_second"),
        "bound": line.get("bound")}
  return rows


def _pct(value) -> str:
  return "-" if value is None else f"{100 * value:.1f}%"


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", default="/tmp/bit_vs_vit")
  parser.add_argument("--json", default=None)
  parser.add_argument("--skip_training", action="store_true",
                      help="Report the runs already in --workdir.")
  args = parser.parse_args()
  workdir = pathlib.Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  results = {"offline": offline(workdir, args.skip_training), "tpu_v5e-8": tpu_rows()}
  print("\n| model | fwd MFLOP/img (16 px) | MNIST test | 10-shot | k-NN (digits) | MNIST img/s "
        "| MNIST s | digits fine-tuned 24 px / 16 px | scratch 24 px / 16 px |")
  print("|---|---|---|---|---|---|---|---|---|")
  for model, r in results["offline"].items():
    mnist = r["mnist"]
    knn = max((v for k, v in mnist.items() if k.startswith("knn_") and "accuracy" in k),
              default=None)
    print(f"| {model} | {r['forward_mflops_16px']:.2f} | {_pct(mnist.get('test_accuracy'))} | "
          f"{_pct(mnist.get('fewshot_10shot_accuracy'))} | {_pct(knn)} | "
          f"{mnist['img_per_s']:,.0f} | {r.get('mnist_seconds', 0):.0f} | "
          f"{_pct(r['ft24'].get('test_accuracy'))} / {_pct(r['ft16'].get('test_accuracy'))} | "
          f"{_pct(r['scratch24'].get('test_accuracy'))} / "
          f"{_pct(r['scratch16'].get('test_accuracy'))} |")
  print("\n| v5e-8, batch 512, 224 px (TPU compiler) | GFLOP/img (fwd+bwd) | HBM/chip | "
        "roofline img/s |\n|---|---|---|---|")
  for model, r in results["tpu_v5e-8"].items():
    print(f"| {model} | {r['gflops_per_image']:.1f} | {r['hbm_gib_per_chip']:.2f} GiB | "
          f"{r['roofline_img_per_s']:,.0f} ({r['bound']}-bound) |")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
  main()
