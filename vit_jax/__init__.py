"""vit_jax: Vision Transformer training in JAX/Flax."""
__version__ = "0.1.0"

from vit_jax import compat  # noqa: E402,F401  pylint: disable=unused-import  (fixes known dependency breaks)
