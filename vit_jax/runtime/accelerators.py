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
  hbm_bandwidth: float      # bytes/s per JAX device (datasheets): the roofline's other roof.
  cores_per_chip: int = 1   # TensorCores per chip that JAX shows as one device (megacore).


CHIPS = (
    Chip("TPU v3", ("TPU v3",), 123e12, 16 * 2**30, 450e9),
    Chip("TPU v4", ("TPU v4",), 275e12, 32 * 2**30, 1228e9, cores_per_chip=2),
    Chip("TPU v5e", ("TPU v5 lite", "TPU v5e"), 197e12, 16 * 2**30, 819e9),
    Chip("TPU v5p", ("TPU v5p", "TPU v5"), 459e12, 95 * 2**30, 2765e9, cores_per_chip=2),
    Chip("TPU v6e", ("TPU v6 lite", "TPU v6e"), 918e12, 32 * 2**30, 1640e9),
    Chip("A100-80G", ("A100",), 312e12, 80 * 2**30, 2039e9),
    Chip("H100", ("H100",), 989e12, 80 * 2**30, 3350e9),
    Chip("H200", ("H200",), 989e12, 141 * 2**30, 4800e9),
)


def chip_of(device_kind: str) -> Optional[Chip]:
  """The chip whose longest matching name is in `device_kind` (None: CPU, unknown)."""
  matches = [(len(kind), chip) for chip in CHIPS for kind in chip.kinds
             if kind.lower() in device_kind.lower()]
  return max(matches, key=lambda m: m[0])[1] if matches else None


def chip_of_device(device) -> Optional[Chip]:
  """The chip table's entry for one JAX device: a whole chip where JAX shows a megacore
  chip as one device (TPU VMs; deviceless v5p topologies), one TensorCore's share where it
  shows each core as a device (deviceless v4 topologies: `num_cores` 1)."""
  chip = chip_of(device.device_kind)
  cores = getattr(device, "num_cores", None)
  if chip is None or chip.cores_per_chip == 1 or cores is None or cores >= chip.cores_per_chip:
    return chip
  share = cores / chip.cores_per_chip
  return dataclasses.replace(chip, name=f"{chip.name} core", cores_per_chip=cores,
                             peak_bf16_flops=chip.peak_bf16_flops * share,
                             memory_bytes=int(chip.memory_bytes * share),
                             hbm_bandwidth=chip.hbm_bandwidth * share)


def peak_flops(device=None) -> Optional[float]:
  """Peak bf16 FLOP/s of one device, or None (CPU and unknown chips: MFU shown as n/a)."""
  if device is None:
    import jax  # pylint: disable=g-import-not-at-top  (this table needs no JAX)
    device = jax.devices()[0]
  chip = chip_of_device(device)
  return chip.peak_bf16_flops if chip else None


INSTALL_LINES = {
    "NVIDIA GPU": "pip install -U 'jax[cuda12]'",
    "TPU": "pip install -U 'jax[tpu]'",
}


def visible_but_unused(platform: str, exists=None) -> Optional[str]:
  """The accelerator the OS shows while JAX runs on `platform` 'cpu' (None: none, or JAX
  uses it): NVIDIA's device files, or a TPU VM's accel devices."""
  import glob  # pylint: disable=g-import-not-at-top
  if platform != "cpu":
    return None
  exists = exists or (lambda pattern: bool(glob.glob(pattern)))
  if exists("/dev/nvidia[0-9]*"):
    return "NVIDIA GPU"
  if exists("/dev/accel[0-9]*") or exists("/dev/vfio/[0-9]*"):
    return "TPU"
  return None


def unused_accelerator_warning(platform: str, exists=None) -> Optional[str]:
  """One warning line when an accelerator is there but JAX sees only the CPU."""
  found = visible_but_unused(platform, exists)
  if found is None:
    return None
  return (f"this machine has a {found} but JAX sees only the CPU (training will be slow): "
          f"{INSTALL_LINES[found]} (see the README's Install section).")


def platforms_without_an_absent_tpu(exists=None, libtpu_installed=None) -> Optional[str]:
  """With libtpu installed (the `[test]` extra, for deviceless TPU compiles) on a machine
  with no TPU, JAX would try the TPU first and libtpu print its notes about the TPU VM it
  is not on: the platforms to use instead ('cpu', or 'cuda,cpu' beside an NVIDIA GPU);
  None where nothing needs changing."""
  import glob  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  exists = exists or (lambda pattern: bool(glob.glob(pattern)))
  if libtpu_installed is None:
    libtpu_installed = importlib.util.find_spec("libtpu") is not None
  if not libtpu_installed or exists("/dev/accel[0-9]*") or exists("/dev/vfio/[0-9]*"):
    return None
  return "cuda,cpu" if exists("/dev/nvidia[0-9]*") else "cpu"
