r"""FlexiViT's Figure 1 in miniature: one ViT trained with a random patch size per step
against separate models trained at each fixed patch size, all evaluated at every size.

    python scripts/flexi_vs_fixed.py --workdir=/tmp/flexi_vs_fixed [--json=OUT] \
        [--plot=figure.png] [--skip_training]

MNIST (60k, offline) at 24 px, ViT-digits (width 64, depth 4), the 1,500-step Adam recipe
of configs/mnist_pretrain.py, patch sizes 4, 6, 8, 12 (6x6 down to 2x2 tokens). FlexiViT:
the kernel stored at 8x8 and PI-resized each step, learned position embeddings on a 3x3
grid resampled (bilinear, antialiased, as big_vision). The fixed models: patch size p,
their own (24/p)^2 grid; evaluated at the other sizes through the same PI-resize (as
FlexiViT's paper shows, a standard ViT does not survive it). Train throughput per size:
the fixed model's median img/s. Every run is a plain `python -m vit_jax.main`; a rerun
skips finished ones. Prints a table; --plot draws accuracy against the time per image.
"""
from __future__ import annotations

import pathlib

SIZES = (4, 6, 8, 12)
RESOLUTION = 24
COMMON = {"resolution": RESOLUTION, "model.posemb_resample": "bilinear",
          "model.posemb_antialias": True, "evals.test.every": 0,
          "evals.test.patch_sizes": ",".join(map(str, SIZES))}


def runs() -> dict[str, dict]:
  out = {"flexi": {**COMMON, "model.patch_size": 8, "model.posemb_grid": "3,3",
                   "flexi.patch_sizes": ",".join(map(str, SIZES))}}
  for size in SIZES:
    grid = RESOLUTION // size
    out[f"fixed{size}"] = {**COMMON, "model.patch_size": size,
                           "model.posemb_grid": f"{grid},{grid}"}
  return out


def train(workdir: pathlib.Path, skip: bool) -> dict:
  from vit_jax.bench import comparison  # pylint: disable=import-outside-toplevel
  results = comparison.train_points("configs/mnist_pretrain.py", workdir, runs(), skip)
  for result in results.values():
    final = result.pop("final")
    result["accuracy"] = {s: final[f"test_p{s}_accuracy"] for s in SIZES}
  return results


def table(results: dict) -> str:
  lines = ["| patch size | tokens | train img/s (fixed model) | FlexiViT | " +
           " | ".join(f"fixed {s}" for s in SIZES) + " |",
           "|---|---|---|---|" + "---|" * len(SIZES)]
  for size in SIZES:
    tokens = (RESOLUTION // size) ** 2
    speed = results[f"fixed{size}"]["img_per_s"]
    cells = [f"{100 * results[f'fixed{s}']['accuracy'][size]:.1f}%" for s in SIZES]
    lines.append(f"| {size} | {tokens} | {speed:,.0f} | "
                 f"**{100 * results['flexi']['accuracy'][size]:.1f}%** | " + " | ".join(cells) + " |")
  walls = ", ".join(f"{name} {r['wall_s']:.0f} s" for name, r in results.items())
  return "\n".join(lines) + f"\n\nTraining wall time: {walls}."


def plot(results: dict, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  ms = {s: 1000.0 / results[f"fixed{s}"]["img_per_s"] for s in SIZES}
  fig, ax = plt.subplots(figsize=(5.5, 4))
  xs = [ms[s] for s in SIZES]
  ax.plot(xs, [100 * results["flexi"]["accuracy"][s] for s in SIZES], "o-", lw=2,
          label="FlexiViT (one model)")
  for s in SIZES:
    ax.plot(xs, [100 * results[f"fixed{s}"]["accuracy"][t] for t in SIZES], ".--",
            alpha=0.6, label=f"ViT trained at patch {s}")
  for s in SIZES:
    ax.annotate(f"p{s}", (ms[s], 100 * results["flexi"]["accuracy"][s]),
                textcoords="offset points", xytext=(4, -10), fontsize=8)
  ax.set_xscale("log")
  ax.set_xlabel("training time per image (ms, 2-core CPU, log scale)")
  ax.set_ylabel("MNIST test accuracy (%)")
  ax.set_title("One FlexiViT vs a ViT per patch size (24 px MNIST)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


if __name__ == "__main__":
  from vit_jax.bench import comparison  # pylint: disable=import-outside-toplevel
  comparison.main("/tmp/flexi_vs_fixed", train, table, plot)
