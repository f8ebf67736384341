r"""Pre-training models too big for one chip: ViT-H/14 (632M), ViT-g/14 (~1.0B) and
ViT-G/14 (~1.8B, "Scaling Vision Transformers", Zhai et al. 2022), with the paper's
recipe (configs/pretrain.py) plus what it takes to fit:

- FSDP: every weight's embedding dimension is sharded over the `fsdp` mesh axis (all
  devices by default), optimizer moments with it; `--config.mesh.model=N` adds tensor
  parallelism (MLP hidden units and attention heads split N ways; rules in
  config.sharding_rules).
- Rematerialisation ('full': recompute each block in the backward pass) and a scan over
  layers (one compiled block: compile time independent of depth).
- bfloat16 compute and bfloat16 Adam first moment.

    python -m vit_jax.main --config=configs/pretrain_large.py:g14,imagenet21k --workdir=DIR \
        --config.dataset=<your prepared TFDS dataset>
    # Check the memory of a model / batch / mesh before you have the hardware:
    python -m vit_jax.cli.memory --config=configs/pretrain_large.py:G14,imagenet2012 \
        --num_devices=64 --config.batch_size=2048

Runtime: not measured here (no accelerator); the README's memory table says which mesh
each model needs. Expected accuracy: see Zhai et al. (ViT-G/14 on JFT-3B: 90.45% ImageNet
fine-tuned); these recipes are not re-validated here.
"""
from vit_jax.configs import common

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "vit_jax_pretrain_config", os.path.join(os.path.dirname(__file__), "pretrain.py"))
_pretrain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pretrain)


def get_config(arg=None):
  model, recipe = common.parse_args(arg, "h14,imagenet21k")
  c = _pretrain.get_config(f"{model},{recipe}").unlock()
  c.mesh.data, c.mesh.fsdp, c.mesh.model = 1, -1, 1
  c.model.remat_policy = "full"
  c.model.scan_layers = True
  if model in ("ViT-g_14", "ViT-G_14"):
    c.lr = 8e-4          # Zhai et al.: lower peak lr for the giant models.
  return c.lock()
