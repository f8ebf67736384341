"""Plug-ins named in the config: a built-in module ('fewshot' -> vit_jax.evaluators.fewshot)
or any importable module of the user's ('my_evals', 'my_package.my_family')."""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from vit_jax.errors import UserError


def import_plugin(name: str, *, package: str | None, what: str,
                  known: str = "") -> ModuleType:
  """Imports `package.name` if the package has it, else `name` itself. A module that is
  missing is a UserError naming `what`; an import error inside an existing module keeps
  its traceback."""
  candidates = [name]
  if package and importlib.util.find_spec(f"{package}.{name.split('.')[0]}") is not None:
    candidates.insert(0, f"{package}.{name}")
  for path in candidates:
    try:
      return importlib.import_module(path)
    except ModuleNotFoundError as e:
      if e.name != path and not path.startswith(f"{e.name}."):
        raise  # the module exists, one of its own imports failed.
  where = f"a module of {package} or " if package else ""
  raise UserError(f"{what} {name!r} is not {known}{where}an importable module: fix the "
                  f"name or put its module on PYTHONPATH.")
