"""vit_jax: Vision Transformer training in JAX/Flax.

Commands live in `vit_jax.cli` (train, evaluate, predict, visualize, benchmark, memory,
prepare) and `python -m vit_jax.convert` / `python -m vit_jax.models --list`. From Python:

    model, params = vit_jax.load_pretrained(path)     # .npz, timm, Hugging Face, a run
    images = vit_jax.preprocessing_of(path)(uint8_images)
    vit_jax.Classifier.from_pretrained(path).predict(["cat.jpg"])  # [("cat", 0.9), ...]
"""
__version__ = "0.1.0"


def __getattr__(name):  # JAX loads on first use, not on `import vit_jax`.
  if name in ("load_pretrained", "preprocessing_of"):
    from vit_jax.convert import pretrained  # pylint: disable=g-import-not-at-top
    return getattr(pretrained, name)
  if name == "Classifier":
    from vit_jax.convert.classifier import Classifier  # pylint: disable=g-import-not-at-top
    return Classifier
  raise AttributeError(f"module 'vit_jax' has no attribute {name!r}")
