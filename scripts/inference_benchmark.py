r"""Inference speed of one model four ways, in one run: JAX jit, the ONNX export in ONNX
Runtime, timm eager and timm under torch.compile (the same weights; float32).

    python scripts/inference_benchmark.py                     # Ti/16, S/16, B/16 at 224 px
    python scripts/inference_benchmark.py --models=ViT-Ti_16 --batches=1,32 --repeats=5

Prints a table (images/s, median of --repeats timed calls after a warm-up) with each
runtime's ratio to JAX. Random weights: speed does not depend on them. On a CPU-only box
whose torchvision cannot load, timm is imported with the tests' inert stand-in for it.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def timed(fn, repeats: int) -> float:
  fn()  # warm-up (compilation).
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="ViT-Ti_16,ViT-S_16,ViT-B_16")
  parser.add_argument("--batches", default="1,32")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--no_compile", action="store_true", help="skip torch.compile")
  args = parser.parse_args()
  from tests import torch_refs  # pylint: disable=import-outside-toplevel
  torch, timm, _ = torch_refs.import_references()
  import flax  # pylint: disable=import-outside-toplevel
  import flax.linen  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import onnxruntime  # pylint: disable=import-outside-toplevel
  from safetensors.torch import load_file  # pylint: disable=import-outside-toplevel
  from vit_jax.convert import Checkpoint, writers  # pylint: disable=import-outside-toplevel
  from vit_jax.models import MODEL_PRESETS, create_model  # pylint: disable=import-outside-toplevel
  from vit_jax.serving import graph, onnx_export  # pylint: disable=import-outside-toplevel
  print(f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; float32, "
        f"images/s (median of {args.repeats})")
  print("| model | batch | JAX jit | ONNX Runtime | timm eager | timm torch.compile |")
  print("|---|---|---|---|---|---|")
  for name in args.models.split(","):
    arch = dict(MODEL_PRESETS[name])
    family = arch.pop("family")
    model = create_model(family, num_classes=1000, **arch)
    params = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 224, 224, 3), np.float32))
    params = jax.tree.map(np.asarray, flax.linen.unbox(params["params"]))
    checkpoint = Checkpoint.of({"family": family, **arch}, params,
                               {"resolution": 224, "mean": [0.5] * 3, "std": [0.5] * 3}, name)
    onnx_bytes, _ = onnx_export.export_bytes(graph.serving_function(checkpoint))
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as tmp:
      kwargs = writers.write_timm(checkpoint, os.path.join(tmp, "w.safetensors"))
      kwargs.update(img_size=224, dynamic_img_size=False)
      torch_model = timm.models.vision_transformer.VisionTransformer(**kwargs).eval()
      torch_model.load_state_dict(load_file(os.path.join(tmp, "w.safetensors")))
    compiled = None if args.no_compile else torch.compile(torch_model)
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
    device_params = jax.device_put(params)
    for batch in [int(b) for b in args.batches.split(",")]:
      images = np.random.default_rng(0).uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)
      nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
      rates = {}
      rates["jax"] = batch / timed(lambda: forward(device_params, images).block_until_ready(),
                                   args.repeats)
      rates["onnx"] = batch / timed(lambda: session.run(None, {"images": images}), args.repeats)
      with torch.inference_mode():
        rates["eager"] = batch / timed(lambda: torch_model(nchw), args.repeats)
        if compiled is not None:
          rates["compile"] = batch / timed(lambda: compiled(nchw), args.repeats)
      cells = [f"{rates[k]:,.1f} ({rates[k] / rates['jax']:.2f}x)" if k in rates else "n/a"
               for k in ("onnx", "eager", "compile")]
      print(f"| {name} | {batch} | {rates['jax']:,.1f} | " + " | ".join(cells) + " |",
            flush=True)


if __name__ == "__main__":
  main()
