r"""Command line: train or fine-tune from a config file.

    python -m vit_jax.main --config=configs/quickstart.py --workdir=/tmp/vit_quickstart
    python -m vit_jax.main --config=configs/finetune.py:b16,cifar10 --workdir=DIR \
        --config.pretrained=ViT-B_16.npz --config.batch_size=256

Re-running with the same --workdir resumes from the last checkpoint. --config takes a
file or a config shipped with the package by name (`--config=quickstart`); every field
and its meaning: python -m vit_jax.cli.config --config=quickstart. All flags: --helpfull.
"""
from absl import flags
from ml_collections import config_flags

from vit_jax.cli import common

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the config.")
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/finetune.py:b16,cifar10",
                                lock_config=True)
flags.DEFINE_bool("distributed", False,
                  "Start jax.distributed with settings from the cluster (Cloud TPU pod, SLURM); "
                  "the launchers under scripts/ pass it.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0, for multi-process runs without a cluster "
                    "environment (SLURM / Cloud TPU set this up themselves).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with coordinator_address).")
flags.DEFINE_integer("num_cpu_devices", None, "Simulated CPU devices for this process.")
flags.DEFINE_integer("initialization_timeout", 60, "Seconds to wait for all processes.")
flags.DEFINE_integer("heartbeat_timeout", 20, "Seconds after which a dead peer is detected.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from vit_jax.runtime import workdir  # pylint: disable=g-import-not-at-top
  from vit_jax.trainer import finished  # pylint: disable=g-import-not-at-top
  step = workdir.finished_step(FLAGS.workdir)
  if step is not None and step >= FLAGS.config.total_steps:  # said before JAX starts.
    print(finished.nothing_to_do(step, FLAGS.config.total_steps), flush=True)
    return
  from vit_jax.runtime import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize(force=FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                         num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                         num_cpu_devices=FLAGS.num_cpu_devices,
                         initialization_timeout=FLAGS.initialization_timeout,
                         heartbeat_timeout=FLAGS.heartbeat_timeout)
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import console  # pylint: disable=g-import-not-at-top
  from vit_jax.runtime import accelerators  # pylint: disable=g-import-not-at-top
  from vit_jax.trainer import loop  # pylint: disable=g-import-not-at-top
  warning = accelerators.unused_accelerator_warning(jax.default_backend())
  if warning:
    console.warn(warning)
  loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  common.run(main)
