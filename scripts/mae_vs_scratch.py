r"""Pre-training without labels, measured offline: MAE and the ViT paper's masked patch
prediction (MPP) on the 60k MNIST images against supervised MNIST pre-training and
training from scratch, each fine-tuned on the digits and on a held-out image folder.

    python scripts/mae_vs_scratch.py --workdir=/tmp/mae_vs_scratch \
        --fashion_idx=/usr/share/datasets/fashion-mnist [--json=OUT] [--skip_training]

Pre-training (ViT-digits, 4x4 patches at 16 px): configs/mae_pretrain.py (MAE, 3,000
steps), configs/mae_pretrain.py:mpp (MPP, 3,000 steps), configs/mnist_pretrain.py
(supervised, 1,500 steps). Fine-tuning, the same recipe from each start and from scratch:
configs/digits_finetune.py (200 labelled digits, 300 SGD steps, 24 px), and the same
recipe on a Fashion-MNIST folder (--fashion_idx: the idx files of the Debian package
dataset-fashion-mnist or of zalandoresearch/fashion-mnist; the first 600 training and
next 200 images of each class as train/ and test/, 28 px grayscale, resized to 16 px;
1,000 steps). Then the compute: the train step's FLOPs per image from XLA, MAE against a
supervised step of the same encoder, at 16 px (ViT-digits) and, through the TPU compiler
(libtpu, no TPU needed), ViT-B/16 at 224 px on a v5e-8 (MAE's ViT-B decoder: 8 blocks of
width 512). Every run is a plain `python -m vit_jax.main` in its own workdir; a rerun
skips finished ones. Prints a table (and JSON with --json).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PRETRAINING = {"mae": ("configs/mae_pretrain.py:mae", {}),
               "mpp": ("configs/mae_pretrain.py:mpp", {}),
               "supervised": ("configs/mnist_pretrain.py", {})}
FASHION = {"dataset": "folder:{folder}", "train_split": "train", "val_split": "",
           "test_split": "test", "pp_train": "to_rgb|inception_crop(16, area_min=70)|"
           "value_range(-1, 1)", "pp_eval": "to_rgb|resize(16)|value_range(-1, 1)",
           "total_steps": 1000, "warmup_steps": 50, "eval_batch_size": 500}


def make_fashion_folder(idx_dir: pathlib.Path, out: pathlib.Path, train: int = 600,
                        test: int = 200) -> pathlib.Path:
  """The first `train` and next `test` Fashion-MNIST training images of each class as
  PNGs, out/{train,test}/<class>/."""
  if (out / "test").is_dir():
    return out
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  names = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle-boot")
  images = np.frombuffer(gzip.open(idx_dir / "train-images-idx3-ubyte.gz").read(), np.uint8,
                         offset=16).reshape(-1, 28, 28)
  labels = np.frombuffer(gzip.open(idx_dir / "train-labels-idx1-ubyte.gz").read(), np.uint8,
                         offset=8)
  for label, name in enumerate(names):
    index = np.flatnonzero(labels == label)[:train + test]
    for i, j in enumerate(index):
      folder = out / ("train" if i < train else "test") / name
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(images[j]).save(folder / f"{j}.png")
  return out


def _train(config: str, workdir: pathlib.Path, point: dict) -> float:
  """One run to its end (skipped when finished); its wall seconds."""
  from vit_jax.tuning import grid  # pylint: disable=import-outside-toplevel
  wall = grid.finished_wall(workdir)
  if wall is None:
    print(f"training {workdir.name} ...", flush=True)
    wall = grid.run_point(config, workdir, point, [])
    grid.record_finished(workdir, point, wall)
  return wall


def _result(workdir: pathlib.Path) -> dict:
  from vit_jax.runtime import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  from vit_jax.tuning import grid  # pylint: disable=import-outside-toplevel
  final = json.loads((workdir / workdir_lib.FINAL).read_text())
  return {**final, "img_per_s": grid.summarise(workdir)["img_per_s"],
          "wall_s": grid.finished_wall(workdir)}


def offline(workdir: pathlib.Path, folder: pathlib.Path, skip_training: bool) -> dict:
  results = {"pretraining": {}, "digits": {}, "fashion": {}}
  starts = {"scratch": None}
  for name, (config, point) in PRETRAINING.items():
    run = workdir / f"pretrain_{name}"
    if not skip_training:
      _train(config, run, point)
    results["pretraining"][name] = _result(run)
    starts[name] = run
  fashion = {k: v.format(folder=folder) if isinstance(v, str) else v
             for k, v in FASHION.items()}
  for task, point in (("digits", {}), ("fashion", fashion)):
    for name, start in starts.items():
      run = workdir / f"{task}_{name}"
      if not skip_training:
        _train("configs/digits_finetune.py",
               run, {**point, **({"pretrained": str(start)} if start else {})})
      results[task][name] = _result(run)
  return results


def step_flops() -> dict:
  """Train-step FLOPs per image, XLA's count: MAE (encoder on the visible 25%) against the
  supervised step of the same encoder."""
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_platforms", "cpu")
  from vit_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from vit_jax.bench import memory_plan  # pylint: disable=import-outside-toplevel
  from vit_jax.runtime import accelerators  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, str(ROOT))
  from vit_jax.configs import mae_pretrain, mnist_pretrain  # pylint: disable=import-outside-toplevel
  rows = {}
  cpu = jax.devices()[:1]
  for name, config in (("mae", mae_pretrain.get_config()), ("supervised",
                                                             mnist_pretrain.get_config())):
    config = config_lib.with_overrides(config, {"batch_size": 256})
    result = memory_plan.plan(config, cpu, resolution=16, num_classes=10)
    rows[f"ViT-digits 16px {name}"] = {"gflops_per_image": result["flops_per_device"] / 256 / 1e9}
  devices = memory_plan.topology_devices("v5e:2x4")
  chip = accelerators.chip_of_device(devices[0])
  base = config_lib.base_config()
  base.update(model_name="ViT-B_16", batch_size=1024, optimizer="adam")
  base.model.dtype = "bfloat16"
  base.evals = {}
  for name, overrides in (("mae", {"objective": "mae", "model.posemb": "sincos2d_mae"}),
                          ("supervised", {})):
    config = config_lib.with_overrides(base, overrides)
    result = memory_plan.plan(config, devices, resolution=224, num_classes=1000)
    line = memory_plan.roofline(result, chip) or {}
    rows[f"ViT-B/16 224px {name} (v5e-8, TPU compiler)"] = {
        "gflops_per_image": result["flops_per_device"] * len(devices) / 1024 / 1e9,
        "hbm_gib_per_chip": result["total_bytes"] / 2**30,
        "roofline_img_per_s": line.get("images_per_second")}
  return rows


def _pct(value) -> str:
  return "-" if value is None else f"{100 * value:.1f}%"


def table(results: dict) -> str:
  p, d, f = results["pretraining"], results["digits"], results["fashion"]
  lines = ["| start | pre-training (MNIST 60k) | pre-train img/s | pre-train wall | "
           "digits test (200 labels) | Fashion folder test |", "|---|---|---|---|---|---|"]
  described = {"mae": f"MAE, no labels (val reconstruction {p['mae']['val_loss']:.3f}, "
                      f"10-NN {_pct(p['mae'].get('knn_10nn_accuracy'))})",
               "mpp": f"masked patch prediction, no labels (colour accuracy "
                      f"{_pct(p['mpp'].get('val_colour_accuracy'))}, 10-NN "
                      f"{_pct(p['mpp'].get('knn_10nn_accuracy'))})",
               "supervised": f"supervised (MNIST test {_pct(p['supervised'].get('test_accuracy'))})",
               "scratch": "none (from scratch)"}
  for name in ("scratch", "supervised", "mae", "mpp"):
    pre = p.get(name, {})
    speed = f"{pre['img_per_s']:,.0f}" if pre.get("img_per_s") else "-"
    wall = f"{pre['wall_s']:.0f} s" if pre.get("wall_s") else "-"
    lines.append(f"| {name} | {described[name]} | {speed} | {wall} | "
                 f"{_pct(d[name]['test_accuracy'])} | {_pct(f[name]['test_accuracy'])} |")
  flops = results.get("flops", {})
  if flops:
    lines += ["", "| train step | GFLOP / image | HBM / chip | roofline img/s |",
              "|---|---|---|---|"]
    for name, row in flops.items():
      hbm = f"{row['hbm_gib_per_chip']:.2f} GiB" if row.get("hbm_gib_per_chip") else "-"
      roof = f"{row['roofline_img_per_s']:,.0f}" if row.get("roofline_img_per_s") else "-"
      lines.append(f"| {name} | {row['gflops_per_image']:.4g} | {hbm} | {roof} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", default="/tmp/mae_vs_scratch")
  parser.add_argument("--fashion_idx", default="/usr/share/datasets/fashion-mnist")
  parser.add_argument("--json", default=None)
  parser.add_argument("--skip_training", action="store_true")
  parser.add_argument("--skip_flops", action="store_true")
  args = parser.parse_args()
  workdir = pathlib.Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  folder = make_fashion_folder(pathlib.Path(args.fashion_idx), workdir / "fashion_folder")
  results = offline(workdir, folder, args.skip_training)
  if not args.skip_flops:
    results["flops"] = step_flops()
  print(table(results))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
