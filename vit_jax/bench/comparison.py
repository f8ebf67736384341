"""The frame of the scripts that train a few configs side by side and compare them
(scripts/flexi_vs_fixed.py, scripts/naflex_vs_squash.py): each point a plain
`python -m vit_jax.main` run (a rerun skips finished ones), then a table, a plot and a
JSON of the results."""
from __future__ import annotations

import argparse
import json
import pathlib
from typing import Callable


def train_points(config_arg: str, workdir: pathlib.Path, points: dict[str, dict],
                 skip: bool) -> dict[str, dict]:
  """{name: {'final': the run's final metrics, 'img_per_s', 'wall_s'}}, training the
  points not finished yet (unless `skip`)."""
  from vit_jax.runtime import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  from vit_jax.tuning import grid  # pylint: disable=import-outside-toplevel
  results = {}
  for name, point in points.items():
    run = workdir / name
    if not skip and grid.finished_wall(run) is None:
      print(f"training {name} ...", flush=True)
      wall = grid.run_point(config_arg, run, point, [])
      grid.record_finished(run, point, wall)
    results[name] = {"final": json.loads((run / workdir_lib.FINAL).read_text()),
                     "img_per_s": grid.summarise(run)["img_per_s"],
                     "wall_s": grid.finished_wall(run)}
  return results


def main(default_workdir: str, train: Callable[[pathlib.Path, bool], dict],
         table: Callable[[dict], str], plot: Callable[[dict, str], None]) -> None:
  """The scripts' command line: --workdir, --json, --plot, --skip_training."""
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", default=default_workdir)
  parser.add_argument("--json", default=None)
  parser.add_argument("--plot", default=None)
  parser.add_argument("--skip_training", action="store_true")
  args = parser.parse_args()
  workdir = pathlib.Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  results = train(workdir, args.skip_training)
  print(table(results))
  if args.plot:
    plot(results, args.plot)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
