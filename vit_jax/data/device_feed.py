"""Host batches -> sharded device arrays, with transfers overlapped with compute.

Kept free of TensorFlow: the trainer, evaluation and the benchmark's host-fed loop all use
it, whatever produced the host batches.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import jax

from vit_jax import sharding as sharding_lib


def to_global_arrays(local_batch: dict, mesh) -> dict:
  """This process's rows of a global batch -> one jax.Array per key, sharded over the
  mesh's batch axes."""
  sharding = sharding_lib.batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                      local_batch)


def prefetch_to_mesh(batches: Iterable[dict], mesh, size: int = 2) -> Iterator[dict]:
  """Keeps `size` batches in flight to the devices: transfers are asynchronous, so the
  next batch is copied while the current step runs."""
  queue = []
  for batch in batches:
    queue.append(to_global_arrays(batch, mesh))
    if len(queue) > size:
      yield queue.pop(0)
  yield from queue
