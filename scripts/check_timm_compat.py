r"""Cross-framework check: a checkpoint written by `vit_jax.convert.npz_format.save_npz` loads into
timm through timm's own loader for the published .npz files
(`timm.models.vision_transformer._load_weights`) and gives the same logits.

    python scripts/check_timm_compat.py [--model=ViT-S_16] [--resolution=64]

Needs torch and timm (not vit_jax dependencies, so this is a script, not a CI test).
Exits 1 if the logits differ by more than 1e-4 relative.
"""
import argparse
import os
import sys
import tempfile

import jax
import numpy as np

from vit_jax.convert import npz_format
from vit_jax.models import create_model
from vit_jax.models import params as params_lib


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--model", default="ViT-S_16")
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--num_classes", type=int, default=10)
  args = parser.parse_args()
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from timm.models.vision_transformer import _load_weights  # pylint: disable=g-import-not-at-top

  model = create_model(args.model, num_classes=args.num_classes)
  shape = (1, args.resolution, args.resolution, 3)
  params = jax.device_get(model.init(jax.random.key(0), np.zeros(shape, np.float32))["params"])
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: (rng.standard_normal(x.shape) * 0.05).astype(np.float32),
                        params_lib.flatten(params))
  params = params_lib.unflatten(params)
  images = rng.uniform(-1, 1, (2, *shape[1:])).astype(np.float32)
  ours = np.asarray(model.apply({"params": params}, images))

  net = timm.models.vision_transformer.VisionTransformer(
      img_size=args.resolution, patch_size=model.patch_size, embed_dim=model.hidden_size,
      depth=model.num_layers, num_heads=model.num_heads,
      mlp_ratio=model.mlp_dim / model.hidden_size, num_classes=args.num_classes,
      act_layer=lambda: torch.nn.GELU(approximate="tanh"))  # as the checkpoints were trained.
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "model.npz")
    npz_format.save_npz(params, path)
    _load_weights(net, path)
  net.eval()
  with torch.no_grad():
    theirs = net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
  rel = np.linalg.norm(ours - theirs) / np.linalg.norm(ours)
  print(f"timm {timm.__version__}: {args.model} at {args.resolution}px, relative logit "
        f"difference {rel:.2e}")
  return 0 if rel < 1e-4 else 1


if __name__ == "__main__":
  sys.exit(main())
