"""vit_jax: Vision Transformer training in JAX/Flax.

Commands live in `vit_jax.cli` (train, evaluate, predict, visualize, benchmark, memory,
prepare); everything else is library.
"""
__version__ = "0.1.0"
