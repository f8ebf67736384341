r"""A checkpoint's row of the paper's transfer table: VTAB-1k's 19 tasks and the headline
datasets, each fine-tuned with the paper's protocol, in one resumable command.

    python -m vit_jax.cli.transfer --checkpoint=ViT-B_16.npz --suite=vtab1k \
        --workdir=/tmp/vtab --model=ViT-B_16
    python -m vit_jax.cli.transfer --checkpoint=/tmp/my_run --suite=paper --workdir=/tmp/paper
    python -m vit_jax.cli.transfer --checkpoint=... --suite=clevr_count,dtd --workdir=... \
        --config.batch_size=256              # any --config.* goes to every run
    python -m vit_jax.cli.transfer ... --dry_run --topology=v5e:2x4   # the cost, first

--checkpoint: anything `--config.pretrained` takes (a run, .npz, timm, Hugging Face, a
Hub name; --model names a published .npz's preset). --suite: vtab1k (19 tasks),
vtab_natural / vtab_specialized / vtab_structured, paper (ImageNet with ReaL, CIFAR-10/100,
Pets, Flowers-102) or tasks by name. Every run is a vit_jax run in WORKDIR/<task>/<point>/
(the grid: VTAB lr 0.01, 0.001 x 500, 2500 steps on train800, chosen on val200; headline
datasets the paper's learning rates on their validation split) and WORKDIR/<task>/final/
(the chosen point on train + validation, evaluated on test). Run the same command again
to resume; finished runs are skipped. --shard=K/N: every N-th task from the K-th, for N
hosts or processes. Results: WORKDIR/results.md, results.csv, results.png and TensorBoard.
Datasets: python -m vit_jax.cli.prepare --dataset=NAME once (the line says which).
"""
from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_flags

from vit_jax import config as config_lib
from vit_jax import console, storage
from vit_jax.cli import common
from vit_jax.errors import UserError
from vit_jax.models.presets import MODEL_PRESETS, resolve_model_name

config_flags.DEFINE_config_dict("config", config_lib.base_config(), "Overrides for every "
                                "run, e.g. --config.batch_size=256.")
flags.DEFINE_string("checkpoint", None, "What to transfer: a run, .npz, timm file, Hugging "
                    "Face directory or Hub name.")
flags.DEFINE_string("suite", "vtab1k", "vtab1k, vtab_natural, vtab_specialized, "
                    "vtab_structured, paper, or task names separated by commas.")
flags.DEFINE_string("workdir", None, "One subfolder per task, and the results.")
flags.DEFINE_string("model", None, "The preset of a published .npz (it does not say).")
common.define_shard_and_report("task")
flags.DEFINE_multi_string("grid", [], "FIELD=V1,V2,...: another grid to choose from "
                          "(default: the protocol's; repeat for more fields).")
flags.DEFINE_bool("dry_run", False, "List every run, its steps and device time; train none.")
flags.DEFINE_float("images_per_second", None, "--dry_run: the training rate to price at.")
flags.DEFINE_string("topology", None, "--dry_run: price at the TPU planner's roofline for "
                    "this topology (e.g. v5e:2x4).")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def _overrides() -> dict:
  """The --config.* flags as typed, with the values absl checked against the schema."""
  found = {}
  for arg in sys.argv[1:]:
    if arg.startswith("--config."):
      field = arg[len("--config."):].split("=", 1)[0]
      node = FLAGS.config
      for part in field.split("."):
        node = node[part]
      found[field] = node
  if FLAGS.model:
    found["model_name"] = FLAGS.model
  return found


def _planned_rate(checkpoint, overrides: dict) -> float:
  """The TPU planner's roofline img/s of the model (the checkpoint's, else --model's) at
  384 px, batch 512: a VTAB run's step."""
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax.bench import memory_plan  # pylint: disable=g-import-not-at-top
  from vit_jax.runtime import accelerators  # pylint: disable=g-import-not-at-top
  from vit_jax.trainer import resolve  # pylint: disable=g-import-not-at-top
  from vit_jax.tuning import transfer  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_platforms", "cpu")
  with common.stderr_quiet():
    devices = memory_plan.topology_devices(FLAGS.topology)
  config = config_lib.with_overrides(transfer.task_config("cifar100", "select"),
                                     {k: v for k, v in overrides.items()
                                      if k in ("model_name", "batch_size")})
  config = resolve.resolve(config, checkpoint).config
  result = memory_plan.plan(config, devices, resolution=384, num_classes=100)
  line = memory_plan.roofline(result, accelerators.chip_of_device(devices[0]))
  if not line:
    raise UserError(f"--topology={FLAGS.topology}: the planner has no roofline for it.")
  console.line(f"TPU planner, {FLAGS.topology}: {line['images_per_second']:,.0f} img/s "
               f"({line['bound']}-bound roofline, a ceiling) at 384 px, batch 512")
  return line["images_per_second"]


def main(argv) -> None:
  from vit_jax import convert  # pylint: disable=g-import-not-at-top
  from vit_jax.tuning import grid, transfer  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; see --help.")
  tasks = transfer.suite_tasks(FLAGS.suite)
  shard = grid.parse_shard(FLAGS.shard)
  points = grid.parse_grid(FLAGS.grid) if FLAGS.grid else None
  overrides = _overrides()
  root = storage.path(FLAGS.workdir)
  if FLAGS.report:
    console.line(transfer.write_report(root, tasks, checkpoint=FLAGS.checkpoint or "",
                                       grid=points)[0])
    return
  if not FLAGS.checkpoint and not (FLAGS.dry_run and FLAGS.model):
    raise UserError("give --checkpoint=... (a run, .npz, timm file, HF directory or Hub "
                    "name): what the suite transfers (a --dry_run takes --model alone).")
  checkpoint = (convert.read(FLAGS.checkpoint, model_name=FLAGS.model, what="checkpoint")
                if FLAGS.checkpoint else None)
  family = (checkpoint.arch.get("family", "vit") if checkpoint is not None
            else MODEL_PRESETS[resolve_model_name(FLAGS.model)]["family"])
  if FLAGS.dry_run:
    rate = FLAGS.images_per_second or (_planned_rate(checkpoint, overrides)
                                       if FLAGS.topology else None)
    console.line(transfer.dry_run(tasks, overrides=overrides, shard=shard,
                                  model_family=family, images_per_second=rate, grid=points))
    return
  transfer.check_prepared(tasks[shard[0]::shard[1]], overrides.get("data_dir"))
  root = storage.check_writable(FLAGS.workdir)
  failures = transfer.run_suite(root, tasks, checkpoint=FLAGS.checkpoint,
                                overrides=overrides, model_family=family, shard=shard,
                                grid=points)
  markdown, _ = transfer.write_report(root, tasks, checkpoint=FLAGS.checkpoint, grid=points)
  console.line(markdown.rstrip("\n"))
  console.line(f"results: {root}/results.md, results.csv, results.png (and TensorBoard)")
  sys.exit(1 if failures else 0)


if __name__ == "__main__":
  common.run(main)
