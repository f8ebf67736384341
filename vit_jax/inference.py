"""Loading a trained model for inference: from a run's workdir or a published `.npz`."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence

import ml_collections
import numpy as np

from vit_jax import checkpoints, convert, npz_format, pretrained
from vit_jax import config as config_lib
from vit_jax.data import preprocess, sources
from vit_jax.data.images import UnreadableImageError, load_image
from vit_jax.models import create_model


@dataclasses.dataclass
class LoadedModel:
  model: Any                      # a Flax module from vit_jax.models.create_model.
  params: dict
  pp: str                         # evaluation preprocessing of the model's training config.
  label_names: Optional[list[str]]
  config: Optional[ml_collections.ConfigDict] = None

  def label(self, index: int) -> str:
    if self.label_names and index < len(self.label_names):
      return self.label_names[index]
    return str(index)


def read_labels_file(path: str) -> list[str]:
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


def load(checkpoint: str, *, model_name: Optional[str] = None,
         labels_file: Optional[str] = None) -> LoadedModel:
  """`checkpoint`: a run's workdir (model, labels and preprocessing from its config.json),
  or any checkpoint `vit_jax.convert.read` takes (.npz, Hugging Face directory, timm
  file), whose architecture and preprocessing come from the file itself (`model_name`
  is needed only for the published R50 hybrids)."""
  checkpoint = os.path.expanduser(checkpoint)
  if convert.is_run_directory(checkpoint):
    config = config_lib.from_run(checkpoint)
    params, _ = checkpoints.restore_params_as_numpy(checkpoint)
    model = create_model(model_name or config.model_name,
                         num_classes=npz_format.head_classes(params), **config.model)
    loaded = LoadedModel(model, params, config.pp_eval, _dataset_labels(config), config)
  else:
    read = convert.read(checkpoint, model_name=model_name)
    loaded = LoadedModel(pretrained.model_for(read), read.params,
                         pretrained.preprocessing_for(read).pp, None)
  if labels_file:
    loaded.label_names = read_labels_file(labels_file)
  return loaded


def _dataset_labels(config) -> Optional[list[str]]:
  try:
    return sources.from_config(config).label_names
  except (ValueError, RuntimeError, OSError):
    return None  # labels fall back to class indices.


def preprocess_files(paths: Sequence[str], pp: str) -> tuple[np.ndarray, list[str], dict]:
  """Image files -> (batch in the model's input format, readable paths, {path: error})."""
  pp_fn = preprocess.parse(pp)
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
