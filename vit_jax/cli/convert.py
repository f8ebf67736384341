r"""Convert checkpoints into vit_jax's `.npz` (architecture and preprocessing recorded), or
export a run / `.npz` to timm, Hugging Face or OpenCLIP.

    python -m vit_jax.convert SRC OUT.npz [--timm_model=NAME] [--num_heads=N]
    python -m vit_jax.convert --to=timm RUN_OR_NPZ OUT.safetensors
    python -m vit_jax.convert --to=hf RUN_OR_NPZ OUT_DIR
    python -m vit_jax.convert --to=openclip RUN_OR_NPZ OUT.safetensors   (CLIP towers)
    python -m vit_jax.convert --to=bit_published BIT_RUN_OR_NPZ OUT.npz    (BiT models)
    python -m vit_jax.convert --to=big_vision RUN_OR_NPZ OUT.npz   (big_vision's ViT, FlexiViT)

SRC: a timm `.safetensors` / `.pth` (the model name is read from a Hub `config.json`
beside it, else give --timm_model where it matters: heads of unusual widths, SigLIP's
tanh GELU, the mean/std), an OpenCLIP `.safetensors` / `.bin` (its image tower), a
Hugging Face model directory (ViT, DeiT, DINOv2, DINOv2 with registers, MAE, SigLIP,
CLIP), a big_vision `.npz` (ViT, BiT), a published ViT / Mixer / BiT `.npz`, a timm
`resnetv2_*_bit` file, or a run's
workdir. OUT.npz then works as `--config.pretrained=OUT.npz`, in `vit_jax.cli.predict`
and `vit_jax.cli.evaluate`, and in `vit_jax.load_pretrained` with no further flags.
"""
from absl import flags

from vit_jax.cli import common

flags.DEFINE_enum("to", "npz", ["npz", "timm", "hf", "openclip", "bit_published", "big_vision"],
                  "Output format (bit_published: a BiT model in the BiT paper's .npz layout; "
                  "big_vision: a ViT as big_vision's models/vit.py and FlexiViT load it).")
flags.DEFINE_string("timm_model", None, "timm model name of SRC, where it cannot be inferred.")
flags.DEFINE_string("model", None, "vit_jax preset of a published .npz (R50 hybrids only).")
flags.DEFINE_integer("num_heads", None, "Attention heads, where the width does not tell.")
flags.DEFINE_enum("params", "live", ["live", "ema"],
                  "A run's trained parameters, or their moving average (ema_decay).")
FLAGS = flags.FLAGS


def describe(checkpoint) -> str:
  arch = checkpoint.arch
  shape = ", ".join(f"{k}={v}" for k, v in arch.items() if k != "family")
  pre = checkpoint.preprocessing
  return (f"{arch['family']}: {shape}\npreprocessing: {pre.get('resolution')} px, mean "
          f"{pre.get('mean')}, std {pre.get('std')}")


def main(argv):
  from vit_jax import convert, storage  # pylint: disable=g-import-not-at-top
  from vit_jax.convert import openclip_format, timm_format  # pylint: disable=g-import-not-at-top
  from vit_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  if len(argv) != 3:
    raise UserError("give a source and an output: python -m vit_jax.convert SRC OUT")
  source, out = argv[1:]
  if FLAGS.to in ("npz", "bit_published", "big_vision") and not out.endswith(".npz"):
    raise UserError(f"OUT={out!r} must end in .npz (or pass --to=timm / hf / openclip).")
  if storage.path(out).exists():
    raise UserError(f"{out} already exists; choose another name (nothing was overwritten).")
  checkpoint = convert.read(source, timm_model=FLAGS.timm_model, model_name=FLAGS.model,
                            num_heads=FLAGS.num_heads, params=FLAGS.params)
  print(f"Read {checkpoint.source}")
  for note in checkpoint.notes:
    print(f"  note: {note}")
  print(describe(checkpoint))
  if FLAGS.to == "npz":
    convert.write_npz(checkpoint, out)
  elif FLAGS.to == "bit_published":
    convert.write_bit_published(checkpoint, out)
  elif FLAGS.to == "big_vision":
    convert.write_big_vision(checkpoint, out)
  elif FLAGS.to == "timm":
    kwargs = convert.write_timm(checkpoint, out)
    print(f"timm: {timm_format.timm_code(checkpoint.arch, kwargs, out)}")
  elif FLAGS.to == "openclip":
    convert.write_openclip(checkpoint, out)
    code = openclip_format.openclip_code(checkpoint.arch, checkpoint.num_classes, out)
    print(f"OpenCLIP: {code}")
  else:
    architecture = convert.write_hf(checkpoint, out)
    print(f"transformers: from transformers import {architecture}; "
          f"model = {architecture}.from_pretrained({out!r})")
  print(f"Wrote {out}")


if __name__ == "__main__":
  common.run(main)
