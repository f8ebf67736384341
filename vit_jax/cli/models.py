"""`python -m vit_jax.models --list`: every preset with its family, shape and parameter
count (with a 1000-class head, at the preset's native resolution), then the pretrained
names on the Hugging Face Hub known to load (`load_pretrained(NAME)`,
`--config.pretrained=NAME`)."""
from __future__ import annotations

import argparse
import sys

from vit_jax.convert.hub import KNOWN_NAMES, PRESET_WEIGHTS
from vit_jax.models import MODEL_PRESETS, count_parameters, native_resolution


def _shape(hparams: dict) -> str:
  keys = ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim",
          "tokens_mlp_dim", "channels_mlp_dim")
  short = {"patch_size": "patch", "hidden_size": "width", "num_layers": "depth",
           "num_heads": "heads", "mlp_dim": "mlp", "tokens_mlp_dim": "tokens_mlp",
           "channels_mlp_dim": "channels_mlp"}
  parts = [f"{short[k]} {hparams[k]}" for k in keys if k in hparams]
  extras = sorted(set(hparams) - set(keys) - {"family"})
  return ", ".join(parts + [f"{k}={hparams[k]}" for k in extras])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m vit_jax.models", description=__doc__)
  parser.add_argument("--list", action="store_true", help="list the presets")
  parser.add_argument("--num_classes", type=int, default=1000)
  args = parser.parse_args(argv)
  if not args.list:
    parser.print_help()
    return 0
  print(f"{'preset':<22} {'family':<6} {'params':>14}  {'px':>4}  shape")
  for name, hparams in MODEL_PRESETS.items():
    params = count_parameters(name, num_classes=args.num_classes)
    print(f"{name:<22} {hparams['family']:<6} {params:>14,}  {native_resolution(name):>4}  "
          f"{_shape(hparams)}")
  print(f"\n{'preset with published weights':<22} load_pretrained(PRESET) reads")
  for name, weights in PRESET_WEIGHTS.items():
    print(f"{name:<22} {weights}")
  print(f"\n{'pretrained name (Hugging Face Hub)':<52} {'source':<13} family")
  for name, family, source in KNOWN_NAMES:
    print(f"{name:<52} {source:<13} {family}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
