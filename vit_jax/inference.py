"""Loading a trained model for inference: from a run's workdir or a published `.npz`."""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Optional, Sequence

import ml_collections
import numpy as np

from vit_jax.errors import UserError
from vit_jax import npz_format
from vit_jax import checkpoints
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
  """`checkpoint`: a workdir (model, labels and preprocessing from its config.json) or an
  `.npz` (then `model_name` is required; classes, resolution and head type are read off
  the parameter shapes)."""
  checkpoint = os.path.expanduser(checkpoint)
  if checkpoint.endswith(".npz"):
    if not model_name:
      raise UserError("An .npz checkpoint needs --model (e.g. ViT-B_16).")
    params = npz_format.load_npz(checkpoint)
    model = _model_from_npz(model_name, params)
    grid = math.isqrt(params["Transformer"]["posembed_input"]["pos_embedding"].shape[1]
                      - (1 if "cls" in params else 0))
    size = grid * model.pixels_per_patch()
    loaded = LoadedModel(model, params, f"to_rgb|resize({size})|value_range(-1, 1)", None)
  elif os.path.isdir(checkpoint):
    config = config_lib.from_run(checkpoint)
    params, _ = checkpoints.restore_params_as_numpy(checkpoint)
    model = create_model(model_name or config.model_name,
                         num_classes=params["head"]["kernel"].shape[-1], **config.model)
    loaded = LoadedModel(model, params, config.pp_eval, _dataset_labels(config), config)
  else:
    raise UserError(f"Checkpoint {checkpoint!r} is neither a workdir nor an .npz file.")
  if labels_file:
    loaded.label_names = read_labels_file(labels_file)
  return loaded


def _model_from_npz(model_name: str, params: dict):
  return create_model(model_name, num_classes=npz_format.head_classes(params),
                      **npz_format.model_overrides(params))


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
