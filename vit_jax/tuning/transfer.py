"""A checkpoint's row of the paper's transfer table, as one resumable, shardable run:
VTAB-1k (19 tasks, `vit_jax.data.vtab`) and the paper's headline datasets.

Per task: every point of a small grid fine-tunes on the selection split and is evaluated
on the validation split (VTAB: train800 -> val200); the point with the best validation
accuracy is trained again on train + validation (VTAB: train800val200) and evaluated on
test. Each is a normal vit_jax run (`train_and_evaluate`, in this process: checkpoints,
metrics.jsonl, config.json, resumable) in `ROOT/<task>/<point>/` and `ROOT/<task>/final/`;
a finished one is skipped. `shard=(K, N)` takes every N-th task from the K-th (a task's
runs stay together: its final run needs its own selection). The report (`results.md`,
`results.csv`, `results.png`, TensorBoard) covers every task finished so far under ROOT
and lists those that are not.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import time
from typing import Optional

from etils import epath

from vit_jax import config as config_lib
from vit_jax import console, storage
from vit_jax.configs import vtab as vtab_config
from vit_jax.data import presets as presets_lib
from vit_jax.data import vtab
from vit_jax.errors import UserError, first_line
from vit_jax.runtime import workdir as workdir_lib
from vit_jax.trainer import loop
from vit_jax.tuning import grid as grid_lib

# The paper's headline datasets (ImageNet's ReaL accuracy is an evaluator of its run),
# whole: `paper/cifar100` is CIFAR-100's 50k images, VTAB's `cifar100` its 1k.
PAPER_PREFIX = "paper/"
PAPER = tuple(PAPER_PREFIX + name for name in ("imagenet2012", "cifar10", "cifar100",
                                               "oxford_iiit_pet", "oxford_flowers102"))
SUITES = {"vtab1k": tuple(vtab.TASKS), "paper": PAPER,
          **{f"vtab_{group}": tuple(names) for group, names in vtab.by_group().items()}}
# The ViT paper chose VTAB's setting from two learning rates and two schedules on val200;
# the headline datasets from the learning rates of its Table 4.
VTAB_GRID = [("lr", [0.01, 0.001]), ("total_steps", [500, 2500])]
PAPER_GRID = [("lr", [0.001, 0.003, 0.01, 0.03])]
FINAL = "final"


@dataclasses.dataclass(frozen=True)
class Run:
  task: str
  point: dict            # the grid point ({} for the final run: its chosen point follows).
  phase: str             # 'select' or 'final'.

  @property
  def name(self) -> str:
    return FINAL if self.phase == FINAL else grid_lib.point_name(self.point)


def suite_tasks(suite: str) -> list[str]:
  """'vtab1k', 'paper', 'vtab_natural' (or _specialized, _structured) or 'task,task,...'."""
  if suite in SUITES:
    return list(SUITES[suite])
  tasks = [t.strip() for t in suite.split(",") if t.strip()]
  # A headline dataset that is no VTAB task needs no prefix: 'cifar10', 'imagenet2012'.
  tasks = [PAPER_PREFIX + t if PAPER_PREFIX + t in PAPER and t not in vtab.TASKS else t
           for t in tasks]
  for name in tasks:
    if name not in vtab.TASKS and name not in PAPER:
      vtab.task(name)  # one line naming the close ones and every VTAB task.
  if not tasks:
    raise UserError(f"--suite={suite!r}: name a suite ({', '.join(SUITES)}) or tasks.")
  return tasks


def grid_of(task: str, grid: Optional[list] = None) -> list:
  """The grid a task's point is chosen from: `grid` when given (--grid), else the
  protocol's."""
  return grid or (VTAB_GRID if task in vtab.TASKS else PAPER_GRID)


