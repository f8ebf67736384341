"""Test setup: 8 simulated CPU devices (set before jax is imported), TF kept off accelerators."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TF must never take an accelerator.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
