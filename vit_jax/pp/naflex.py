"""A square-image pp string rewritten for NaFlex inputs (`max_num_patches`): every resize
keeps the aspect ratio within the patch budget, square crops go, and the image ends as a
padded patch sequence (ops in `ops_naflex.py`).

    to_rgb|inception_crop(224)|flip_lr|value_range(-1, 1)
 -> to_rgb|inception_crop_to_sequence(256, 16, 5, 100)|flip_lr|value_range(-1, 1)|patchify(16, 256)
    to_rgb|resize_small(256)|central_crop(224)|value_range(-1, 1)
 -> to_rgb|resize_to_sequence(256, 16)|value_range(-1, 1)|patchify(16, 256)
"""
from __future__ import annotations

from vit_jax.errors import UserError
from vit_jax.pp import builder
from vit_jax.pp.builder import OpSpec

# Ops that only make a square image of the right size: NaFlex sees the whole image.
_SQUARE_CROPS = ("central_crop", "random_crop")
_RESIZES = ("resize", "resize_small")


def is_sequence(pipeline: str) -> bool:
  return any(spec.name == "patchify" for spec in builder.parse(pipeline))


def to_sequence(pipeline: str, max_num_patches: int, patch_size: int, *,
                rebudget: bool = False) -> str:
  """`pipeline` making NaFlex patch sequences of `max_num_patches` `patch_size` patches
  (unchanged when it already ends in patchify; `rebudget`: then with this budget). Ops
  of your own that set a size are refused, with the fix."""
  if is_sequence(pipeline):
    if not rebudget:
      return pipeline
    return builder.join(_rebudgeted(spec, max_num_patches) for spec in builder.parse(pipeline))
  out, sized = [], False
  for spec in builder.parse(pipeline):
    bound = spec.bound().arguments
    method = (("method", bound["method"]),) if bound.get("method", "bilinear") != "bilinear" else ()
    if spec.name in _SQUARE_CROPS:
      continue
    if spec.name in _RESIZES:
      spec = OpSpec("resize_to_sequence", (max_num_patches, patch_size), method)
    elif spec.name == "inception_crop":
      spec = OpSpec("inception_crop_to_sequence",
                    (max_num_patches, patch_size, bound["area_min"], bound["area_max"]))
    elif spec.info.sizes:
      raise UserError(f"max_num_patches: the pp op {str(spec)!r} sets an image size, which "
                      f"NaFlex cannot keep; write the pipeline with resize_to_sequence("
                      f"{max_num_patches}, {patch_size}) and patchify({patch_size}, "
                      f"{max_num_patches}) yourself.")
    sized |= spec.name.endswith("_to_sequence")
    out.append(spec)
  if not sized:  # e.g. data already at its size: the budget still applies.
    out.insert(0, OpSpec("resize_to_sequence", (max_num_patches, patch_size)))
  out.append(OpSpec("patchify", (patch_size, max_num_patches)))
  return builder.join(out)


def _rebudgeted(spec: OpSpec, max_num_patches: int) -> OpSpec:
  """A NaFlex op with another patch budget (the other ops as they are)."""
  if spec.name not in ("resize_to_sequence", "inception_crop_to_sequence", "patchify"):
    return spec
  arguments = dict(spec.bound().arguments, max_num_patches=max_num_patches)
  return OpSpec(spec.name, (), tuple(arguments.items()))
