r"""Grid sweeps over any config fields, one workdir per point, and the table and plot.

    python -m vit_jax.sweep --config=configs/finetune.py:b16,cifar10 --workdir=/tmp/sweep \
        --grid=lr=0.001,0.003,0.01,0.03 --grid=total_steps=500,2500 \
        --config.pretrained=ViT-B_16.npz          # any --config.* is passed to every point

Each point trains in `WORKDIR/<field=value,...>` with `python -m vit_jax.main`, its console
in `console.log` there. Run the same command again to resume: finished points are skipped,
an interrupted one resumes from its checkpoint. `--shard=K/N` runs every N-th point from
the K-th, so N processes or hosts share a sweep (each writes the table of what is finished
so far; `--report` only rewrites it). Results: `WORKDIR/results.md`, `results.csv` (final
accuracy on the validation and test splits, few-shot, wall time, img/s) and `results.png`
(final validation accuracy against the swept values). The best point is selected on the
validation split (`val_split`) and reported with its test accuracy; results.md says so.
"""
from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_flags

from vit_jax import storage
from vit_jax.cli import common
from vit_jax.errors import UserError
from vit_jax.tuning import grid as grid_lib

config_flags.DEFINE_config_file("config", None, "Config file[:args], as for vit_jax.main; "
                                "--config.FIELD=VALUE goes to every point.", lock_config=True)
flags.DEFINE_string("workdir", None, "One subfolder per point, and the results table.")
flags.DEFINE_multi_string("grid", [], "FIELD=V1,V2,... (repeat for more fields).")
common.define_shard_and_report("point")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv) -> None:
  del argv
  if not FLAGS.grid:
    raise UserError("Give at least one --grid=FIELD=V1,V2,...")
  # Every point gets the same config file and the overrides as typed (already checked).
  passthrough = [a for a in sys.argv[1:] if a.startswith("--config.")]
  config_arg = config_flags.get_config_filename(FLAGS["config"])
  code = grid_lib.sweep(FLAGS.config, config_arg, storage.check_writable(FLAGS.workdir),
                        grid_lib.parse_grid(FLAGS.grid), passthrough,
                        shard=grid_lib.parse_shard(FLAGS.shard), report_only=FLAGS.report)
  sys.exit(code)


if __name__ == "__main__":
  common.run(main)
