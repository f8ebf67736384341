"""A checkpoint ready for inference: model, parameters, preprocessing and label names
(`vit_jax.cli.predict` and `visualize`)."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional, Sequence

import jax
import ml_collections
import numpy as np

from vit_jax import console, storage
from vit_jax.convert import hub
from vit_jax.convert.checkpoint import read
from vit_jax.convert.pretrained import model_for
from vit_jax.data import sources
from vit_jax.data.folder_stats import IMAGE_EXTENSIONS
from vit_jax.errors import UserError
from vit_jax.models import naflex
from vit_jax.pp import builder
from vit_jax.pp import naflex as naflex_pp
from vit_jax.pp.images import UnreadableImageError, load_image
from vit_jax.runtime import workdir


@dataclasses.dataclass
class LoadedModel:
  model: Any                      # a Flax module from vit_jax.models.create_model.
  params: dict
  pp: str                         # uint8 image -> model input (the run's pp_eval).
  label_names: Optional[list[str]]
  config: Optional[ml_collections.ConfigDict] = None

  def label(self, index: int) -> str:
    if self.label_names and index < len(self.label_names):
      return self.label_names[index]
    return str(index)


def read_labels_file(path: str) -> list[str]:
  """One label per line, in class-index order (local or in a bucket)."""
  return [line.strip() for line in storage.path(path).read_text().splitlines() if line.strip()]


def load(checkpoint: str, *, model_name: Optional[str] = None,
         labels_file: Optional[str] = None,
         max_num_patches: Optional[int] = None) -> LoadedModel:
  """Any checkpoint `vit_jax.convert.read` takes; a run brings its labels (its dataset's
  class names) and its eval preprocessing. `model_name` is needed only for the published
  R50 hybrids. `max_num_patches`: NaFlex inputs of this patch budget (a NaFlex model's
  own budget changed, or a ViT with a learned position grid fed aspect-kept sequences)."""
  read_checkpoint = read(checkpoint, model_name=model_name)
  config = read_checkpoint.config
  labels = (read_labels_file(labels_file) if labels_file else
            _carried_labels(checkpoint, read_checkpoint.num_classes) or
            (_dataset_labels(config) if config is not None else None))
  model, pp = model_for(read_checkpoint), read_checkpoint.pp
  if max_num_patches is not None:
    if not getattr(model, "posemb_grid", None):
      raise UserError(f"max_num_patches={max_num_patches}: {checkpoint} is not a ViT with a "
                      f"learned position grid, which NaFlex inputs need.")
    pp = naflex_pp.to_sequence(pp, max_num_patches, model.token_patch_size, rebudget=True)
  return LoadedModel(model, read_checkpoint.params, pp, labels, config)


def _carried_labels(checkpoint: str, num_classes: Optional[int]) -> Optional[list[str]]:
  """Class names that came with the checkpoint: a run's labels.txt (written when it
  trained), a Hugging Face directory's id2label; None where they do not fit the head."""
  try:
    directory = storage.path(hub.snapshot(checkpoint) if hub.is_hub_name(checkpoint)
                             else checkpoint)
    if not directory.is_dir():
      return None
    names = None
    if (directory / workdir.LABELS).exists():
      names = read_labels_file(directory / workdir.LABELS)
    elif (directory / workdir.CONFIG).exists():
      id2label = workdir.read_config(directory).get("id2label") or {}
      names = [id2label[k] for k in sorted(id2label, key=int)] if id2label else None
  except (OSError, ValueError, UserError):
    return None
  return names if names and (num_classes is None or len(names) == num_classes) else None


def _dataset_labels(config) -> Optional[list[str]]:
  try:
    return sources.from_config(config).label_names
  except (ValueError, RuntimeError, OSError):
    return None  # labels fall back to class indices.


def preprocess_files(paths: Sequence[str], pp: str) -> tuple[Any, list[str], dict]:
  """Image files -> (batch in the model's input format: images, or NaFlex patches with
  their coordinates; readable paths; {path: error})."""
  pp_fn = builder.build(pp)
  examples, ok, errors = [], [], {}
  for path in paths:
    try:
      image = load_image(path)
    except UnreadableImageError as e:
      errors[path] = str(e)
      continue
    examples.append(pp_fn({"image": image, "label": 0, "seed": (0, 0)}))
    ok.append(path)
  if not examples:
    return np.zeros((0,)), ok, errors
  return naflex.stacked_input(examples), ok, errors


def padded_batches(paths: Sequence[str], pp: str, batch_size: int, *, progress: bool = False):
  """Yields (images padded to `batch_size` rows: one compiled shape for every batch,
  the chunk's paths, its readable paths (the first rows), {path: error}) for each chunk
  of `batch_size` paths; with `progress`, a console line after each."""
  start = time.perf_counter()
  for first in range(0, len(paths), batch_size):
    chunk = list(paths[first:first + batch_size])
    images, ok_paths, errors = preprocess_files(chunk, pp)
    if ok_paths:  # zero rows (NaFlex: all-zero coordinates, a finite 1x1 grid).
      images = jax.tree.map(lambda x: np.concatenate(
          [x, np.zeros((batch_size - len(x),) + x.shape[1:], x.dtype)]), images)
    yield images, chunk, ok_paths, errors
    if progress:
      done, seconds = min(first + batch_size, len(paths)), time.perf_counter() - start
      rate = done / max(seconds, 1e-9)
      console.line(f"{done:,}/{len(paths):,} images | {rate:,.0f} img/s | ETA "
                   f"{(len(paths) - done) / rate:,.0f} s")


def image_paths(inputs) -> list[str]:
  """Files as given; folders -> their images (recursively, sorted); globs -> matches."""
  paths = []
  for item in inputs:
    if any(c in item for c in "*?["):
      parts = item.split("/")
      wild = next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))
      base = "/".join(parts[:wild]) or "."
      matches = sorted(str(p) for p in storage.path(base).glob("/".join(parts[wild:]))
                       if p.is_file())
      if not matches:
        raise UserError(f"{item!r} matches no file.")
      paths += matches
    elif storage.path(item).is_dir():
      found = sorted(str(p) for p in _walk(storage.path(item))
                     if p.name.lower().endswith(IMAGE_EXTENSIONS))
      if not found:
        raise UserError(f"{item} holds no .jpg/.jpeg/.png image.")
      paths += found
    else:
      paths.append(item)
  return paths


def _walk(directory):
  """Every file under `directory` (epath has no recursive glob on buckets)."""
  for child in directory.iterdir():
    if child.is_dir():
      yield from _walk(child)
    else:
      yield child
