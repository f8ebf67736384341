"""The evaluator seam: evaluators named in the config, run on the training mesh and
parameter shardings.

    config.evals = {"test": {"type": "classification", "every": 1000, ...},
                    "fewshot": {"type": "fewshot", "every": 10000, "shots": (5, 10)},
                    "mine": {"type": "my_package.my_eval", "every": 500, ...}}

`type` is a module of this package or any importable dotted path; the module defines
`Evaluator(context: EvalContext, **settings)` with `run(params) -> dict`: float values are
scalars (written as <name>_<key>), arrays of shape (1, H, W, 3) are images (TensorBoard),
2-D arrays are tables (`<name>_<key>.csv` in the workdir).
Every process calls `run`; the parameters are the sharded training parameters, or their
moving average for an evaluator with `params='ema'` (a run with `ema_decay` gives each
classification evaluator an `<name>_ema` twin).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from vit_jax.data import pipeline, sources
from vit_jax.errors import UserError
from vit_jax.plugins import import_plugin


@dataclasses.dataclass
class EvalContext:
  """What an evaluator may use: the run's config, the model and its jitted-on-mesh
  functions (`built`: a `vit_jax.trainer.build.Built`), and the run's data sources."""
  config: Any
  built: Any
  _sources: dict = dataclasses.field(default_factory=dict)

  @property
  def model(self):
    return self.built.model

  def source(self, dataset: str = "", label_key: str = ""):
    """'' is the run's own dataset (with its data_dir and label_key)."""
    if (dataset, label_key) not in self._sources:
      self._sources[dataset, label_key] = sources.from_config(self.config, dataset or None,
                                                              label_key or None)
    return self._sources[dataset, label_key]

  def eval_data(self, *, dataset: str = "", split: str = "", pp: str = "",
                batch_size: int = 0, label_key: str = ""):
    """A padded, exactly-counted eval split; '' / 0 fall back to the run's test_split,
    pp_eval and eval_batch_size."""
    return pipeline.eval_dataset(self.source(dataset, label_key),
                                 split=split or self.config.test_split,
                                 pp=pp or self.config.pp_eval,
                                 global_batch_size=batch_size or self.config.eval_batch_size,
                                 pp_modules=self.config.pp_modules)


  def example_images(self, count: int, *, split: str = "", pp: str = ""):
    """The first `count` images of an eval split, as the model takes them (figures)."""
    data = self.eval_data(split=split, pp=pp, batch_size=count * jax.process_count())
    return next(iter(data))["image"][:count]


@dataclasses.dataclass
class Scheduled:
  name: str
  every: int             # N > 0: every N steps and at the end; 0: at the end; -1: never.
  evaluator: Any
  params: str = "live"   # 'live': the trained parameters; 'ema': their moving average.

  def run(self, params, ema_params=None) -> Results:
    """The evaluator's results on `params` (or on `ema_params`, as it asks)."""
    if self.params == "ema":
      if ema_params is None:
        raise UserError(f"evals.{self.name} asks for params='ema' but these parameters "
                        f"have no moving average (set ema_decay when training).")
      params = ema_params
    return split_results(self.name, self.evaluator.run(params))

  def due(self, step: int, *, final: bool) -> bool:
    if self.every < 0:
      return False
    return final or (self.every > 0 and step % self.every == 0)


def evaluator_class(kind: str) -> Callable:
  module = import_plugin(kind, package="vit_jax.evaluators", what="Evaluator type",
                         known="a built-in one (classification, fewshot, knn, real, figures, "
                               "reconstruction), ")
  if not hasattr(module, "Evaluator"):
    raise UserError(f"Evaluator module {module.__name__} defines no `Evaluator` class.")
  return module.Evaluator


