r"""Fine-tuning recipe of the paper (SGD momentum 0.9, batch 512, no weight decay, clipping
at global norm 1, linear warm-up then cosine decay, 384 px, fresh zero head).

    python -m vit_jax.main --config=configs/finetune.py:b16,cifar10 --workdir=DIR \
        --config.pretrained=/path/to/imagenet21k_ViT-B_16.npz

Arguments: <model>,<dataset>, model as 'b16' / 'ViT-B_16', dataset one of cifar10,
cifar100, oxford_iiit_pet, oxford_flowers102, imagenet2012 (or any TFDS name / folder:DIR
with generic settings). Prepare TFDS data first: python -m vit_jax.cli.prepare --dataset=...

Expected (published, ViT-B/16 pre-trained on ImageNet-21k, official code; not re-measured
here for lack of an accelerator): CIFAR-10 99.0% (10k steps; 98.6% after 500 steps),
CIFAR-100 92.1%. Runtime: CIFAR-10 10k steps at 384 px is about 3.5 h on 8 TPU v3 cores
(official repo); for an H100 see BENCHMARKS.md for images/s.
"""
from vit_jax import config as config_lib

# dataset -> (total_steps, warmup_steps, lr): the paper's steps, best lr of its grid.
RECIPES = {
    "cifar10": (10_000, 500, 0.003),
    "cifar100": (10_000, 500, 0.01),
    "oxford_iiit_pet": (500, 100, 0.003),
    "oxford_flowers102": (500, 100, 0.003),
    "imagenet2012": (20_000, 500, 0.03),
}


def get_config(arg=None):
  model, dataset = config_lib.parse_args(arg, "b16,cifar10")
  c = config_lib.base_config()
  c.model_name = model
  config_lib.apply_dataset_preset(c, dataset)
  c.total_steps, c.warmup_steps, c.lr = RECIPES.get(dataset, (10_000, 500, 0.003))
  # base_config() already is the recipe's SGD (momentum 0.9, no weight decay, clipping at
  # norm 1), batch 512 and a fresh head.
  c.optimizer_dtype = "bfloat16"   # as the official code keeps momentum.
  c.model.dtype = "bfloat16"
  c.evals.test.every = 1000 if c.total_steps > 1000 else 100
  if dataset == "imagenet2012":  # the paper's second ImageNet number, at the end.
    c.evals.real = config_lib.real_eval(every=0)
  c.checkpoint_every = 1000 if c.total_steps > 1000 else 250
  return c.lock()
