"""A tiny, fast training config for tests: ViT-test on the offline digits (8 px)."""
from vit_jax import config as config_lib
from vit_jax.configs import common


def get_config(arg=None):
  del arg
  c = config_lib.base_config()
  c.model_name = "ViT-test"          # width 32, 2 layers, 4x4 patches -> 4 tokens.
  common.apply_dataset_preset(c, "sklearn_digits")
  c.pp_train = "to_rgb|inception_crop(8, area_min=70)|value_range(-1, 1)"
  c.optimizer = "adam"
  c.lr = 0.003
  c.weight_decay = 0.1
  c.batch_size = 32
  c.eval_batch_size = 400
  c.warmup_steps = 2
  c.total_steps = 12
  c.log_every = 1
  c.evals.test.every = 0
  c.checkpoint_every = 5
  return c.lock()
