"""Checkpoints by name on the Hugging Face Hub: `hf-hub:ORG/NAME[@REVISION]` (any
transformers model directory or timm repository) and `timm/NAME` (timm's own repositories).
Resolved through `huggingface_hub`'s cache (`HF_HOME` / `HF_HUB_CACHE`); with
`HF_HUB_OFFLINE=1` a cached model needs no network, and one not cached is one line."""
from __future__ import annotations

import os

from vit_jax import storage
from vit_jax.errors import UserError

PREFIX = "hf-hub:"


def is_hub_name(name: str) -> bool:
  name = os.fspath(name)
  return name.startswith(PREFIX) or (name.startswith("timm/")
                                     and not storage.path(name).exists())


def _offline() -> bool:
  from huggingface_hub import constants  # pylint: disable=g-import-not-at-top
  value = os.environ.get("HF_HUB_OFFLINE")
  return constants.HF_HUB_OFFLINE if value is None else value.upper() in ("1", "ON", "YES",
                                                                           "TRUE")


def snapshot(name: str) -> str:
  """The local directory of a Hub model's weights and configs (downloaded when online)."""
  try:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
    from huggingface_hub import errors  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f"{name!r} is a Hub name; pip install huggingface_hub.") from None
  repo, _, revision = os.fspath(name).removeprefix(PREFIX).partition("@")
  offline = _offline()
  try:
    return huggingface_hub.snapshot_download(
        repo, revision=revision or None, cache_dir=os.environ.get("HF_HUB_CACHE"),
        allow_patterns=["*.json", "*.safetensors", "*.txt"], local_files_only=offline)
  except errors.LocalEntryNotFoundError:
    where = os.environ.get("HF_HUB_CACHE") or huggingface_hub.constants.HF_HUB_CACHE
    raise UserError(f"{name!r} is not in the Hub cache ({where})" + (
        " and HF_HUB_OFFLINE=1: run once online, or unset HF_HUB_OFFLINE." if offline else
        ": the Hub could not be reached.")) from None
  except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as e:
    raise UserError(f"{name!r}: no such model on the Hub ({type(e).__name__}).") from None
