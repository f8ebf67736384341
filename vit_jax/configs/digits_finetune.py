r"""Offline pre-training example, step 2 of 2: fine-tune the MNIST model on a small label
budget of the scikit-learn digits (20 labelled images per class) at another resolution
(24 px: the 4x4 position-embedding grid is resized to 6x6) with a fresh 10-class head.

    python -m vit_jax.main --config=configs/digits_finetune.py --workdir=/tmp/vit_digits_ft \
        --config.pretrained=/tmp/vit_mnist        # the workdir of configs/mnist_pretrain.py
    # From scratch on the same 200 labels, for comparison:
    python -m vit_jax.main --config=configs/digits_finetune.py --workdir=/tmp/vit_digits_scratch

Measured 2026-11-23 on the 2-core CPU (Grain pipeline, idle box): MNIST pre-training 98.3%
MNIST test accuracy (158 s); fine-tuned on the 200 labelled digits 94.2% digits test
accuracy (359 images, 28 s), against 69.9% for the same model and recipe trained from
scratch on the same labels (27 s).

Fine-tuning variants (second argument: `:ViT-digits,probe` etc., see
vit_jax/configs/common.py:apply_finetune_variant), from the same MNIST run, 300 steps on the 200
labels, digits train[90%:] as validation. Measured 2026-11-30 on the 2-core CPU while other
jobs shared it (MNIST pre-training 98.4% MNIST test, 430 s):

| variant | trains | val accuracy | test accuracy | train time |
|---|---|---|---|---|
| full (SGD lr 0.03) | 140,234 (100%) | 93.8% | 92.8% | 57 s |
| probe (head only) | 650 (0.5%) | 91.0% | 88.3% | 59 s |
| last1 (last block, norm, head) | 34,250 (24.4%) | 96.5% | 92.5% | 59 s |
| llrd (AdamW lr 1e-3, layer decay 0.75) | 140,234 (100%) | 95.1% | 93.0% | 76 s |
| full + ema_decay=0.99 (EMA evaluated) | 140,234 (100%) | 93.8% | 92.8% | 71 s |
| LoRA rank 4 (--config.lora.rank=4 --config.lr=0.1) | 14,986 (9.7%) | 97.2% | 95.5% | 63 s |

The same through a converted checkpoint, with a DINOv2-style model (`:DINOv2-digits`:
LayerScale, exact GELU, 4 registers, a 4x4 learned grid resampled bicubically):

    python -m vit_jax.main --config=configs/mnist_pretrain.py:DINOv2-digits --workdir=/tmp/dino_mnist
    python -m vit_jax.convert --to=hf /tmp/dino_mnist /tmp/dino_hf   # Dinov2WithRegistersModel
    python -m vit_jax.convert /tmp/dino_hf /tmp/dino.npz             # and back, from transformers
    python -m vit_jax.main --config=configs/digits_finetune.py --workdir=/tmp/dino_ft \
        --config.pretrained=/tmp/dino.npz    # architecture and normalisation from the file
    python -m vit_jax.main --config=configs/digits_finetune.py:DINOv2-digits --workdir=/tmp/dino_scratch

Measured 2026-11-23, same box (value_range on the host, before normalize_on_device; a
second job sharing the box): MNIST 97.9% (313 s); fine-tuned from the converted checkpoint
92.8% (42 s) against 55.2% from scratch (47 s), both 300 steps on 200 labels.
"""
from vit_jax import config as config_lib
from vit_jax.configs import common


def get_config(arg=None):
  """arg: the model preset (default ViT-digits with 4x4 patches; DINOv2-digits), and
  optionally a fine-tuning variant: full (default), probe, last<N>, llrd."""
  c = config_lib.base_config()
  args = common.parse_args(arg, "ViT-digits")
  c.model_name = args[0]
  if c.model_name == "ViT-digits":
    c.model.update(dict(patch_size=4))
  common.apply_dataset_preset(c, "sklearn_digits")
  c.train_split = "train[:200]"     # the small label budget: ~20 images per class.
  c.pp_train = "to_rgb|resize(24)|inception_crop(24, area_min=70)|value_range(-1, 1)"
  c.pp_eval = "to_rgb|resize(24)|value_range(-1, 1)"
  c.optimizer = "sgd"               # the paper's fine-tuning recipe, shortened.
  c.lr = 0.03
  c.update(batch_size=64, eval_batch_size=400, warmup_steps=30, total_steps=300,
           log_every=50, checkpoint_every=300)
  c.evals.test.every = 0
  common.apply_finetune_variant(c, args[1] if len(args) > 1 else "full")
  return c.lock()
