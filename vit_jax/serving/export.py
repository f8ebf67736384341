"""A checkpoint exported for serving, in one call: the model file (StableHLO, ONNX or a
TF SavedModel) and `signature.json` beside it (input shape and dtype, output,
preprocessing, source). `python -m vit_jax.cli.export` is its command."""
from __future__ import annotations

import json

from vit_jax import convert, storage
from vit_jax.errors import UserError
from vit_jax.serving import graph, onnx_export, savedmodel, stablehlo

FORMATS = ("stablehlo", "onnx", "savedmodel")


def export(checkpoint_path: str, fmt: str, out: str, *, output: str = "logits",
           dtype: str = "float32", uint8_input: bool = False, input_size: int = 0,
           params: str = "live", model_name=None, overwrite: bool = False) -> str:
  """Writes the export; returns the model file's path."""
  if fmt not in FORMATS:
    raise UserError(f"--format={fmt!r} is not one of {FORMATS}.")
  target = storage.path(out)
  if target.exists():
    if not overwrite:
      raise UserError(f"--out={out} already exists; pass --overwrite to replace it.")
    target.rmtree()
  checkpoint = convert.read(checkpoint_path, model_name=model_name, params=params)
  if checkpoint.preprocessing.get("max_num_patches"):
    raise UserError(f"{checkpoint_path} takes NaFlex patch sequences (max_num_patches="
                    f"{checkpoint.preprocessing['max_num_patches']}); the exports serve square "
                    f"images. Serve it from JAX (vit_jax.convert.Classifier) or export it "
                    f"with --to=hf (SigLIP 2 towers).")
  options = dict(output=output, dtype=dtype, uint8_input=uint8_input, input_size=input_size)
  serving = graph.serving_function(checkpoint, **options)  # checks the options first.
  if fmt == "onnx":
    onnx_export.check(checkpoint, dtype=dtype)
  target.mkdir(parents=True, exist_ok=True)
  signature = dict(serving.signature, format=fmt)
  if fmt == "stablehlo":
    data, extra = stablehlo.export_bytes(serving)
    path = target / stablehlo.FILE
  elif fmt == "onnx":
    data, extra = onnx_export.export_bytes(serving)
    path = target / onnx_export.FILE
  else:
    savedmodel.write(serving, str(target))
    data, extra, path = None, {}, target
  if data is not None:
    storage.write_bytes(path, data)
  storage.write_text(target / "signature.json", json.dumps({**signature, **extra}, indent=2,
                                                           default=str))
  return str(path)
