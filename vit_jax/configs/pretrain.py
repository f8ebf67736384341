r"""Pre-training recipe of the paper (Adam b1 0.9 b2 0.999, batch 4096, 10k warm-up steps
then linear decay to 1e-5, decoupled weight decay, clipping at norm 1, 224 px, inception
crop + flip, dropout 0.1 on ImageNet).

    python -m vit_jax.main --config=configs/pretrain.py:b16,imagenet2012 --workdir=DIR
    python -m vit_jax.main --config=configs/pretrain.py:b16,imagenet21k --workdir=DIR \
        --config.dataset=<your prepared multi-label TFDS dataset>

Arguments: <model>,<recipe>. BiT models (bit-r50x1, ...) train with big_vision's BiT
recipe (configs/bit_i1k.py: SGD momentum, lr 1.6, cosine, 90 epochs; imagenet2012 only):

    python -m vit_jax.main --config=configs/pretrain.py:bit-r50x1,imagenet2012 --workdir=DIR

Recipes:
- imagenet2012: ImageNet-1k from scratch, 300 epochs, lr 3e-3, wd 0.3, softmax
  (ViT-B/16: ~77.9% top-1 in the paper, ViT-S/16 with AugReg ~78%; not re-measured here).
- imagenet21k: ImageNet-21k-style multi-label pre-training: sigmoid cross-entropy, head
  bias -10, pre_logits layer, 90 epochs of 14M images, lr 1e-3, wd 0.03. The dataset is one
  the user prepared in TFDS format with a multi-label `labels` feature (Sequence(ClassLabel)).
Few-shot linear evaluation (5/10/25-shot on ImageNet-1k) runs every 10k steps.
Runtime: ViT-B/16 on ImageNet-1k, 300 epochs: ~ 94k steps; at the throughput in
BENCHMARKS.md on an H100 (images/s), divide 1.28M x 300 by it.
TPU pods (the TPU compiler's plan, 2026-12-06, README "TPU compiler plans"): B/16 at batch
4096 fits v4-32, v5e-256, v5p-128 and v6e-256 with plain data parallelism, L/16 fits
v5e-256, v5p-128 and v6e-256. L/16 at 4096 on a v4-32 needs 14.75 of a TensorCore's
16 GiB: over the planner's 10% margin; use configs/pretrain_large.py:l16 there (FSDP and
rematerialisation).
"""
from vit_jax import config as config_lib
from vit_jax.configs import common
from vit_jax.models import MODEL_PRESETS, resolve_model_name


def _bit_pretraining(c, recipe: str) -> None:
  """BiT on ImageNet-1k as big_vision's configs/bit_i1k.py trains it: SGD momentum 0.9
  (bfloat16), lr 0.1 per 256 images (1.6 at 4096), 1000 warm-up steps then cosine, 90
  epochs, clipping at norm 1, weight decay 1e-4 per 256 images applied by big_vision as
  `wd x schedule` = lr x 0.001 here (our decay is scaled by the learning rate), inception
  crop 224 + flip; evaluation resize 256, centre crop 224."""
  if recipe != "imagenet2012":
    raise ValueError(f"BiT pre-training recipe {recipe!r}: this config has imagenet2012 "
                     f"(big_vision's bit_i1k.py).")
  common.apply_dataset_preset(c, "imagenet2012", resolution=224)
  c.pp_eval = "to_rgb|resize_small(256)|central_crop(224)|value_range(-1, 1)"
  c.optimizer, c.momentum, c.lr = "sgd", 0.9, 0.1 / 256 * c.batch_size
  c.weight_decay = 1e-4 / 256 * c.batch_size / c.lr
  c.schedule, c.end_lr, c.warmup_steps = "cosine", 0.0, 1000
  c.total_steps = 1_281_167 * 90 // c.batch_size
  c.loss = "softmax"


def get_config(arg=None):
  model, recipe = common.parse_args(arg, "b16,imagenet2012")
  c = config_lib.base_config()
  c.model_name = model
  c.optimizer = "adam"             # b1 0.9, b2 0.999 (base_config).
  c.batch_size = 4096
  c.eval_batch_size = 1024
  c.warmup_steps = 10_000
  c.schedule = "linear"
  c.end_lr = 1e-5
  c.model.dtype = "bfloat16"
  c.optimizer_dtype = "bfloat16"
  c.checkpoint_every = 2000
  c.evals.test.every = 5000
  c.log_every = 100
  if MODEL_PRESETS[model]["family"] == "bit":
    _bit_pretraining(c, recipe)
  elif recipe == "imagenet2012":
    common.apply_dataset_preset(c, "imagenet2012", resolution=224)
    c.total_steps = 1_281_167 * 300 // 4096
    c.lr, c.weight_decay = 3e-3, 0.3
    c.model.dropout_rate = 0.1
    c.loss = "softmax"
  elif recipe == "imagenet21k":
    common.apply_dataset_preset(c, "imagenet21k", resolution=224)
    c.pp_train += "|multi_hot(21843)"
    c.pp_eval += "|multi_hot(21843)"
    c.total_steps = 14_197_122 * 90 // 4096
    c.lr, c.weight_decay = 1e-3, 0.03
    c.loss = "sigmoid"
    c.model.head_bias_init = -10.0
    c.label_key = "labels"
    c.model.representation_size = MODEL_PRESETS[resolve_model_name(model)]["hidden_size"]
  else:
    raise ValueError(f"Unknown pre-training recipe {recipe!r}; use imagenet2012 or "
                     f"imagenet21k.")
  c.evals.fewshot = config_lib.fewshot_eval(
      every=10_000, shots=(5, 10, 25), dataset="imagenet2012", train_split="train[:5%]",
      test_split="validation[:5000]", pp="to_rgb|resize(224)|value_range(-1, 1)")
  return c.lock()
