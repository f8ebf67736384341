"""Small data from scratch: each augmentation strength of configs/small_data.py probed
with a short run, the best on the validation split trained for the full schedule (the
command: vit_jax.cli.small_data), by default on the training and validation images
together once the choice is made."""
from __future__ import annotations

import pathlib
import re

from vit_jax import console, storage
from vit_jax.errors import UserError
from vit_jax.tuning import grid as grid_lib

CONFIG_FILE = str(pathlib.Path(__file__).resolve().parent.parent / "configs" / "small_data.py")


def candidates(dataset: str, strengths: list[str], flips: list[str],
               mae: bool = False) -> list[str]:
  """Config arguments after the dataset: ['light', 'medium,flip', ...]. Flips 'auto': the
  dataset's own setting where it is known (digits: none), both searched where not (an
  image folder: clothes flip, text does not). `mae`: also the first (lightest) strength
  fine-tuned from MAE pre-training on the training images ('light,noflip,mae'), at each
  flip setting."""
  from vit_jax.configs import small_data as recipe  # pylint: disable=g-import-not-at-top
  from vit_jax.data.presets import get_preset  # pylint: disable=g-import-not-at-top
  unknown = sorted(set(strengths) - set(recipe.STRENGTHS))
  if unknown:
    raise UserError(f"--strengths: unknown {unknown}; choose from {sorted(recipe.STRENGTHS)}.")
  bad = sorted(set(flips) - {"auto", "flip", "noflip"})
  if bad:
    raise UserError(f"--flips: unknown {bad}; choose from auto, flip, noflip.")
  if flips == ["auto"]:
    preset = get_preset(dataset)
    flips = ["noflip", "flip"] if preset is None else ["flip" if preset.flip else "noflip"]
  options = [f"{s},{f}" for f in flips for s in strengths]
  return options + ([f"{strengths[0]},{f},mae" for f in flips] if mae else [])


def _with_start(config_file: str, dataset: str, root, option: str, point: dict,
                passthrough: list[str]) -> dict:
  """An option's point, with --config.pretrained=<the MAE run on the training images>
  for a `,mae` option (trained first, once for every such option)."""
  if not option.endswith(",mae"):
    return point
  pretrained = root / "mae_pretrain"
  if grid_lib.finished_wall(pretrained) is None:  # said once, not before every option.
    _run(f"{config_file}:{dataset},pretrain", pretrained, {}, passthrough,
         "MAE pre-training on the training images (no labels)")
  return {**point, "pretrained": str(pretrained)}


def _run(config_arg: str, workdir, point: dict, passthrough: list[str], label: str) -> dict:
  """Trains (or resumes, or skips when finished) one run; its summary."""
  wall = grid_lib.finished_wall(workdir)
  if wall is None:
    console.line(f"{label}: training ...")
    try:
      wall = grid_lib.run_point(config_arg, workdir, point, passthrough)
    except RuntimeError as e:
      raise UserError(f"{label} failed: {e}") from None
  summary = {**grid_lib.summarise(workdir), "wall_s": wall}
  if summary["val_accuracy"] is None and summary["test_accuracy"] is None:
    console.line(f"{label}: done in {wall:.0f}s")
    return summary
  console.line(f"{label}: val_accuracy {grid_lib.format_value(summary['val_accuracy'])}, "
               f"test_accuracy {grid_lib.format_value(summary['test_accuracy'])} in "
               f"{wall:.0f}s")
  return summary


def choose(config_file: str, dataset: str, root, options: list[str], probe_steps: int,
           passthrough: list[str]) -> tuple[str, list[dict]]:
  """Every option's probe; the option with the best validation accuracy."""
  probes = []
  for option in options:
    point = {"total_steps": probe_steps, "warmup_steps": max(probe_steps // 20, 1),
             "evals.fewshot.every": -1}  # chosen on validation accuracy alone.
    summary = _run(f"{config_file}:{dataset},{option}",
                   root / "probe" / option.replace(",", "_"),
                   _with_start(config_file, dataset, root, option, point, passthrough),
                   passthrough, f"probe {option} ({probe_steps} steps)")
    probes.append({"option": option, **summary})
  best = grid_lib.select(probes)
  if best is None:
    raise UserError(f"{dataset} has no validation split: nothing to choose on.")
  return best["option"], probes


def refit_splits(dataset: str, option: str) -> dict:
  """Split overrides that train the final run on the training split and the validation
  split cut from it, joined again (choose on validation, then refit on every training
  image, as scikit-learn's GridSearchCV(refit=True) does); {} where the two are not
  complementary slices of one split (nothing to join)."""
  from vit_jax.configs import small_data as recipe  # pylint: disable=g-import-not-at-top
  config = recipe.get_config(f"{dataset},{option}")
  train = re.fullmatch(r"(\w+)\[:([0-9.]+%?)\]", config.train_split)
  val = re.fullmatch(r"(\w+)\[([0-9.]+%?):\]", config.val_split or "")
  if not (train and val and train.groups() == val.groups()):
    return {}
  return {"train_split": train.group(1), "val_split": ""}


def report(root, dataset: str, probes: list[dict], chosen: str, final: dict,
           refit: bool = False) -> str:
  fmt = grid_lib.format_value
  lines = [f"# Small data: {dataset}", "",
           "| probe | val_accuracy | wall_s |", "|---|---|---|"]
  lines += [f"| {p['option']}{' (chosen)' if p['option'] == chosen else ''} | "
            f"{fmt(p['val_accuracy'])} | {fmt(p['wall_s'])} |" for p in probes]
  validation = ("refit on the training and validation images (validation accuracy not "
                "measured: trained on)" if refit else
                f"val_accuracy {fmt(final['val_accuracy'])}")
  lines += ["", f"Chosen on the validation split: {chosen}. Full schedule, {validation}: "
            f"test_accuracy {fmt(final['test_accuracy'])} (wall {fmt(final['wall_s'])} s; "
            f"probes {fmt(sum(p['wall_s'] for p in probes))} s)."]
  mae = grid_lib.finished_wall(root / "mae_pretrain")
  if mae is not None:
    lines.append(f"MAE pre-training on the training images (for the `,mae` options): "
                 f"{fmt(mae)} s.")
  text = "\n".join(lines) + "\n"
  storage.write_text(root / "results.md", text)
  return text


def run(config_file: str, dataset: str, root, options: list[str], probe_steps: int,
        passthrough: list[str], refit: bool = True) -> str:
  """Probes (when there is a choice), the chosen option's full run (`refit`: on the
  training and validation images together, where they split one set); the report."""
  if len(options) == 1:  # nothing to choose: no probe.
    chosen, probes = options[0], []
  else:
    chosen, probes = choose(config_file, dataset, root, options, probe_steps, passthrough)
  point = refit_splits(dataset, chosen) if refit and probes else {}
  name = chosen.replace(",", "_") + ("_refit" if point else "")
  final = _run(f"{config_file}:{dataset},{chosen}", root / "final" / name,
               _with_start(config_file, dataset, root, chosen, point, passthrough),
               passthrough, f"final {chosen}" + (" (train + val)" if point else ""))
  return report(root, dataset, probes, chosen, final, refit=bool(point))
