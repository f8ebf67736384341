"""Every reader and writer of parameters: checkpoints from everywhere as one thing.

    checkpoint = convert.read(path)    # .npz (published, converted, big_vision), Hugging
                                       # Face directory, timm or OpenCLIP file, a vit_jax
                                       # run, a Hub name
    convert.write_npz(checkpoint, "out.npz")   # or write_timm / write_hf / write_openclip /
                                               # write_big_vision

Modules: `checkpoint` (the `Checkpoint` and `read`), `writers`, one module per format
(`npz_format`, `run_format`, `timm_format`, `hf_format` with `hf_dinov3_format`,
`big_vision_format`, `openclip_format`, `bit_format`: BiT's published, big_vision and
timm layouts) over the shared renaming rules (`layouts`), `hub`
(names), and the user-facing loaders (`pretrained`: load_pretrained and preprocessing_of;
`inference`: a model with its labels, for predict and visualize).
"""
from vit_jax.convert.checkpoint import Checkpoint, is_hf_directory, is_run_directory, read
from vit_jax.convert.writers import (write_big_vision, write_bit_published, write_hf,
                                     write_npz, write_openclip, write_timm)

__all__ = ["Checkpoint", "read", "is_hf_directory", "is_run_directory", "write_npz",
           "write_timm", "write_hf", "write_openclip", "write_bit_published",
           "write_big_vision"]
