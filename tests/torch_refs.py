"""timm and transformers as offline references, on CPU-only machines too.

PyPI's torchvision wheels are CUDA builds whose C++ ops fail to register against the CPU
torch wheel ('operator torchvision::nms does not exist'), and both timm and transformers
import torchvision (for data transforms, never for model code). `import_references()`
puts an inert stand-in for torchvision in place first when the real one cannot load, so
the reference *models* build and run unchanged; nothing here touches their numerics.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import subprocess
import sys
import types


class _AnyAttribute(type):
  def __getattr__(cls, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return type(name, (_Anything,), {})


class _Anything(metaclass=_AnyAttribute):
  """Any attribute, call, subscript or base class: what import-time code of timm and
  transformers does with torchvision names (enum members as dict keys, subclassing)."""

  def __init__(self, *args, **kwargs):
    pass

  def __init_subclass__(cls, **kwargs):
    pass

  def __class_getitem__(cls, item):
    return cls

  def __getattr__(self, name):
    return _Anything()

  def __call__(self, *args, **kwargs):
    return _Anything()


class _StubModule(types.ModuleType):
  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    if name == "__version__":
      return "0.0"
    return type(name, (_Anything,), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  def find_spec(self, fullname, path=None, target=None):
    if fullname == "torchvision" or fullname.startswith("torchvision."):
      return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
    return None

  def create_module(self, spec):
    module = _StubModule(spec.name)
    module.__path__ = []
    module.__version__ = "0.0"
    return module

  def exec_module(self, module):
    pass


def _torchvision_loads() -> bool:
  """Whether the installed torchvision imports (checked in a child: a failed import
  leaves torch's operator registry half-written in this process)."""
  return subprocess.run([sys.executable, "-c", "import torchvision"],
                        capture_output=True).returncode == 0


def import_references():
  """(torch, timm, transformers), torchvision stubbed out where it cannot load."""
  if "torchvision" not in sys.modules and not _torchvision_loads():
    sys.meta_path.insert(0, _StubFinder())
  import torch  # pylint: disable=g-import-not-at-top
  import timm  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_grad_enabled(False)
  return torch, timm, transformers