def build_evaluators(evals: Any, context: EvalContext, *,
                     only: tuple[str, ...] = ()) -> list[Scheduled]:
  """config.evals -> evaluators, checked and set up (datasets opened) before training."""
  scheduled = []
  for name in sorted(evals):
    if only and name not in only and not (name == "test" and "val" in only):
      continue
    # Unset (None) settings take the evaluator's own default: one home for each.
    settings = {k: v for k, v in dict(evals[name]).items() if v is not None}
    if "type" not in settings:
      raise UserError(f"evals.{name} has no 'type' (e.g. 'classification').")
    kind, every = settings.pop("type"), int(settings.pop("every", 0))
    params = settings.pop("params", None) or "live"
    if params not in ("live", "ema"):
      raise UserError(f"evals.{name}.params={params!r} is not one of 'live', 'ema'.")
    if params == "ema" and not context.config.get("ema_decay"):
      raise UserError(f"evals.{name}.params='ema' needs a moving average: set ema_decay "
                      f"(e.g. 0.999).")
    if every < 0 and not only:
      continue
    cls = evaluator_class(kind)
    try:
      evaluator = cls(context, **settings)
    except TypeError as e:
      raise UserError(f"evals.{name} (type {kind!r}): {e}") from None
    scheduled.append(Scheduled(name, every, evaluator, params))
    if name == "test" and kind == "classification" and "val" not in evals:
      val_split = context.config.get("val_split") or ""
      if val_split and (not only or "val" in only):  # `val`: the test evaluator on val_split.
        scheduled.append(Scheduled("val", every, cls(context, **{**settings,
                                                                 "split": val_split}), params))
  if only:
    unknown = sorted(set(only) - {s.name for s in scheduled})
    if unknown:
      raise UserError(f"No evaluator named {unknown}; the config has "
                      f"{sorted(set(evals) | ({'val'} if context.config.get('val_split') else set()))}.")
    scheduled = [s for s in scheduled if s.name in only]
  if context.config.get("ema_decay"):  # each classification evaluator's EMA twin.
    scheduled += [Scheduled(f"{s.name}_ema", s.every, s.evaluator, "ema") for s in scheduled
                  if s.params == "live" and f"{s.name}_ema" not in evals
                  and type(s.evaluator).__module__.endswith("evaluators.classification")]
  return scheduled


@dataclasses.dataclass
class Results:
  scalars: dict        # {name_key: float}
  images: dict         # {name_key: (1, H, W, 3) array}, to TensorBoard.
  tables: dict         # {name_key: 2-D array}, e.g. a confusion matrix, to CSV files.


def split_results(name: str, results: dict) -> Results:
  """An evaluator's results, sorted by what they are: 0-d scalars, 2-d tables, images."""
  out = Results({}, {}, {})
  for key, value in results.items():
    if np.ndim(value) >= 3:
      out.images[f"{name}_{key}"] = value
    elif np.ndim(value) == 2:
      out.tables[f"{name}_{key}"] = np.asarray(value)
    else:
      out.scalars[f"{name}_{key}"] = float(value)
  return out


def table_csv(table: np.ndarray, label_names=None) -> str:
  """A confusion matrix (true class x predicted class) as CSV: one row per true class,
  its counts per predicted class and its accuracy."""
  names = list(label_names or []) + [str(i) for i in range(len(label_names or []), len(table))]
  lines = ["true \\ predicted," + ",".join(names) + ",accuracy"]
  for i, row in enumerate(table):
    total = row.sum()
    accuracy = f"{row[i] / total:.4f}" if total else ""
    lines.append(f"{names[i]}," + ",".join(str(int(v)) for v in row) + f",{accuracy}")
  return "\n".join(lines) + "\n"


def at_patch_sizes(patch_sizes, make, run_one) -> Callable:
  """An evaluator's results at each of `patch_sizes` (FlexiViT), as p<size>_<key>; ()
  the model's own, under plain keys. `make(patch_size)` builds what `run_one(it, params)`
  evaluates."""
  sizes = tuple(int(s) for s in patch_sizes) or (None,)
  made = {size: make(size) for size in sizes}

  def run(params) -> dict:
    if sizes == (None,):
      return run_one(made[None], params)
    return {f"p{size}_{key}": value for size, it in made.items()
            for key, value in run_one(it, params).items()}
  return run
