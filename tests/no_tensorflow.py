"""Imported first in a subprocess, makes TensorFlow (and whatever else is appended to
HIDDEN) look uninstalled: every import finder answers 'not found' for it, as on a machine
without it (`vit_jax` without the `tfds` or `gcs` extra)."""
import sys

HIDDEN = ["tensorflow"]


class _Hidden:
  def __init__(self, finder):
    self._finder = finder

  def find_spec(self, name, path=None, target=None):
    if any(name == hidden or name.startswith(f"{hidden}.") for hidden in HIDDEN):
      return None
    return self._finder.find_spec(name, path, target)

  def __getattr__(self, attribute):
    return getattr(self._finder, attribute)


sys.meta_path[:] = [_Hidden(finder) for finder in sys.meta_path]
