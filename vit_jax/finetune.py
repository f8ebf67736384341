"""Fine-tuning's start: another model's parameters, adapted and placed on the mesh.

`config.pretrained` is anything `vit_jax.convert.read` takes. A checkpoint that describes
itself (a run's workdir, converted .npz, Hugging Face, timm, big_vision) also sets the
architecture and the input normalisation (`adopt_pretrained`), so
`--config.pretrained=dinov2.npz` needs no model flags; a published .npz fits the config's
model.
"""
from __future__ import annotations

import os
import re
from typing import Any

import jax
import numpy as np

from vit_jax import checkpoints, convert, metrics, npz_format
from vit_jax.errors import UserError

_READ: dict[str, convert.Checkpoint] = {}  # read once per process: adopt, then load.


def _key(path: str) -> str:
  return os.path.abspath(os.path.expanduser(path))


def read_pretrained(path: str) -> convert.Checkpoint:
  if _key(path) not in _READ:
    _READ[_key(path)] = convert.read(_key(path))
  return _READ[_key(path)]


def _normalised(pp: str, op: str) -> str:
  """`pp` with its final [-1, 1] scaling replaced by the checkpoint's normalisation."""
  return re.sub(r"value_range\(\s*-1(\.0)?\s*,\s*1(\.0)?\s*\)\s*$", op, pp) if pp else pp


def adopt_pretrained(config):
  """`config` with the architecture and input normalisation of a self-describing
  `config.pretrained` (unchanged for published .npz files and runs)."""
  if not config.pretrained:
    return config
  checkpoint = read_pretrained(config.pretrained)
  if not checkpoint.self_described:
    return config
  return adopt(config, checkpoint)


def adopt(config, checkpoint: convert.Checkpoint):
  """`config` with `checkpoint`'s architecture and input normalisation."""
  from vit_jax.pretrained import preprocessing_for  # pylint: disable=g-import-not-at-top
  op = preprocessing_for(checkpoint).normalise_op
  config = config.copy_and_resolve_references()
  with config.unlocked():
    arch = dict(checkpoint.arch)
    config.model_name = arch.pop("family")
    for key, value in arch.items():
      config.model[key] = tuple(value) if isinstance(value, list) else value
    config.pp_train, config.pp_eval = _normalised(config.pp_train, op), _normalised(config.pp_eval, op)
    for evaluator in config.evals.values():
      if evaluator.get("pp"):
        evaluator.pp = _normalised(evaluator.pp, op)
  checkpoint.notes.append(f"architecture and input normalisation ({op}) from the checkpoint")
  return config.lock()


def load_pretrained(config, model, init_params: Any, grid: tuple[int, int]) -> Any:
  """`config.pretrained` adapted to `model`: position embeddings resampled to its grid
  with the checkpoint's method, the head replaced (see
  `npz_format.adapt_for_finetuning`); each change logged."""
  checkpoint = read_pretrained(config.pretrained)
  notes = list(checkpoint.notes)
  posemb_prefix = getattr(model, "posemb_prefix", True)
  prefix = (int(model.has_class_token) + int(model.distillation_token)
            if hasattr(model, "has_class_token") and posemb_prefix else 0)
  fixed_grid = getattr(model, "posemb_grid", None)  # a learned grid resampled at run time.
  adapted = npz_format.adapt_for_finetuning(
      checkpoint.params, init_params, target_grid=tuple(fixed_grid or grid),
      reset_head=config.reset_head, notes=notes, num_prefix_tokens=prefix,
      method=getattr(model, "posemb_resample", "bilinear"),
      antialias=getattr(model, "posemb_antialias", False))
  if fixed_grid and tuple(fixed_grid) != tuple(grid) and getattr(model, "posemb", "") == "learned":
    notes.append(f"its {fixed_grid[0]}x{fixed_grid[1]} position embeddings are resampled to "
                 f"the {grid[0]}x{grid[1]} input grid at run time ({model.posemb_resample}"
                 f"{', antialiased' if model.posemb_antialias else ''})")
  metrics.log_line(f"Fine-tuning from {checkpoint.source}" + "".join(f"; {n}" for n in notes))
  _READ.pop(_key(config.pretrained), None)  # free the host copy.
  return adapted


def check_exists(pretrained: str) -> None:
  """Before any work: the checkpoint to fine-tune from is there."""
  path = os.path.expanduser(pretrained)
  if not os.path.exists(path):
    raise UserError(f"pretrained={pretrained!r}: no such file or directory.")
  if convert.is_run_directory(path):
    checkpoints.latest_complete_step(path)  # raises when it holds no checkpoint.


def place(tree: Any, shardings: Any) -> Any:
  """Host numpy (the same on every process) -> arrays with `shardings`."""
  def put(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree, shardings)
