"""Grid sweeps: one workdir per point, each trained by `python -m vit_jax.main` in its own
process (resumable: a finished point leaves its record, `record_finished`), and the
results table and plot with the best point selected on the validation split. The command: vit_jax.cli.sweep."""
from __future__ import annotations

import ast
import csv
import io
import itertools
import json
import contextlib
import os
import subprocess
import sys
import time
from typing import Any, Optional

from etils import epath

from vit_jax import console, storage
from vit_jax.runtime import workdir as workdir_lib
from vit_jax.errors import UserError



def parse_grid(specs: list[str]) -> list[tuple[str, list[Any]]]:
  """['lr=0.001,0.003', 'model.dropout_rate=0,0.1'] -> [(field, values), ...]."""
  grid = []
  for spec in specs:
    field, sep, values = spec.partition("=")
    if not sep or not field or not values:
      raise UserError(f"--grid={spec!r}: write FIELD=VALUE,VALUE,... (e.g. lr=0.001,0.003).")
    grid.append((field.removeprefix("config."), [_literal(v) for v in values.split(",")]))
  if len({field for field, _ in grid}) != len(grid):
    raise UserError("Each field may appear in one --grid only.")
  return grid


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_shard(text: str) -> tuple[int, int]:
  """'K/N' -> (K, N): every N-th item from the K-th (--shard of sweeps and suites)."""
  try:
    index, count = (int(v) for v in text.split("/"))
  except ValueError:
    raise UserError(f"--shard={text!r}: write K/N, e.g. 0/4.") from None
  if not 0 <= index < count:
    raise UserError(f"--shard={text!r}: K must be in [0, N).")
  return index, count


def points(grid: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
  fields = [field for field, _ in grid]
  return [dict(zip(fields, combo)) for combo in itertools.product(*(v for _, v in grid))]


def point_name(point: dict[str, Any]) -> str:
  return ",".join(f"{field}={value}" for field, value in point.items()).replace("/", "_")


def check_fields(config, grid) -> None:
  """Every swept field exists in the config, before any point runs."""
  for field, _ in grid:
    node = config
    for part in field.split("."):
      if not hasattr(node, "keys") or part not in node:
        import difflib  # pylint: disable=g-import-not-at-top
        close = difflib.get_close_matches(part, list(node.keys()) if hasattr(node, "keys")
                                          else [], n=1)
        hint = f"; did you mean {field.rsplit(part, 1)[0]}{close[0]}?" if close else "."
        raise UserError(f"--grid field {field!r} is not in the config (no {part!r}){hint}")
      node = node[part]


def run_point(config_arg: str, workdir: epath.Path, point: dict,
              passthrough: list[str], on_progress=None) -> float:
  """Trains one point to the end (or resumes it); returns its wall time in seconds. Its
  console goes to console.log in its workdir (appended: a resumed point keeps both);
  `on_progress(line)` gets each progress and eval line as it comes."""
  workdir.mkdir(parents=True, exist_ok=True)
  args = [sys.executable, "-m", "vit_jax.main", f"--config={config_arg}", f"--workdir={workdir}",
          *passthrough, *(f"--config.{field}={value}" for field, value in point.items())]
  start = time.perf_counter()
  log_path = workdir / "console.log"
  remote = storage.is_remote(log_path)  # an object: written whole when the point ends.
  earlier = log_path.read_bytes() if remote and log_path.exists() else b""
  output = []
  with (contextlib.nullcontext() if remote else log_path.open("a")) as log:
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1)
    for text in process.stdout:
      if remote:
        output.append(text)
      else:
        log.write(text)
        log.flush()  # followed live (tail -f).
      if on_progress and text.startswith(("[#", "[-", "eval step")):
        on_progress(text.rstrip("\n"))
    returncode = process.wait()
  if remote:
    storage.write_bytes(log_path, earlier + "".join(output).encode())
  if returncode:
    raise RuntimeError(f"exit status {returncode}; see {log_path}")
  wall = time.perf_counter() - start
  record_finished(workdir, point, wall)
  return wall


def record_finished(workdir: epath.Path, point: dict, wall: float) -> None:
  """A run of a sweep or suite is done: its point and wall time, what a rerun skips by."""
  storage.write_text(workdir / workdir_lib.SWEEP_RESULT,
                     json.dumps({"point": point, "wall_seconds": wall}))


def finished(workdir: epath.Path) -> Optional[dict]:
  """A finished run's record ({'point', 'wall_seconds'}; None: not finished)."""
  path = workdir / workdir_lib.SWEEP_RESULT
  return json.loads(path.read_text()) if path.exists() else None


def finished_wall(workdir: epath.Path) -> Optional[float]:
  """A finished point's wall time in seconds (None: not finished)."""
  record = finished(workdir)
  return None if record is None else record["wall_seconds"]


