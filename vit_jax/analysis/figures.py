"""The paper's figures of what a ViT learns, drawn with matplotlib: attention rollout
over images, position-embedding similarity, mean attention distance per layer and head,
and the RGB embedding filters. `vit_jax.cli.visualize` writes them as PNGs; the 'figures'
evaluator writes them to TensorBoard during training."""
from __future__ import annotations

import io
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402

from vit_jax import storage  # noqa: E402
from vit_jax.analysis import attention as analysis  # noqa: E402
from vit_jax.models import family as family_lib, lora  # noqa: E402
from vit_jax.models.params import flatten  # noqa: E402


def _upsample(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  rows = np.minimum((np.arange(shape[0]) * values.shape[0]) // shape[0], values.shape[0] - 1)
  cols = np.minimum((np.arange(shape[1]) * values.shape[1]) // shape[1], values.shape[1] - 1)
  return values[rows][:, cols]


def rollout_figure(image: np.ndarray, attention_map: np.ndarray):
  """image: (H, W, 3) in [0, 1]; attention_map: (gh, gw)."""
  fig, axes = plt.subplots(1, 2, figsize=(6, 3))
  heat = _upsample(attention_map / attention_map.max(), image.shape[:2])
  axes[0].imshow(image, interpolation="nearest")
  axes[0].set_title("image")
  axes[1].imshow(image, interpolation="nearest")
  axes[1].imshow(heat, cmap="inferno", alpha=0.6, interpolation="bilinear")
  axes[1].set_title("attention rollout")
  for ax in axes:
    ax.axis("off")
  fig.tight_layout()
  return fig


def posemb_similarity_figure(similarity: np.ndarray, grid: tuple[int, int]):
  gh, gw = grid
  fig, axes = plt.subplots(gh, gw, figsize=(max(4.5, gw * 0.6), max(4.5, gh * 0.6) + 0.5),
                           squeeze=False)
  for index in range(gh * gw):
    ax = axes[index // gw][index % gw]
    ax.imshow(similarity[index].reshape(gh, gw), cmap="viridis", vmin=-1, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle("Position embedding similarity (cosine)", fontsize=10)
  fig.tight_layout(rect=(0, 0, 1, 0.95))
  return fig


def attention_distance_figure(distances: np.ndarray, patch_size: int):
  """distances: (layers, heads) in pixels."""
  fig, ax = plt.subplots(figsize=(5, 4))
  layers, heads = distances.shape
  for head in range(heads):
    ax.scatter(np.arange(layers), distances[:, head], s=12, label=f"head {head}")
  ax.set_xlabel("network depth (layer)")
  ax.set_ylabel("mean attention distance (pixels)")
  ax.set_title(f"Mean attention distance (patch size {patch_size})")
  if heads <= 16:
    ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  return fig


def embedding_filters_figure(components: np.ndarray, variance: np.ndarray):
  """components: (k, p, p, 3) principal components, each shown min-max scaled to RGB."""
  k = components.shape[0]
  cols = min(7, k)
  rows = math.ceil(k / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.3), squeeze=False)
  for index, ax in enumerate(axes.ravel()):
    ax.axis("off")
    if index < k:
      c = components[index]
      ax.imshow((c - c.min()) / max(c.max() - c.min(), 1e-12), interpolation="nearest")
      ax.set_title(f"{variance[index]:.0%}", fontsize=7)
  fig.suptitle("RGB embedding filters (first principal components)")
  return fig


def make_figures(model, params, images: np.ndarray, *, num_components: int = 28) -> dict:
  """All figures for `images` ((B, H, W, 3) in the model's [-1, 1] input range); a model
  without attention (MLP-Mixer, BiT) gets its first layer's filters only."""
  figures = {}
  names = family_lib.names(sys.modules[type(lora.unwrapped(model)).__module__])
  kernel = np.asarray(flatten(params)[names.input_kernel])
  if kernel.shape[2] == 3:  # RGB filters (the hybrid embeds ResNet features instead).
    figures["embedding_filters"] = embedding_filters_figure(
        *analysis.patch_embedding_pca(kernel, num_components))
  if "Transformer" in params:
    figures.update(_attention_figures(model, params, images))
  return figures


def _attention_figures(model, params, images: np.ndarray) -> dict:
  grid = model.patch_grid(images.shape[1], images.shape[2])
  prefix = model.num_prefix_tokens
  attentions = analysis.attention_maps(model, params, images)
  maps = analysis.rollout_map(analysis.attention_rollout(attentions), grid, prefix)
  figures = {f"attention_rollout_{i}": rollout_figure((images[i] + 1) / 2, maps[i])
             for i in range(len(images))}
  if "posembed_input" in params["Transformer"]:  # learned (not fixed or absent) embeddings.
    posemb = np.asarray(params["Transformer"]["posembed_input"]["pos_embedding"])
    posemb_grid = tuple(model.posemb_grid or grid)
    figures["position_embedding_similarity"] = posemb_similarity_figure(
        analysis.posemb_similarity(
            posemb, num_prefix_tokens=posemb.shape[1] - posemb_grid[0] * posemb_grid[1]),
        posemb_grid)
  patch = model.patch_size
  distances = np.stack([analysis.mean_attention_distance(a, grid=grid, patch_size=patch,
                                                         num_prefix_tokens=prefix)
                        for a in attentions])
  figures["mean_attention_distance"] = attention_distance_figure(distances, patch)
  return figures


def figure_to_array(fig) -> np.ndarray:
  fig.canvas.draw()
  array = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  plt.close(fig)
  return array


def write_pngs(figures: dict, out_dir: str) -> list[str]:
  """Each figure as `<out_dir>/<name>.png` (a local folder or a bucket)."""
  out = storage.path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = []
  for name, fig in figures.items():
    png = io.BytesIO()
    fig.savefig(png, dpi=120, format="png")
    plt.close(fig)
    storage.write_bytes(out / f"{name}.png", png.getvalue())
    paths.append(os.fspath(out / f"{name}.png"))
  return paths
