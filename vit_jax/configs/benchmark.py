r"""The benchmark's train step: the pre-training recipe (configs/pretrain.py: AdamW on
weight matrices, clipping, bf16 compute) without dropout, float32 Adam moments, batch 256,
and a random head (a zero head makes the first gradients unrealistic).

    python -m vit_jax.cli.benchmark --config=configs/benchmark.py:b16 \
        --config.batch_size=256 --config.model.attention_implementation=cudnn --compare

Argument: the model ('b16', 'ViT-L_16', ...).
"""
from vit_jax import config as config_lib
from vit_jax.models import resolve_model_name


def get_config(arg=None):
  c = config_lib.base_config()
  c.model_name = resolve_model_name(arg or "b16")
  c.optimizer = "adam"
  c.lr, c.end_lr, c.weight_decay, c.grad_clip_norm = 1e-3, 0.0, 0.1, 1.0
  c.warmup_steps, c.total_steps = 1000, 100_000
  c.model.dtype = "bfloat16"
  c.model.head_kernel_init_std = 0.01
  c.optimizer_dtype = "float32"
  c.batch_size = 256
  return c.lock()
