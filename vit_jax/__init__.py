"""vit_jax: Vision Transformer training in JAX/Flax."""
__version__ = "0.1.0"