def task_config(task: str, phase: str, *, model_family: str = "vit"):
  """The task's config for `phase` (a VTAB task's from configs/vtab.py, a headline
  dataset's from configs/finetune.py: its recipe, selected on its validation split and
  finally trained on train + validation)."""
  if task in vtab.TASKS:
    return vtab_config.get_config(f"{task},{phase}")
  from vit_jax.configs import finetune  # pylint: disable=g-import-not-at-top  (reads folders)
  model = "bit-r50x1" if model_family == "bit" else "b16"  # the checkpoint's comes with it.
  dataset = task.removeprefix(PAPER_PREFIX)
  config = finetune.get_config(f"{model},{dataset}").unlock()
  if phase == FINAL:
    preset = presets_lib.get_preset(dataset)
    base = preset.train_split.split("[")[0]
    config.train_split = (base if preset.val_split.startswith(f"{base}[") else
                          f"{preset.train_split}+{preset.val_split}")
    config.val_split = ""
  return config.lock()


def plan(tasks: list[str], shard=(0, 1), grid: Optional[list] = None) -> list[Run]:
  """This shard's runs, in order: each task's grid, then its final run."""
  runs = []
  for task in tasks[shard[0]::shard[1]]:
    runs += [Run(task, point, "select") for point in grid_lib.points(grid_of(task, grid))]
    runs.append(Run(task, {}, FINAL))
  return runs


def _run_config(run: Run, checkpoint: str, overrides: dict, model_family: str,
                point: dict):
  """The task's config for this run: the checkpoint, the grid point, the user's
  overrides (a VTAB config's warm-up, a tenth of its steps, follows them)."""
  config = task_config(run.task, run.phase, model_family=model_family)
  return config_lib.with_overrides(
      config, {"pretrained": checkpoint, **point, **overrides}).lock()


def check_prepared(tasks: list[str], data_dir: Optional[str]) -> None:
  """Before any work: every task's dataset is prepared, or one line listing the commands
  (nothing is downloaded here)."""
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  missing = []
  for task in tasks:
    source = sources.get_source(f"vtab:{task}" if task in vtab.TASKS else task,
                                data_dir=data_dir)
    try:
      source._check_prepared()  # pylint: disable=protected-access
    except UserError:
      note = vtab.MANUAL_DOWNLOAD.get(task)
      missing.append(f"{source._prepare_command()}" + (f" ({note})" if note else ""))  # pylint: disable=protected-access
  if missing:
    raise UserError(f"{len(missing)} dataset(s) are not prepared; prepare them once (needs "
                    f"network and TensorFlow): " + "; ".join(dict.fromkeys(missing)))


def chosen(root: epath.Path, task: str, grid: Optional[list] = None) -> Optional[dict]:
  """The task's grid point with the best validation accuracy (None until all finished)."""
  rows = []
  for point in grid_lib.points(grid_of(task, grid)):
    workdir = root / task / grid_lib.point_name(point)
    if grid_lib.finished_wall(workdir) is None:
      return None
    rows.append({**point, **grid_lib.summarise(workdir)})
  best = grid_lib.select(rows)
  return None if best is None else {k: best[k] for k, _ in grid_of(task, grid)}


def run_suite(root: epath.Path, tasks: list[str], *, checkpoint: str, overrides: dict,
              model_family: str = "vit", shard=(0, 1), grid: Optional[list] = None) -> int:
  """Runs (or resumes) this shard's runs; returns the number that failed."""
  runs = plan(tasks, shard, grid)
  failures = 0
  for i, run in enumerate(runs):
    workdir = root / run.task / run.name
    label = f"[{i + 1}/{len(runs)}] {run.task}/{run.name}"
    if grid_lib.finished_wall(workdir) is not None:
      console.line(f"{label}: finished earlier, skipped")
      continue
    point = run.point if run.phase != FINAL else chosen(root, run.task, grid)
    if point is None:
      console.warn(f"{label}: its grid did not finish; no point to train finally.")
      failures += 1
      continue
    console.line(f"{label}: training {grid_lib.point_name(point) or ''}".rstrip())
    start = time.perf_counter()
    try:
      config = _run_config(run, checkpoint, overrides, model_family, point)
      loop.train_and_evaluate(config, str(workdir))
    except UserError as e:
      console.warn(f"{label}: failed ({first_line(e)})")
      failures += 1
      continue
    grid_lib.record_finished(workdir, point, time.perf_counter() - start)
  return failures


