"""Parameter trees as '/'-joined flat dicts, and fitting one model's parameters to another
(the start of fine-tuning): the part every model family shares."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import numpy as np
from flax import traverse_util

from vit_jax.errors import UserError

Params = Mapping[str, Any]
HEAD_PREFIXES = ("head/", "head_dist/")
# At most this many problems of each kind are listed by name in a "does not fit" error;
# the rest are counted (another architecture can differ in hundreds of tensors).
MAX_LISTED = 3


def flatten(params: Params) -> dict[str, Any]:
  return traverse_util.flatten_dict(nn.unbox(dict(params)), sep="/")


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  return traverse_util.unflatten_dict(dict(flat), sep="/")


def head_classes(params: Params) -> Optional[int]:
  """The classes of a parameter tree's head (None: a headless, feature-only tree)."""
  return params["head"]["kernel"].shape[-1] if "head" in params else None


def summarise_problems(what: str, problems: list[str]) -> str:
  """'what: a1; a2; (and N more missing); b1; ...': problems grouped by their first word
  (missing, unexpected, shape mismatch), at most MAX_LISTED named per group."""
  groups: dict[str, list[str]] = {}
  for problem in sorted(problems):
    kind = "shape mismatch" if problem.startswith("shape mismatch") else problem.split(" ")[0]
    groups.setdefault(kind, []).append(problem)
  parts = []
  for kind, items in groups.items():
    parts += items[:MAX_LISTED]
    if len(items) > MAX_LISTED:
      parts.append(f"and {len(items) - MAX_LISTED} more {kind}")
  return f"{what}: " + "; ".join(parts)


Resizer = Callable[[str, np.ndarray, Any], Optional[np.ndarray]]


def fit_params(restored: Params, init: Params, *, reset_head: bool = False,
               notes: Optional[list[str]] = None, resize: Optional[Resizer] = None,
               droppable: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
  """Fits restored (pre-trained) params to a freshly initialised model's params:

  - the head (`head/`, `head_dist/`) is replaced by the fresh one when the class count
    differs, it is missing, or `reset_head`;
  - `resize(key, value, init_value)` may return a resized value for a shape that differs
    (a family's position embeddings), and appends its own note;
  - restored keys under a `droppable` prefix that the model lacks are dropped (the
    prefix's value is the note);
  - anything else that does not fit raises one error listing (the first few of) every
    missing key, unexpected key and shape mismatch.
  Each change made is described in `notes` (when given), for the run's log.
  """
  restored_flat, init_flat = flatten(restored), flatten(init)
  result, problems, changes = {}, [], []

  def note(text):
    if text not in changes:
      changes.append(text)
  for key, init_value in init_flat.items():
    is_head = key.startswith(HEAD_PREFIXES)
    if key not in restored_flat:
      if is_head:
        result[key] = init_value
        note(f"new head {tuple(init_flat['head/kernel'].shape)} (the checkpoint has none)")
      else:
        problems.append(f"missing {key} {tuple(init_value.shape)}")
      continue
    value = np.asarray(restored_flat[key])
    if is_head and (reset_head or value.shape != tuple(init_value.shape)):
      value = init_value
      note(f"replaced the head {tuple(restored_flat['head/kernel'].shape)} by a fresh "
           f"{tuple(init_flat['head/kernel'].shape)}")
    elif value.shape != tuple(init_value.shape) and resize is not None:
      resized = resize(key, value, init_value)
      value = value if resized is None else resized
    if tuple(value.shape) != tuple(init_value.shape):
      problems.append(f"shape mismatch {key}: checkpoint {tuple(value.shape)} vs model "
                      f"{tuple(init_value.shape)}")
      continue
    # The fresh head is kept as it is (it may be an abstract shape in a dry-run check).
    result[key] = value if value is init_value else np.asarray(value, dtype=init_value.dtype)
  for key in restored_flat.keys() - init_flat.keys():
    prefix = next((p for p in (droppable or {}) if key.startswith(p)), None)
    if prefix is not None:
      note(droppable[prefix])
    else:
      problems.append(f"unexpected {key} {tuple(np.shape(restored_flat[key]))}")
  if problems:
    raise UserError(summarise_problems(
        f"Checkpoint does not fit the model ({len(problems)} difference(s))", problems))
  if notes is not None:
    notes.extend(sorted(changes))
  return unflatten(result)
