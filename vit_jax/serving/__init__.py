"""Serving exports of any checkpoint `vit_jax.convert.read` takes: StableHLO (jax.export,
every family), ONNX (through timm's model and torch.onnx: the ViT architectures timm has)
and a TF SavedModel (jax2tf). `python -m vit_jax.cli.export` is the command."""
from vit_jax.serving.graph import Serving, serving_function