# --- The report ------------------------------------------------------------------------
def _group(task: str) -> str:
  return vtab.TASKS[task].group if task in vtab.TASKS else "paper"


def collect(root: epath.Path, tasks: list[str],
            grid: Optional[list] = None) -> tuple[list[dict], list[str]]:
  """(one row per task with a finished final run, the tasks without one)."""
  rows, missing = [], []
  for task in tasks:
    final = root / task / FINAL
    record = grid_lib.finished(final)
    if record is None:
      missing.append(task)
      continue
    grid_points = grid_lib.points(grid_of(task, grid))
    grid_rows = [grid_lib.summarise(root / task / grid_lib.point_name(p)) for p in grid_points]
    walls = [grid_lib.finished_wall(root / task / grid_lib.point_name(p)) or 0.0
             for p in grid_points]
    val = max((r["val_accuracy"] for r in grid_rows if r["val_accuracy"] is not None),
              default=None)
    summary = grid_lib.summarise(final)
    extra = {k: v for k, v in workdir_lib.read_metrics(final)[-1].items()
             if k.startswith("real_") and k.endswith("accuracy")}
    rows.append({"task": task, "group": _group(task),
                 "chosen": grid_lib.point_name(record["point"]),
                 "val_accuracy": val, "test_accuracy": summary["test_accuracy"], **extra,
                 "steps": workdir_lib.read_config(final).get("total_steps"),
                 "wall_s": sum(walls) + record["wall_seconds"]})
  return rows, missing


def means(rows: list[dict]) -> dict[str, tuple[float, int]]:
  """{group: (mean test accuracy, tasks)} and VTAB's mean over its finished tasks."""
  found = {}
  for group in (*vtab.GROUPS, "paper"):
    values = [r["test_accuracy"] for r in rows if r["group"] == group
              and r["test_accuracy"] is not None]
    if values:
      found[group] = (sum(values) / len(values), len(values))
  vtab_values = [r["test_accuracy"] for r in rows if r["group"] in vtab.GROUPS
                 and r["test_accuracy"] is not None]
  if vtab_values:
    found["vtab"] = (sum(vtab_values) / len(vtab_values), len(vtab_values))
  return found


def _pct(value) -> str:
  return "" if value is None else f"{100 * value:.1f}"


def write_report(root: epath.Path, tasks: list[str], *, checkpoint: str,
                 grid: Optional[list] = None) -> tuple[str, dict]:
  """results.md / results.csv / results.png and TensorBoard scalars; the markdown."""
  rows, missing = collect(root, tasks, grid)
  summary = means(rows)
  columns = ["task", "group", "chosen", "val_accuracy", "test_accuracy", "steps", "wall_s"]
  extra = sorted({k for r in rows for k in r} - set(columns))
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=columns + extra)
  writer.writeheader()
  writer.writerows(rows)
  storage.write_text(root / "results.csv", text.getvalue())
  lines = [f"Transfer of {checkpoint}: chosen on the validation split, then trained on "
           f"train + validation and evaluated on test (accuracy, %).", "",
           "| task | group | chosen | val | test | steps | wall s |", "|---|---|---|---|---|---|---|"]
  lines += [f"| {r['task']} | {r['group']} | {r['chosen']} | {_pct(r['val_accuracy'])} | "
            f"{_pct(r['test_accuracy'])} | {r['steps'] or ''} | {r['wall_s']:.0f} |"
            for r in rows]
  lines += ["", "| mean | test | tasks |", "|---|---|---|"]
  for group in tasks_groups(tasks):
    if group in summary:
      total = sum(_group(t) == group for t in tasks) if group != "vtab" else sum(
          _group(t) in vtab.GROUPS for t in tasks)
      mean, count = summary[group]
      lines.append(f"| {group} | {_pct(mean)} | {count} of {total} |")
  if missing:
    lines += ["", f"Not finished ({len(missing)}): {', '.join(missing)}."]
  markdown = "\n".join(lines) + "\n"
  storage.write_text(root / "results.md", markdown)
  _plot(root, rows)
  _tensorboard(root, rows, summary)
  return markdown, summary