def summarise(workdir: epath.Path) -> dict[str, Any]:
  """The final `val` and `test` accuracies, the final few-shot accuracies and the median
  img/s, from a point's metrics.jsonl. (No best-over-time test accuracy: choosing by it
  would select on the test set.)"""
  rows = workdir_lib.read_metrics(workdir)
  speeds = sorted(r["images_per_sec"] for r in rows if "images_per_sec" in r)
  summary: dict[str, Any] = {"val_accuracy": None, "test_accuracy": None,
                             "img_per_s": speeds[len(speeds) // 2] if speeds else None}
  for row in rows:
    summary.update({k: v for k, v in row.items() if k in ("val_accuracy", "test_accuracy")
                    or ("shot" in k and k.endswith("accuracy"))})
  return summary


def select(table: list[dict]) -> Optional[dict]:
  """The point with the best final validation accuracy (None without a validation split)."""
  scored = [row for row in table if row.get("val_accuracy") is not None]
  return max(scored, key=lambda row: row["val_accuracy"]) if scored else None


def collect(root: epath.Path, grid) -> list[dict[str, Any]]:
  """One row per finished point, in grid order."""
  table = []
  for point in points(grid):
    workdir = root / point_name(point)
    wall = finished_wall(workdir)
    if wall is None:
      continue
    table.append({**point, **summarise(workdir), "wall_s": wall})
  return table


def format_value(value) -> str:
  if isinstance(value, float):
    return f"{value:.4f}" if value < 10 else f"{value:,.0f}"
  return "" if value is None else str(value)


def write_table(root: epath.Path, table: list[dict], grid) -> None:
  first = ["val_accuracy", "test_accuracy"]
  last = ["img_per_s", "wall_s"]
  shots = sorted({k for row in table for k in row if "shot" in k})
  columns = [field for field, _ in grid] + first + shots + last
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=columns)
  writer.writeheader()
  writer.writerows(table)
  storage.write_text(root / "results.csv", text.getvalue())
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  swept = {field for field, _ in grid}
  lines += ["| " + " | ".join(str(row[c]) if c in swept else format_value(row.get(c))
                              for c in columns) + " |" for row in table]
  best = select(table)
  if best is None:
    lines += ["", "No validation split (val_accuracy): nothing selected; the test accuracy "
              "of every point is shown, and choosing by it would select on the test set."]
  else:
    name = ", ".join(f"{field}={best[field]}" for field, _ in grid)
    lines += ["", f"Selected on the validation split (highest final val_accuracy): {name}, "
              f"val_accuracy {format_value(best['val_accuracy'])}, its test_accuracy "
              f"{format_value(best.get('test_accuracy'))}."]
  storage.write_text(root / "results.md", "\n".join(lines) + "\n")


def write_plot(root: epath.Path, table: list[dict], grid) -> Optional[str]:
  """Final accuracy against the first swept field, one line per value of the others."""
  if not table:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  x_field, x_values = grid[0]
  # The split hyper-parameters are chosen on (test only when there is no validation split).
  metric = "val_accuracy" if select(table) is not None else "test_accuracy"
  numeric = all(isinstance(v, (int, float)) and v > 0 for v in x_values)
  fig, ax = plt.subplots(figsize=(6, 4))
  others = grid[1:]
  order = lambda r: tuple(values.index(r[f]) for f, values in others)  # noqa: E731
  for key, rows in itertools.groupby(sorted(table, key=order),
                                     key=lambda r: tuple(r[f] for f, _ in others)):
    rows = [r for r in rows if r[metric] is not None]
    xs = [r[x_field] if numeric else x_values.index(r[x_field]) for r in rows]
    label = ", ".join(f"{f}={v}" for (f, _), v in zip(others, key)) or metric
    ax.plot(xs, [r[metric] for r in rows], marker="o", label=label)
  if numeric and max(x_values) / min(x_values) >= 2.5:
    ax.set_xscale("log")  # learning rates and step counts are swept geometrically.
  ax.set_xticks(x_values if numeric else range(len(x_values)), [str(v) for v in x_values])
  ax.minorticks_off()
  ax.set_xlabel(x_field)
  ax.set_ylabel(f"final {metric.replace('_', ' ')}")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, dpi=120, format="png")
  plt.close(fig)
  path = root / "results.png"
  storage.write_bytes(path, png.getvalue())
  return os.fspath(path)


def sweep(config, config_arg: str, root: epath.Path, grid, passthrough: list[str], *,
          shard=(0, 1), report_only: bool = False) -> int:
  """Runs (or resumes) this shard's points of `grid` over `config` (loaded from
  `config_arg` with `passthrough` overrides, which every point gets too)."""
  check_fields(config, grid)
  root.mkdir(parents=True, exist_ok=True)
  todo = points(grid)[shard[0]::shard[1]]
  failures = 0
  for i, point in enumerate(todo):
    if report_only:
      break
    workdir = root / point_name(point)
    if finished_wall(workdir) is not None:
      console.line(f"[{i + 1}/{len(todo)}] {point_name(point)}: finished earlier, skipped")
      continue
    console.line(f"[{i + 1}/{len(todo)}] {point_name(point)}: training ...")
    prefix = f"[{i + 1}/{len(todo)}] {point_name(point)}: "
    try:
      wall = run_point(config_arg, workdir, point, passthrough,
                       on_progress=lambda text, prefix=prefix: console.line(prefix + text))
    except RuntimeError as e:
      console.warn(f"[{i + 1}/{len(todo)}] {point_name(point)}: failed ({e})")
      failures += 1
      continue
    summary = summarise(workdir)
    console.line(f"[{i + 1}/{len(todo)}] {point_name(point)}: val_accuracy "
                 f"{format_value(summary['val_accuracy'])}, test_accuracy "
                 f"{format_value(summary['test_accuracy'])} in {wall:.0f}s")
  table = collect(root, grid)
  write_table(root, table, grid)
  plot = write_plot(root, table, grid)
  console.line(f"{len(table)} of {len(points(grid))} points finished: {root}/results.md, "
               f"results.csv" + (", results.png" if plot else ""))
  console.line((root / "results.md").read_text().rstrip("\n"))
  return 1 if failures else 0
