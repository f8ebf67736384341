r"""NaFlex against squashing, on images of mixed aspect ratios: the same ViT trained from
scratch at the same patch budget, once on images squashed to squares and once on
aspect-kept NaFlex sequences (--config.max_num_patches), both tested on held-out images.

    python scripts/naflex_vs_squash.py --workdir=/tmp/naflex_vs_squash [--json=OUT] \
        [--plot=figure.png] [--skip_training]

The data (made offline, `vit_jax/bench/mixed_aspect.py`): MNIST digits (the first 20,000
training and 2,000 test images) each on a noisy 28x84, 84x28 or 47x47 canvas, written
as a PNG folder. ViT-digits (width 64, depth 4, 4x4 patches), the Adam recipe of
configs/mnist_pretrain.py, 1,000 steps of 256 images; at budgets of 16 and 49 patches:
squash to 16 or 28 px squares, or NaFlex with max_num_patches 16 or 49 (each image's
own grid, at most that many patches; the sequence padded to the budget). Every run is a
plain `python -m vit_jax.main`; a rerun skips finished ones. Prints a table; --plot
draws accuracy against the budget.
"""
from __future__ import annotations

import math
import pathlib

BUDGETS = (16, 49)
PATCH = 4
TRAIN, TEST = 20_000, 2_000
COMMON = {"total_steps": 1000, "warmup_steps": 60, "log_every": 100, "checkpoint_every": 500,
          "eval_batch_size": 1000}
TRAIN_PP = "to_rgb|inception_crop({size}, area_min=60)|value_range(-1, 1)"
EVAL_PP = "to_rgb|resize({size})|value_range(-1, 1)"


def runs(folder: pathlib.Path) -> dict[str, dict]:
  out = {}
  for budget in BUDGETS:
    size = math.isqrt(budget) * PATCH
    base = {**COMMON, "dataset": f"folder:{folder}", "pp_train": TRAIN_PP.format(size=size),
            "pp_eval": EVAL_PP.format(size=size)}
    out[f"squash{budget}"] = base
    out[f"naflex{budget}"] = {**base, "max_num_patches": budget}
  return out


def mean_patches(folder: pathlib.Path, budget: int) -> float:
  """The patches a NaFlex image of the test split has on average (the rest is padding)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from vit_jax.pp.ops_naflex import sequence_size  # pylint: disable=import-outside-toplevel
  counts = []
  for path in sorted((folder / "test").glob("*/*.png")):
    width, height = Image.open(path).size
    rows, cols = sequence_size(height, width, PATCH, budget)
    counts.append(rows * cols / PATCH**2)
  return sum(counts) / len(counts)


def train(workdir: pathlib.Path, skip: bool) -> dict:
  from vit_jax.bench import comparison, mixed_aspect  # pylint: disable=import-outside-toplevel
  folder = workdir / "data"
  if not (folder / "test").exists():
    print("writing the mixed-aspect folder ...", flush=True)
    mixed_aspect.write(folder, source="pureml_mnist", train=TRAIN, test=TEST)
  results = comparison.train_points("configs/mnist_pretrain.py", workdir, runs(folder), skip)
  for name, result in results.items():
    result["accuracy"] = result.pop("final")["test_accuracy"]
    if name.startswith("naflex"):
      result["mean_patches"] = mean_patches(folder, int(name.removeprefix("naflex")))
  return results


def table(results: dict) -> str:
  lines = ["| patch budget | squashed square | squash: test acc. | NaFlex: mean patches "
           "per image | NaFlex: test acc. | train img/s squash / NaFlex |",
           "|---|---|---|---|---|---|"]
  for budget in BUDGETS:
    size = math.isqrt(budget) * PATCH
    squash, naflex = results[f"squash{budget}"], results[f"naflex{budget}"]
    lines.append(f"| {budget} | {size}x{size} px | {100 * squash['accuracy']:.2f}% | "
                 f"{naflex['mean_patches']:.1f} | **{100 * naflex['accuracy']:.2f}%** | "
                 f"{squash['img_per_s']:,.0f} / {naflex['img_per_s']:,.0f} |")
  walls = ", ".join(f"{name} {r['wall_s']:.0f} s" for name, r in results.items())
  return "\n".join(lines) + f"\n\nTraining wall time: {walls}."


def plot(results: dict, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for kind, label in (("squash", "squashed to a square"), ("naflex", "NaFlex (aspect kept)")):
    ax.plot(BUDGETS, [100 * results[f"{kind}{b}"]["accuracy"] for b in BUDGETS], "o-",
            label=label)
  ax.set_xticks(BUDGETS)
  ax.set_xlabel("patch budget (4x4 patches per image)")
  ax.set_ylabel("held-out test accuracy (%)")
  ax.set_title("MNIST digits on 1:3, 3:1 and 1:1 canvases")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


if __name__ == "__main__":
  from vit_jax.bench import comparison  # pylint: disable=import-outside-toplevel
  comparison.main("/tmp/naflex_vs_squash", train, table, plot)
