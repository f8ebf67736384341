"""The accelerators we know: one table of each chip's peak bf16 FLOP/s (for MFU) and memory
per JAX device (for the memory planner), matched against `device.device_kind`."""
from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str                 # as in the tables we print.
  kinds: tuple[str, ...]    # substrings of jax's `device_kind` that mean this chip.
  peak_bf16_flops: float    # dense, per JAX device (vendor datasheets; GPUs SXM).
  memory_bytes: int         # HBM per JAX device (TPU v3: per core).


CHIPS = (
    Chip("TPU v3", ("TPU v3",), 123e12, 16 * 2**30),
    Chip("TPU v4", ("TPU v4",), 275e12, 32 * 2**30),
    Chip("TPU v5e", ("TPU v5 lite", "TPU v5e"), 197e12, 16 * 2**30),
    Chip("TPU v5p", ("TPU v5p", "TPU v5"), 459e12, 95 * 2**30),
    Chip("A100-80G", ("A100",), 312e12, 80 * 2**30),
    Chip("H100", ("H100",), 989e12, 80 * 2**30),
    Chip("H200", ("H200",), 989e12, 141 * 2**30),
)


def chip_of(device_kind: str) -> Optional[Chip]:
  """The chip whose longest matching name is in `device_kind` (None: CPU, unknown)."""
  matches = [(len(kind), chip) for chip in CHIPS for kind in chip.kinds
             if kind.lower() in device_kind.lower()]
  return max(matches, key=lambda m: m[0])[1] if matches else None


def peak_flops(device=None) -> Optional[float]:
  """Peak bf16 FLOP/s of one device, or None (CPU and unknown chips: MFU shown as n/a)."""
  if device is None:
    import jax  # pylint: disable=g-import-not-at-top  (this table needs no JAX)
    device = jax.devices()[0]
  chip = chip_of(device.device_kind)
  return chip.peak_bf16_flops if chip else None
