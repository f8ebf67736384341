r"""Quickstart: a small ViT on the 1,797 real handwritten digits that ship with scikit-learn.

No download, no accelerator. This is the README's first command:

    python -m vit_jax.main --config=configs/quickstart.py --workdir=/tmp/vit_quickstart

Runtime: 1-4 minutes on a 2-core CPU (compilation included).
Expected: >= 95% test accuracy on the 359 held-out digits (train[:90%], 1,294 digits;
train[90%:] is the validation split). Measured 2026-12-06 on the 2-core CPU: 96.9% test,
95.8% validation, 96.9% 5- and 10-shot linear probes, 61 s for the whole command (212 s
with other compiles running beside it); what varies between runs, and every earlier
measurement: BENCHMARKS.md ("Quickstart").
"""
from vit_jax import config as config_lib
from vit_jax.configs import common


def get_config(arg=None):
  del arg
  c = config_lib.base_config()
  c.model_name = "ViT-digits"      # 8x8 images, 2x2 patches -> 16 tokens, width 64, depth 4.
  common.apply_dataset_preset(c, "sklearn_digits")
  # Digits are 8x8: a light crop (70-100% of the area) and no flip (a flipped 2 is no 2).
  c.pp_train = "to_rgb|inception_crop(8, area_min=70)|value_range(-1, 1)"
  c.batch_size = 128
  c.eval_batch_size = 400
  c.optimizer = "adam"
  c.lr = 0.003
  c.weight_decay = 0.1             # decoupled, scaled by lr (AdamW).
  c.label_smoothing = 0.1
  c.warmup_steps = 50
  c.total_steps = 800
  c.log_every = 100
  c.evals.test.every = 400
  # At the end: 5- and 10-shot linear probes on the frozen features, and the paper's
  # figures (attention rollout, position embeddings, ...) to TensorBoard.
  c.evals.fewshot = config_lib.fewshot_eval(shots=(5, 10))
  c.evals.figures = config_lib.figures_eval()
  c.checkpoint_every = 400
  return c.lock()
