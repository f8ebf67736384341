"""Serving exports of any checkpoint `vit_jax.convert.read` takes: StableHLO (jax.export),
ONNX (jax2onnx, no PyTorch) and a TF SavedModel (jax2tf), every family; `export.export`
writes one, `python -m vit_jax.cli.export` is the command."""
from vit_jax.serving.graph import Serving, serving_function
