"""From a config to what a run needs, the same for training and for evaluating a
checkpoint: the pretrained checkpoint read (once), the config resolved (`resolve`), the
mesh, the data source and shards, and the built model, optimizer and steps
(`build.Built`)."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from jax.sharding import Mesh

from vit_jax import sharding as sharding_lib
from vit_jax.convert import Checkpoint, read
from vit_jax.data import pipeline, sources
from vit_jax.trainer import build as build_lib
from vit_jax.trainer import finetune, resolve


@dataclasses.dataclass
class Setup:
  config: Any                       # resolved: resolution applied, pretrained adopted.
  mesh: Mesh
  shards: pipeline.DataShards
  source: sources.Source
  built: build_lib.Built
  pretrained: Optional[Checkpoint]  # config.pretrained, read once (or the checkpoint given).


def check_batch_size(config, mesh: Mesh, *, num_data_shards: int) -> None:
  """The global batch splits evenly into micro-batches, devices and data shards."""
  pipeline.check_divisible(config.batch_size, config.accum_steps,
                           "gradient accumulation steps (accum_steps)", name="batch_size")
  micro_batch = config.batch_size // config.accum_steps
  name = "Global batch size" + (" per micro-batch" if config.accum_steps > 1 else "")
  pipeline.check_divisible(micro_batch, sharding_lib.batch_divisor(mesh),
                           "devices on the data and fsdp mesh axes", name=name)
  pipeline.check_divisible(micro_batch, num_data_shards,
                           "data shards (one per process by default)", name=name)


def prepare(config, *, checkpoint: Optional[Checkpoint] = None,
            num_classes: Optional[int] = -1, read_pretrained: bool = True) -> Setup:
  """Everything before any array is made. `checkpoint`: a checkpoint whose architecture
  and normalisation the config adopts (default: `config.pretrained`, if set and
  `read_pretrained`); `num_classes`: the head's (-1: the dataset's; None: no head)."""
  if checkpoint is None and read_pretrained and config.get("pretrained"):
    checkpoint = read(config.pretrained, what="pretrained")
  resolved = resolve.resolve(config, checkpoint)
  config = resolved.config
  mesh = sharding_lib.make_mesh(dict(config.mesh))
  shards = pipeline.DataShards.create(config.data_shards)
  check_batch_size(config, mesh, num_data_shards=shards.num_shards)
  source = sources.from_config(config)
  # The model's input shape: pp_eval of a training image (every split gives the same,
  # and the training split is the one a run always has).
  image_shape = pipeline.image_shape(source, split=config.train_split, pp=config.pp_eval,
                                     pp_modules=config.pp_modules)
  built = build_lib.build(config, mesh, image_shape=image_shape,
                          num_classes=source.num_classes if num_classes == -1 else num_classes,
                          host_pp_train=resolved.host_pp_train,
                          input_affine=resolved.input_affine)
  return Setup(config, mesh, shards, source, built, checkpoint)


def check_data(run: Setup) -> None:
  """Every data check a run needs, before anything is written: the training split is
  there and whole (an image folder lists every class), and a pretrained checkpoint fits."""
  run.source.records(run.config.train_split)
  if run.pretrained is not None:
    finetune.check_fits(run.config, run.pretrained, run.built)
