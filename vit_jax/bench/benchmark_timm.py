"""The reference point of `vit_jax.cli.benchmark`: the same ViT train step in timm/PyTorch.

On a GPU it is timm at its best: torch.compile, bf16 autocast, SDPA (flash) attention
(timm's default when PyTorch has it), fused AdamW, gradient clipping, all on the device.
Returns None when torch or timm is not installed. Run it before JAX first touches the GPU:
JAX reserves most of the device memory for itself at that moment.
"""
from __future__ import annotations

import time
from typing import Optional

from vit_jax.bench import step_timing
from vit_jax.errors import first_line


def bench_timm(model, *, batch: int, resolution: int, dtype: str, steps: int,
               warmup: int) -> Optional[dict]:
  try:
    import timm  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
  except (ImportError, RuntimeError) as e:
    # Not installed, or installed but broken: PyPI's CUDA torchvision beside a CPU torch
    # fails at import ('operator torchvision::nms does not exist'), and timm imports it.
    print(f"timm column left out: {first_line(e)}", flush=True)
    return None
  cuda = torch.cuda.is_available()
  device = "cuda" if cuda else "cpu"
  if cuda:
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
  net = timm.models.vision_transformer.VisionTransformer(
      img_size=resolution, patch_size=model.patch_size, embed_dim=model.hidden_size,
      depth=model.num_layers, num_heads=model.num_heads,
      mlp_ratio=model.mlp_dim / model.hidden_size, num_classes=1000).to(device)
  fused_attention = all(block.attn.fused_attn for block in net.blocks)
  optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.1, fused=cuda)
  images = torch.randn(batch, 3, resolution, resolution, device=device)
  labels = torch.randint(0, 1000, (batch,), device=device)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
  compiled = torch.compile(net) if cuda else net

  def step():
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      loss = torch.nn.functional.cross_entropy(compiled(images), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0, foreach=True)
    optimizer.step()
    if cuda:
      torch.cuda.synchronize()

  version = f"timm {timm.__version__}, torch {torch.__version__}"
  try:
    start = time.perf_counter()
    step()  # the first call compiles.
    compile_seconds = time.perf_counter() - start
    if cuda:
      torch.cuda.reset_peak_memory_stats()
    timing = step_timing.time_steps(step, steps=steps, warmup=warmup)
  except torch.OutOfMemoryError as error:
    return {"error": f"out of memory: {first_line(error)}", "version": version}
  finally:
    del net, optimizer, compiled
    if cuda:  # hand the memory back before JAX claims its share of the device.
      torch.cuda.empty_cache()
  peak = torch.cuda.max_memory_allocated() if cuda else None
  return {"train_step_s": timing, "compile_s": compile_seconds, "peak_memory_bytes": peak,
          "compiled": cuda, "fused_attention": fused_attention, "version": version}

