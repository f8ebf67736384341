"""ONNX through timm: the checkpoint written as timm weights (the converter tested against
timm to 1e-4), loaded into timm's VisionTransformer and exported by torch.onnx with a
dynamic batch axis (opset 17). The ViT architectures timm has (class token / GAP / MAP
pooling, registers, LayerScale, SwiGLU, qk-norm); for a hybrid or Mixer use StableHLO.
Raw-pixel input (`uint8_input`) and the features output are done in torch around the
model, as the JAX graph does them."""
from __future__ import annotations

import functools
import io
import os
import tempfile

import numpy as np

from vit_jax.convert import Checkpoint
from vit_jax.convert import timm_format, writers
from vit_jax.convert.pretrained import Preprocessing
from vit_jax.errors import UserError
from vit_jax.serving import graph

FILE = "model.onnx"
OPSET = 17


def _timm():
  try:
    import timm  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
  except Exception as e:  # pylint: disable=broad-except  (ImportError, or a broken torchvision)
    raise UserError(f"ONNX export builds the model in timm, which does not import here "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); pip install -e "
                    f"'.[export]' (a torchvision matching your torch, or none).") from None
  return timm, torch


def check(checkpoint: Checkpoint, *, dtype: str) -> None:
  """What ONNX export cannot do, before anything is written."""
  if checkpoint.arch.get("family") != "vit" or checkpoint.arch.get("resnet_layers"):
    raise UserError(f"ONNX export covers timm's ViT architectures; this is a "
                    f"{checkpoint.arch.get('family')} model"
                    f"{' (hybrid)' if checkpoint.arch.get('resnet_layers') else ''}: export "
                    f"--format=stablehlo instead.")
  if checkpoint.arch.get("rope", "none") != "none":
    raise UserError(f"ONNX export goes through timm's VisionTransformer, which has no rotary "
                    f"embeddings (rope={checkpoint.arch['rope']!r}); export --format=stablehlo "
                    f"instead.")
  if dtype != "float32":
    raise UserError("ONNX export is float32 (ONNX Runtime's CPU kernels); use "
                    "--format=stablehlo for bfloat16.")
  _timm()


def export_bytes(checkpoint: Checkpoint, *, output: str, dtype: str, uint8_input: bool,
                 input_size: int) -> tuple[bytes, dict]:
  check(checkpoint, dtype=dtype)
  timm, torch = _timm()
  serving = graph.serving_function(checkpoint, output=output, uint8_input=uint8_input,
                                   input_size=input_size)
  with tempfile.TemporaryDirectory() as tmp:
    weights = os.path.join(tmp, "timm.safetensors")
    kwargs = writers.write_timm(checkpoint, weights)
    # The grid write_timm read off the parameters, fixed: no resampling ops in the graph.
    kwargs["dynamic_img_size"] = False
    plain_kwargs = dict(kwargs)  # what signature.json records: JSON values, as the hint's.
    if checkpoint.arch.get("mlp_activation") == "swiglu":
      kwargs["mlp_layer"] = timm.layers.SwiGLUPacked
    kwargs["norm_layer"] = functools.partial(torch.nn.LayerNorm,
                                             eps=timm_format.norm_epsilon(checkpoint.arch))
    from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
    model = timm.models.vision_transformer.VisionTransformer(**kwargs)
    model.load_state_dict(load_file(weights))
  model.eval()
  scale, offset = graph.affine_of(checkpoint.pp)
  resolution = Preprocessing(checkpoint.pp).resolution

  class Served(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.model = model
      self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1))
      self.register_buffer("offset", torch.tensor(offset).view(1, 3, 1, 1))

    def forward(self, images):  # NHWC as the JAX export takes them.
      x = images.permute(0, 3, 1, 2).float()
      if uint8_input:
        if x.shape[-1] != resolution:
          x = torch.nn.functional.interpolate(x, size=(resolution, resolution),
                                              mode="bilinear", antialias=True,
                                              align_corners=False)
        x = x * self.scale + self.offset
      features = self.model.forward_features(x)
      return self.model.forward_head(features, pre_logits=output == "features")

  example = torch.zeros((2, *serving.input_shape),
                        dtype=torch.uint8 if uint8_input else torch.float32)
  buffer = io.BytesIO()
  torch.onnx.export(Served().eval(), (example,), buffer, dynamo=False, opset_version=OPSET,
                    input_names=["images"], output_names=[output],
                    dynamic_axes={"images": {0: "batch"}, output: {0: "batch"}})
  return buffer.getvalue(), {"opset": OPSET, "timm_kwargs": plain_kwargs,
                             "timm_norm_epsilon": timm_format.norm_epsilon(checkpoint.arch),
                             **serving.signature}


def run(data: bytes, images: np.ndarray) -> np.ndarray:
  """The export run by ONNX Runtime on the CPU."""
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
  return session.run(None, {"images": images})[0]
