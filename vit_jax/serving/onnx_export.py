"""ONNX straight from the JAX serving function (the one StableHLO and SavedModel export
too) with jax2onnx: no PyTorch, no second implementation of the model. Every family the
StableHLO export takes (ViT with any pooling, registers, LayerScale, SwiGLU, qk-norm,
rotary embeddings; hybrids; Mixer), a symbolic batch axis, raw-pixel input and the
features output inside the graph, float32 (ONNX Runtime's CPU kernels). Checked in ONNX
Runtime against JAX at batch 1 and 7 (tests/test_export.py)."""
from __future__ import annotations

import contextlib
import io
import logging

import numpy as np

from vit_jax.convert import Checkpoint
from vit_jax.errors import UserError
from vit_jax.serving.graph import Serving

FILE = "model.onnx"
OPSET = 21


def _jax2onnx():
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(f"ONNX export needs jax2onnx ({e}); pip install -e '.[export]'.") from None
  return jax2onnx


def check(checkpoint: Checkpoint, *, dtype: str) -> None:
  """What ONNX export cannot do, before anything is written."""
  del checkpoint
  if dtype != "float32":
    raise UserError("ONNX export is float32 (ONNX Runtime's CPU kernels); use "
                    "--format=stablehlo for bfloat16.")
  _jax2onnx()


@contextlib.contextmanager
def _quiet_converter():
  """onnx_ir logs a line per constant of unset value type while serialising, and
  jax2onnx's convolution plugin prints a DEBUG line per convolution: not news."""
  logger = logging.getLogger("onnx_ir")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    logger.setLevel(level)


def export_bytes(serving: Serving) -> tuple[bytes, dict]:
  import jax  # pylint: disable=g-import-not-at-top
  from jax import export as jax_export  # pylint: disable=g-import-not-at-top
  jax2onnx = _jax2onnx()
  params = serving.params
  spec = jax.ShapeDtypeStruct((*jax_export.symbolic_shape("batch"), *serving.input_shape),
                              serving.input_dtype)
  with _quiet_converter():
    model = jax2onnx.to_onnx(lambda images: serving.fn(params, images), [spec],
                             model_name="vit_jax", opset=OPSET, input_names=["images"],
                             output_names=[serving.signature["output"]])
  return model.SerializeToString(), {"opset": OPSET, "converter": "jax2onnx"}


def run(data: bytes, images: np.ndarray) -> np.ndarray:
  """The export run by ONNX Runtime on the CPU."""
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
  return session.run(None, {session.get_inputs()[0].name: images})[0]
