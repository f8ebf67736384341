"""Fine-tuning's start: another model's parameters, adapted and placed on the mesh."""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from vit_jax import checkpoints, metrics, npz_format
from vit_jax.errors import UserError


def load_pretrained(config, init_params: Any, grid: tuple[int, int]) -> Any:
  """`config.pretrained` (an .npz or a run) adapted to the model: position embeddings
  resized to `grid`, the head replaced (see `npz_format.adapt_for_finetuning`)."""
  path = os.path.expanduser(config.pretrained)
  if path.endswith(".npz"):
    restored = npz_format.load_npz(path)
  elif os.path.isdir(path):
    restored, _ = checkpoints.restore_params_as_numpy(path)
  else:
    raise UserError(f"pretrained={config.pretrained!r} is neither a .npz file nor a "
                    f"run's workdir / checkpoint directory.")
  notes: list[str] = []
  adapted = npz_format.adapt_for_finetuning(restored, init_params, target_grid=grid,
                                            reset_head=config.reset_head, notes=notes)
  metrics.log_line(f"Fine-tuning from {path}" + "".join(f"; {note}" for note in notes))
  return adapted


def check_exists(pretrained: str) -> None:
  """Before any work: the checkpoint to fine-tune from is there."""
  path = os.path.expanduser(pretrained)
  if path.endswith(".npz") and not os.path.isfile(path):
    raise UserError(f"pretrained={pretrained!r}: no such .npz file.")
  if not path.endswith(".npz"):
    if not os.path.isdir(path):
      raise UserError(f"pretrained={pretrained!r} is neither a .npz file nor a run's "
                      f"workdir / checkpoint directory.")
    checkpoints.latest_complete_step(path)  # raises when it holds no checkpoint.


def place(tree: Any, shardings: Any) -> Any:
  """Host numpy (the same on every process) -> arrays with `shardings`."""
  def put(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree, shardings)
