"""A checkpoint ready for inference: model, parameters, preprocessing and label names
(`vit_jax.cli.predict` and `visualize`)."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import ml_collections
import numpy as np

from vit_jax import storage
from vit_jax.convert.checkpoint import read
from vit_jax.convert.pretrained import model_for
from vit_jax.data import sources
from vit_jax.pp import builder
from vit_jax.pp.images import UnreadableImageError, load_image


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
         labels_file: Optional[str] = None) -> LoadedModel:
  """Any checkpoint `vit_jax.convert.read` takes; a run brings its labels (its dataset's
  class names) and its eval preprocessing. `model_name` is needed only for the published
  R50 hybrids."""
  read_checkpoint = read(checkpoint, model_name=model_name)
  config = read_checkpoint.config
  labels = read_labels_file(labels_file) if labels_file else (
      _dataset_labels(config) if config is not None else None)
  return LoadedModel(model_for(read_checkpoint), read_checkpoint.params, read_checkpoint.pp,
                     labels, config)


def _dataset_labels(config) -> Optional[list[str]]:
  try:
    return sources.from_config(config).label_names
  except (ValueError, RuntimeError, OSError):
    return None  # labels fall back to class indices.


def preprocess_files(paths: Sequence[str], pp: str) -> tuple[np.ndarray, list[str], dict]:
  """Image files -> (batch in the model's input format, readable paths, {path: error})."""
  pp_fn = builder.build(pp)
  images, ok, errors = [], [], {}
  for path in paths:
    try:
      image = load_image(path)
    except UnreadableImageError as e:
      errors[path] = str(e)
      continue
    example = pp_fn({"image": image, "label": 0, "seed": (0, 0)})
    images.append(np.asarray(example["image"]))
    ok.append(path)
  return (np.stack(images) if images else np.zeros((0,))), ok, errors
