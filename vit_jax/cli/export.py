r"""Export a checkpoint for serving: StableHLO, ONNX or a TF SavedModel.

    python -m vit_jax.cli.export --checkpoint=/tmp/vit_quickstart --format=onnx \
        --out=/tmp/quickstart_onnx
    python -m vit_jax.cli.export --checkpoint=ViT-B_16.npz --format=stablehlo \
        --out=/tmp/b16_hlo --uint8_input --input_size=256

`--checkpoint` is anything vit_jax reads (a run's workdir, .npz, timm .safetensors/.pth,
a Hugging Face directory). OUT is a directory (local or gs://) holding the model file
(`model.stablehlo`, `model.onnx`, or the SavedModel) and `signature.json` (input shape and
dtype, output, preprocessing, source). The batch axis is dynamic in every format.
StableHLO (reload: `jax.export.deserialize(bytes).call(x)`) and ONNX (from the same JAX
function with jax2onnx, opset 21, no PyTorch; ONNX Runtime) cover every model family;
SavedModel needs TensorFlow. Full flag list: --helpfull.
"""
from absl import flags

from vit_jax import console
from vit_jax.cli import common
from vit_jax.errors import UserError
from vit_jax.serving.export import FORMATS, export
flags.DEFINE_string("checkpoint", None, "A run's workdir, .npz, timm file or Hugging Face "
                    "directory.", required=True)
flags.DEFINE_enum("format", "stablehlo", FORMATS, "Export format.")
flags.DEFINE_string("out", None, "Output directory (local or gs://).", required=True)
flags.DEFINE_enum("output", "logits", ["logits", "features"], "Logits, or the pooled "
                  "features (pre-logits).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_bool("uint8_input", False, "Take raw uint8 pixels: the checkpoint's resize "
                  "and normalisation run inside the graph.")
flags.DEFINE_integer("input_size", 0, "With --uint8_input: the input images' side (0: the "
                     "model's resolution).")
flags.DEFINE_enum("params", "live", ["live", "ema"], "A run's parameters or their moving "
                  "average.")
flags.DEFINE_string("model", None, "Model name, where the file cannot tell (R50 hybrids).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --out.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; see --help.")
  if FLAGS.format == "savedmodel":  # TensorFlow's start-up banners off the console.
    common.import_tensorflow()
  path = export(FLAGS.checkpoint, FLAGS.format, FLAGS.out, output=FLAGS.output,
                dtype=FLAGS.dtype, uint8_input=FLAGS.uint8_input, input_size=FLAGS.input_size,
                params=FLAGS.params, model_name=FLAGS.model, overwrite=FLAGS.overwrite)
  console.line(f"Wrote {path} (and signature.json beside it)")


if __name__ == "__main__":
  common.run(main)
