r"""Fine-tuning recipe of the paper (SGD momentum 0.9, batch 512, no weight decay, clipping
at global norm 1, linear warm-up then cosine decay, 384 px, fresh zero head).

    python -m vit_jax.main --config=configs/finetune.py:b16,cifar10 --workdir=DIR \
        --config.pretrained=/path/to/imagenet21k_ViT-B_16.npz

BiT models (bit-r50x1, ...) fine-tune with BiT's own recipe instead, BiT-HyperRule
(configs/common.py: SGD 0.003, batch 512, 500 / 10k / 20k steps by dataset size with 10x
drops, MixUp 0.1 from 20k examples, 128 px crops of images under 96 px, else 480 px):

    python -m vit_jax.main --config=configs/finetune.py:bit-r50x1,cifar10 --workdir=DIR \
        --config.pretrained=BiT-M-R50x1.npz

Arguments: <model>,<dataset>[,<variant>], model as 'b16' / 'ViT-B_16', dataset one of cifar10,
cifar100, oxford_iiit_pet, oxford_flowers102, imagenet2012 (or any TFDS name / folder:DIR
with generic settings), variant one of full (default: every parameter), probe (a linear
probe: the head alone trains), last<N> (the last N blocks, final norm and head), llrd
(AdamW with layer-wise lr decay 0.75, as BEiT / MAE / DINOv2 fine-tune); the measured
results of each variant are in configs/digits_finetune.py.
Prepare TFDS data first: python -m vit_jax.cli.prepare --dataset=...

`folder:DIR` (DIR/{train,test}/<class>/*.jpg|png, any image size) takes its defaults from
the data: the images' median shorter side (at most 224, a multiple of the patch) as the
resolution, about 20 epochs, and below 20k images batch 64 in float32 (a laptop). On a
laptop, e.g. the digits written as 8x8 PNGs, fine-tuned from the MNIST run of
configs/mnist_pretrain.py (its architecture comes with it), upsampled to 16 px:

    python -m vit_jax.main --config=configs/finetune.py:ViT-digits,folder:/tmp/digits_png \
        --workdir=/tmp/digits_ft --config.pretrained=/tmp/vit_mnist --config.resolution=16 \
        --config.pp_train='to_rgb|inception_crop(16)|value_range(-1, 1)'

Expected (measured 2026-11-23, 2-core CPU, value_range on the host as before
normalize_on_device): 93.0% test accuracy in 32 s (400 steps);
86.6% at the folder's own 8 px (28 s), both with the folder's default augmentation, which
flips images left-right (the run's header says so); digits do not like it, hence the
--config.pp_train above.

Expected (published, ViT-B/16 pre-trained on ImageNet-21k, official code; not re-measured
here for lack of an accelerator): CIFAR-10 99.0% (10k steps; 98.6% after 500 steps),
CIFAR-100 92.1%. Runtime: CIFAR-10 10k steps at 384 px is about 3.5 h on 8 TPU v3 cores
(official repo); for an H100 see BENCHMARKS.md for images/s.

TPU plan (the TPU compiler, 2026-12-06; README "TPU compiler plans"): b16,cifar10 at
384 px, batch 512, fits a v4-8 (14.16 of a TensorCore's 16 GiB). On a v5e-8 it compiles
at 14.62 of 16 GiB (14.45 with --config.model.attention_implementation=einsum): inside
the chip, over the planner's 10% margin; --config.batch_size=256 needs 8.92 GiB (the
paper's recipe at half the batch: scale the steps or the learning rate with it).
"""
from vit_jax import config as config_lib
from vit_jax.configs import common
from vit_jax.data.folder_stats import cpu_sized_resolution, folder_stats
from vit_jax.data.presets import get_preset
from vit_jax.models.presets import MODEL_PRESETS

# dataset -> (total_steps, warmup_steps, lr): the paper's steps, best lr of its grid.
RECIPES = {
    "cifar10": (10_000, 500, 0.003),
    "cifar100": (10_000, 500, 0.01),
    "oxford_iiit_pet": (500, 100, 0.003),
    "oxford_flowers102": (500, 100, 0.003),
    "imagenet2012": (20_000, 500, 0.03),
}


def _fit_to_folder(c, directory: str, patch_size: int) -> None:
  """Defaults from the folder itself: the images' own size (at most 224), about 20 epochs
  in 200-10,000 steps, and for small sets (< 20k images, likely a laptop) batch 64 in
  float32 (bfloat16 is emulated, slowly, on CPUs)."""
  stats = folder_stats(directory)
  if not stats.num_train:
    return  # the trainer names what is missing.
  resolution = cpu_sized_resolution(stats, patch_size)
  common.apply_dataset_preset(c, f"folder:{directory}", resolution=resolution)
  if stats.num_train < 20_000:
    c.batch_size, c.eval_batch_size = 64, 256
    c.model.dtype, c.optimizer_dtype = "float32", "float32"
  epochs = 20 * stats.num_train // c.batch_size
  c.total_steps = min(max(round(epochs, -2), 200), 10_000)
  # A tenth of the steps, also of --config.total_steps=N (a reference, not a number).
  c.warmup_steps = c.get_ref("total_steps") // 10


def _bit_hyperrule(c, dataset: str) -> None:
  """BiT's own fine-tuning recipe, sized by the dataset (its preset's counts, or the
  folder's; any other dataset: the 20k-500k rule at large images)."""
  preset = get_preset(dataset)
  if dataset.startswith("folder:"):
    stats = folder_stats(dataset.removeprefix("folder:"))
    size, side = stats.num_train, stats.median_side
  elif preset is not None and preset.train_examples:
    size, side = preset.train_examples, preset.image_side
  else:
    size, side = 50_000, 224
  common.apply_bit_hyperrule(c, train_examples=size, image_side=side)


def get_config(arg=None):
  model, dataset, *variant = common.parse_args(arg, "b16,cifar10")
  c = config_lib.base_config()
  c.model_name = model
  common.apply_dataset_preset(c, dataset)
  c.total_steps, c.warmup_steps, c.lr = RECIPES.get(dataset, (10_000, 500, 0.003))
  bit = MODEL_PRESETS[model]["family"] == "bit"
  # base_config() already is the recipe's SGD (momentum 0.9, no weight decay, clipping at
  # norm 1), batch 512 and a fresh head.
  c.optimizer_dtype = "bfloat16"   # as the official code keeps momentum.
  c.model.dtype = "bfloat16"
  if bit:
    _bit_hyperrule(c, dataset)
  elif dataset.startswith("folder:"):
    _fit_to_folder(c, dataset.removeprefix("folder:"), MODEL_PRESETS[model]["patch_size"])
  c.evals.test.every = 1000 if c.total_steps > 1000 else 100
  if dataset == "imagenet2012":  # the paper's second ImageNet number, at the end.
    c.evals.real = config_lib.real_eval(every=0)
  c.checkpoint_every = 1000 if c.total_steps > 1000 else 250
  common.apply_finetune_variant(c, variant[0] if variant else "full")
  if variant and variant[0] == "llrd":
    c.optimizer_dtype = "float32"  # Adam's second moment is float32 anyway.
  return c.lock()
