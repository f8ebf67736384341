"""Evaluating a checkpoint with a config's evaluators, on the config's mesh, with the
training shardings (FSDP, tensor parallelism): the same setup as training
(`setup.prepare`), then the parameters restored straight onto the mesh."""
from __future__ import annotations

from typing import Optional, Sequence

from vit_jax.convert import read
from vit_jax.evaluators import common as evaluators_lib
from vit_jax.trainer import setup


def evaluate_checkpoint(config, checkpoint: str, *, names: Sequence[str] = (),
                        step: Optional[int] = None) -> tuple[int, dict]:
  """(step, {name_metric: value}) of the chosen evaluators (default: all not disabled)
  on `checkpoint`: a run (its parameters of `step`, default the newest) or anything
  `vit_jax.convert.read` takes, whose architecture and normalisation the config adopts."""
  read_checkpoint = read(checkpoint, model_name=config.model_name, step=step)
  if read_checkpoint.config is not None:  # a run: its config already holds what it adopted.
    run = setup.prepare(config, read_pretrained=False)
  else:
    run = setup.prepare(config, checkpoint=read_checkpoint,
                        num_classes=read_checkpoint.num_classes)
  params = read_checkpoint.placed(run.built.state.abstract.params)
  context = evaluators_lib.EvalContext(run.config, run.built)
  results = {}
  for scheduled in evaluators_lib.build_evaluators(run.config.evals, context,
                                                   only=tuple(names)):
    results.update(scheduled.run(params).scalars)
  return read_checkpoint.step or 0, results
