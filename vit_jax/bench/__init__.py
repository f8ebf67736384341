"""Benchmark helpers: step timing, the device-kernel profile, the minimal JAX ViT and
the timm reference (`vit_jax.cli.benchmark` is the command)."""