def tasks_groups(tasks: list[str]) -> list[str]:
  groups = [g for g in (*vtab.GROUPS, "paper") if any(_group(t) == g for t in tasks)]
  return groups + (["vtab"] if any(_group(t) in vtab.GROUPS for t in tasks) else [])


def _plot(root: epath.Path, rows: list[dict]) -> None:
  """One bar per task (test accuracy), grouped and coloured by group."""
  if not rows:
    return
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  order = sorted(rows, key=lambda r: ((*vtab.GROUPS, "paper").index(r["group"]), r["task"]))
  colours = {"natural": "tab:green", "specialized": "tab:orange", "structured": "tab:blue",
             "paper": "tab:purple"}
  fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(order)), 4))
  ax.bar(range(len(order)), [100 * (r["test_accuracy"] or 0) for r in order],
         color=[colours[r["group"]] for r in order])
  ax.set_xticks(range(len(order)), [r["task"] for r in order], rotation=60, ha="right",
                fontsize=8)
  ax.set_ylabel("test accuracy (%)")
  handles = [plt.Rectangle((0, 0), 1, 1, color=colours[g]) for g in colours
             if any(r["group"] == g for r in order)]
  ax.legend(handles, [g for g in colours if any(r["group"] == g for r in order)], fontsize=8)
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, dpi=120, format="png")
  plt.close(fig)
  storage.write_bytes(root / "results.png", png.getvalue())


def _tensorboard(root: epath.Path, rows: list[dict], summary: dict) -> None:
  from vit_jax.trainer import metric_writers  # pylint: disable=g-import-not-at-top
  writer = metric_writers.TensorBoardWriter(root, start_step=0)
  scalars = {f"transfer/{r['task']}_test_accuracy": r["test_accuracy"] for r in rows
             if r["test_accuracy"] is not None}
  scalars.update({f"transfer/{group}_mean": mean for group, (mean, _) in summary.items()})
  writer.write_scalars(0, scalars)
  writer.close()


# --- Cost before the work ----------------------------------------------------------------
def _longest(task: str, grid: Optional[list]) -> Optional[int]:
  """The longest schedule of a task's grid (what its final run may train)."""
  steps = [v for field, values in grid_of(task, grid) if field == "total_steps" for v in values]
  return max(steps) if steps else None


def dry_run(tasks: list[str], *, overrides: dict, shard=(0, 1), model_family: str = "vit",
            images_per_second: Optional[float] = None, grid: Optional[list] = None) -> str:
  """Every run of this shard with its steps and images, and the device time at
  `images_per_second` (measured, or the TPU planner's roofline)."""
  lines = ["| task | run | steps | images | device time |", "|---|---|---|---|---|"]
  total_images = 0
  for run in plan(tasks, shard, grid):
    config = task_config(run.task, run.phase, model_family=model_family)
    point_steps = run.point.get("total_steps") or (_longest(run.task, grid)
                                                   if run.phase == FINAL else None)
    steps = int(overrides.get("total_steps") or point_steps or config.total_steps)
    images = steps * int(overrides.get("batch_size", config.batch_size))
    total_images += images
    lines.append(f"| {run.task} | {run.name} | {steps:,} | {images:,} | "
                 f"{_duration(images, images_per_second)} |")
  lines.append(f"| all | {len(plan(tasks, shard, grid))} runs | | {total_images:,} | "
               f"{_duration(total_images, images_per_second)} |")
  if images_per_second is None:
    lines.append("\nDevice time: pass --images_per_second (the benchmark's or the trainer's "
                 "img/s) or --topology (the TPU planner's roofline).")
  else:
    lines.append(f"\nAt {images_per_second:,.0f} img/s; a final run counts the longest "
                 f"schedule of its grid.")
  return "\n".join(lines)


def _duration(images: int, rate: Optional[float]) -> str:
  if not rate:
    return "-"
  seconds = images / rate
  return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
