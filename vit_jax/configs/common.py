"""What config files share: a dataset's splits and preprocessing (`apply_dataset_preset`),
fine-tuning variants (`apply_finetune_variant`) and the `model,dataset,...` argument of a
config file (`parse_args`), on top of the schema, `vit_jax.config.base_config()`."""
from __future__ import annotations

import ml_collections

from vit_jax import storage
from vit_jax.data.presets import GENERIC_SPLITS, TRAIN_ONLY_SPLITS, get_preset
from vit_jax.errors import UserError
from vit_jax.models.presets import resolve_model_name


def _has_train_only(directory: str) -> bool:
  """An image folder with train/ and no test/ (a stratified test cut is held out)."""
  root = storage.path(directory)
  try:
    return (root / "train").is_dir() and not (root / "test").is_dir()
  except Exception:  # pylint: disable=broad-except  (unreachable storage: the trainer says)
    return False


def apply_dataset_preset(c: ml_collections.ConfigDict, dataset: str, *,
                         resolution: int | None = None) -> None:
  """Splits and preprocessing of a known dataset at `resolution` (default: its preset's)."""
  preset = get_preset(dataset)
  c.dataset = dataset
  if preset is None:  # any other TFDS dataset or image folder: generic defaults.
    res = resolution or 224
    c.train_split, c.val_split, c.test_split = GENERIC_SPLITS
    if dataset.startswith("folder:") and _has_train_only(dataset.removeprefix("folder:")):
      c.train_split, c.val_split, c.test_split = TRAIN_ONLY_SPLITS
    c.pp_train = f"to_rgb|inception_crop({res})|flip_lr|value_range(-1, 1)"
    c.pp_eval = f"to_rgb|resize({res})|value_range(-1, 1)"
    return
  res = resolution or preset.resolution
  c.train_split, c.val_split, c.test_split = (preset.train_split, preset.val_split,
                                              preset.test_split)
  flip = "|flip_lr" if preset.flip else ""
  c.pp_train = f"to_rgb|inception_crop({res}){flip}|value_range(-1, 1)"
  c.pp_eval = f"to_rgb|resize({res})|value_range(-1, 1)"


FINETUNE_VARIANTS = ("full", "probe", "last<N>", "llrd")


def apply_finetune_variant(c: ml_collections.ConfigDict, variant: str) -> None:
  """A fine-tuning recipe's variant (after the model is set):

  - 'full': every parameter trains (the paper's recipe);
  - 'probe': a linear probe, only the head trains (no optimizer state for the rest);
  - 'last<N>': the last N blocks, the final norm and the head train;
  - 'llrd': every parameter, AdamW with layer-wise learning-rate decay 0.75 and weight
    decay 0.05 (BEiT / MAE / DINOv2 fine-tuning), lr 1e-3.
  """
  if variant in ("", "full"):
    return
  if variant == "probe":
    c.frozen = r"^(?!head/)"
  elif variant.startswith("last") and variant[4:].isdigit() and int(variant[4:]) > 0:
    c.train_last_blocks = int(variant[4:])  # the family names its blocks (param_names).
  elif variant == "llrd":
    c.optimizer, c.lr, c.weight_decay, c.layer_decay = "adam", 1e-3, 0.05, 0.75
  else:
    raise UserError(f"fine-tuning variant {variant!r} is not one of {FINETUNE_VARIANTS}.")


def parse_args(arg: str | None, default: str) -> list[str]:
  """'b16,cifar10' -> ['b16', 'cifar10']; model names are checked here, early."""
  parts = [p.strip() for p in (arg or default).split(",")]
  parts[0] = resolve_model_name(parts[0])
  return parts


def apply_bit_hyperrule(c: ml_collections.ConfigDict, *, train_examples: int,
                        image_side: int) -> None:
  """BiT-HyperRule (Kolesnikov et al. 2020, google-research/big_transfer bit_hyperrule.py),
  BiT's one fine-tuning recipe for any dataset: SGD momentum 0.9 at lr 0.003, batch 512,
  no weight decay; below 20k training examples 500 steps (100 warm-up, 10x lower at 200,
  300 and 400), below 500k 10k steps (500 warm-up; drops at 3k, 6k, 9k), else 20k (500;
  6k, 12k, 18k); MixUp alpha 0.1 from 20k examples; images under 96x96 pixels resized to
  160 and randomly cropped to 128, larger ones 512 -> 480; flips."""
  c.optimizer, c.lr, c.momentum, c.weight_decay = "sgd", 0.003, 0.9, 0.0
  c.batch_size, c.grad_clip_norm = 512, 0.0
  if train_examples < 20_000:
    c.total_steps, c.warmup_steps, c.lr_drops, c.mixup_alpha = 500, 100, (0.4, 0.6, 0.8), 0.0
  elif train_examples < 500_000:
    c.total_steps, c.warmup_steps, c.lr_drops, c.mixup_alpha = 10_000, 500, (0.3, 0.6, 0.9), 0.1
  else:
    c.total_steps, c.warmup_steps, c.lr_drops, c.mixup_alpha = 20_000, 500, (0.3, 0.6, 0.9), 0.1
  c.schedule = "steps"
  precrop, crop = (160, 128) if image_side * image_side < 96 * 96 else (512, 480)
  c.pp_train = f"to_rgb|resize({precrop})|random_crop({crop})|flip_lr|value_range(-1, 1)"
  c.pp_eval = f"to_rgb|resize({crop})|value_range(-1, 1)"
