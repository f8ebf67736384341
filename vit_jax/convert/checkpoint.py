"""One reader for every checkpoint: `read(path) -> Checkpoint` (architecture, parameters,
preprocessing), used by `load_pretrained`, fine-tuning, inference, evaluation and the
converters alike.

`path` is a published or converted `.npz`, a big_vision `.npz`, a Hugging Face model
directory, a timm or OpenCLIP `.safetensors` / `.pth` file (or a Hub directory of one), or
a vit_jax run's workdir. Parameters
are in vit_jax's layout (per-layer blocks, published names); a run's are read only when
first used, and can go straight onto a mesh (`Checkpoint.placed`). Nothing here needs
torch, timm or transformers, except `.pth` / `pytorch_model.bin` files (torch pickles).
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from typing import Any, Callable, Optional

import jax
import numpy as np
from etils import epath

from vit_jax import config as config_lib
from vit_jax import sharding, storage
from vit_jax.convert import (big_vision_format, bit_format, hf_format, hf_mae_format, hub,
                             npz_format, openclip_format, run_format, timm_format)
from vit_jax.errors import UserError, first_line
from vit_jax.models import MODEL_PRESETS, family_module, family_of, resolve_model_name
from vit_jax.models import family as family_lib
from vit_jax.models import lora
from vit_jax.objectives import module_of as objective_module, split_own
from vit_jax.models.params import head_classes, unflatten
from vit_jax.models.vit_layout import model_overrides, posemb_grid
from vit_jax.pp import builder

# The preprocessing of the published ViT / Mixer files and of big_vision: [-1, 1] inputs.
INCEPTION = {"mean": timm_format.INCEPTION_MEAN, "std": timm_format.INCEPTION_STD,
             "resize": "bilinear"}


@dataclasses.dataclass
class Checkpoint:
  arch: dict[str, Any]            # family + hyper-parameters for vit_jax.models.create_model.
  preprocessing: dict[str, Any]   # the source's record: resolution, mean, std, resize.
  source: str                     # what it was read from, for the log.
  notes: list[str] = dataclasses.field(default_factory=list)
  # The source states its architecture and preprocessing (converted .npz, timm, Hugging
  # Face, big_vision, a run's config.json); a published .npz's are inferred or named.
  self_described: bool = True
  config: Any = None              # a run's training config (ml_collections), else None.
  step: Optional[int] = None      # a run's checkpoint step.
  # What it was trained for (vit_jax.objectives) and that objective's own top-level
  # parameters (MAE's decoder), kept apart from the backbone's: `params` is the backbone,
  # what every writer and a fine-tuning for another objective take;
  # `objective_params` the rest, which continuing the same objective takes too.
  # `objective_config`: the config fields those parameters need ({'mae': {'decoder': ..}}).
  objective: str = "classification"
  own_params: tuple[str, ...] = ()
  objective_config: dict = dataclasses.field(default_factory=dict)
  _params: Optional[dict] = None
  _own: Optional[dict] = None
  _load: Optional[Callable[[], dict]] = dataclasses.field(default=None, repr=False)
  _restore: Optional[Callable[[Any], Any]] = dataclasses.field(default=None, repr=False)

  @classmethod
  def of(cls, arch: dict, params: dict, preprocessing: dict, source: str,
         **kwargs) -> "Checkpoint":
    """A checkpoint whose parameters are already in memory."""
    return cls(arch, preprocessing, source, _params=params, **kwargs)

  @property
  def params(self) -> dict[str, Any]:
    """Host numpy parameters of the backbone, nested, per-layer blocks (read on first
    use)."""
    if self._params is None:
      self._params = self._load()
    if self._own is None:
      self._params, self._own = split_own(self._params, self.own_params)
    return self._params

  @property
  def objective_params(self) -> dict[str, Any]:
    """The objective's own parameters ({} for a classifier)."""
    _ = self.params  # loaded and split.
    return self._own
  def placed(self, abstract_params: Any) -> Any:
    """The parameters as arrays with `abstract_params`' shardings (any mesh): a run's are
    restored straight onto the devices; others go from the host copy."""
    if self._restore is not None and self._params is None:
      return self._restore(abstract_params)
    shardings = sharding.shardings_of(abstract_params)
    return sharding.place(self.params, shardings)

  def release(self) -> None:
    """Drops the host copy of the parameters (fine-tuning has placed them)."""
    if self._load is not None:
      self._params = self._own = None

  @property
  def meta(self) -> dict[str, dict[str, Any]]:
    return {"arch": self.arch, "preprocessing": self.preprocessing}

  @property
  def num_classes(self) -> Optional[int]:
    return head_classes(self.params)

  @property
  def pp(self) -> str:
    """uint8 images of any size -> the model's inputs, as a pp string: a run's own eval
    preprocessing, else the source's record (size and normalisation)."""
    if self.config is not None:
      return self.config.pp_eval
    return pp_of_record(self.preprocessing)


def pp_of_record(record: dict[str, Any]) -> str:
  """A source's preprocessing record -> the pp string that reproduces it."""
  mean = tuple(record.get("mean", INCEPTION["mean"]))
  std = tuple(record.get("std", INCEPTION["std"]))
  value_map = ("value_range(-1, 1)" if mean == (0.5, 0.5, 0.5) and std == (0.5, 0.5, 0.5)
               else f"normalize({mean}, {std})")
  resolution = int(record.get("resolution", 224))
  method = record.get("resize", "bilinear")
  how = "" if method == "bilinear" else f", method={method!r}"
  if record.get("max_num_patches"):  # NaFlex (SigLIP 2): aspect kept, a patch budget.
    budget, patch = int(record["max_num_patches"]), int(record["patch_size"])
    return (f"to_rgb|resize_to_sequence({budget}, {patch}{how})|{value_map}|"
            f"patchify({patch}, {budget})")
  # The source's evaluation resize: the shorter side, then a centre crop (transformers'
  # shortest_edge + crop_size; timm's crop_pct), else a square resize.
  shorter = record.get("resize_small") or (
      math.floor(resolution / record["crop_pct"]) if record.get("crop_pct") else None)
  if shorter:
    return (f"to_rgb|resize_small({int(shorter)}{how})|central_crop({resolution})|"
            f"{value_map}")
  return f"to_rgb|resize({resolution}{how})|{value_map}"


def record_of_pp(pp: str) -> dict[str, Any]:
  """A pp string -> the record other frameworks' files hold: output size, mean, std."""
  size = builder.output_size(pp)
  affine = builder.final_affine(pp)
  record = {"resolution": size[0] if size else 224, **INCEPTION}
  for spec in builder.parse(pp):  # the resize: its method, and a shorter-side resize.
    if spec.name == "patchify":  # NaFlex: the patch budget instead of a size.
      arguments = spec.bound().arguments
      record.update(max_num_patches=int(arguments["max_num_patches"]),
                    patch_size=int(arguments["patch_size"]))
    if spec.name in ("resize", "resize_small", "resize_to_sequence"):
      kwargs = dict(spec.kwargs)
      if kwargs.get("method", "bilinear") != "bilinear":
        record["resize"] = kwargs["method"]
      if spec.name == "resize_small":
        record["resize_small"] = int(spec.args[0] if spec.args else kwargs["size"])
  if affine is not None:
    value_map = affine.make()
    std = 1.0 / (255.0 * np.asarray(value_map.scale, np.float64))
    record["std"] = tuple(float(round(s, 6)) for s in np.broadcast_to(std, (3,)))
    record["mean"] = tuple(float(round(m, 6)) for m in np.broadcast_to(
        -np.asarray(value_map.offset, np.float64) * std, (3,)))
  return record


def _load_tensors(path: epath.Path) -> dict[str, np.ndarray]:
  """A .safetensors (numpy, no torch) or a torch pickle (.pth, .bin, .pt)."""
  if path.name.endswith(".safetensors"):
    from safetensors.numpy import load  # pylint: disable=g-import-not-at-top
    try:
      return load(path.read_bytes())
    except Exception as e:  # pylint: disable=broad-except  (SafetensorError, bad JSON)
      raise UserError(f"{path} is not a readable .safetensors file ({first_line(e, 160)}): "
                      f"it is damaged or cut short; download or write it again.") from None
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f"{path} is a torch pickle: reading it needs torch (pip install torch), "
                    f"or convert the .safetensors version instead.") from None
  try:
    state = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  (UnpicklingError, bad zip)
    why = ("it holds more than tensors, and torch's weights-only loader refused it (no "
           "code in a checkpoint is ever run): save its state_dict, or use a .safetensors "
           "version" if "weights only" in str(e).lower() else
           f"damaged or not a torch file ({first_line(e, 160)}): download or write it again")
    raise UserError(f"{path} cannot be read: {why}.") from None
  for key in ("state_dict", "model", "module"):  # training checkpoints wrap the weights.
    if isinstance(state, dict) and key in state and isinstance(state[key], dict):
      state = state[key]
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
          for k, v in state.items() if hasattr(v, "numpy")}


def read_json(path) -> Optional[dict]:
  path = storage.path(path)
  return json.loads(path.read_text()) if path.exists() else None


def is_hf_directory(directory) -> bool:
  return _is_hf_config(read_json(storage.path(directory) / "config.json"))


def _is_hf_config(config: Optional[dict]) -> bool:
  return bool(config) and ("model_type" in config or "vision_config" in config)


# Weight files that make a directory a timm or OpenCLIP Hub repository.
_HUB_WEIGHTS = ("model.safetensors", *openclip_format.WEIGHT_FILES)


def is_run_directory(path) -> bool:
  """A run's workdir or checkpoint directory (a directory, not a Hugging Face model or a
  timm / OpenCLIP Hub repository)."""
  path = storage.path(path)
  return (path.is_dir() and not is_hf_directory(path)
          and not any((path / name).exists() for name in _HUB_WEIGHTS))


def _timm_name(path: epath.Path, config: dict, timm_model: Optional[str]) -> Optional[str]:
  """The timm model name: given, or from the Hub-style config.json beside the file."""
  if timm_model:
    return timm_model
  name = config.get("architecture") or config.get("model_name")
  return name or path.parent.name or None


def _timm_pretrained_cfg(config: dict) -> dict[str, Any]:
  """The preprocessing timm wrote beside its weights (a Hub config.json's pretrained_cfg):
  it replaces what the model name suggests."""
  cfg = config.get("pretrained_cfg") or {}
  record = {k: tuple(cfg[k]) for k in ("mean", "std") if k in cfg}
  if cfg.get("input_size"):
    record["resolution"] = int(cfg["input_size"][-1])
  if cfg.get("interpolation") in ("bilinear", "bicubic"):
    record["resize"] = cfg["interpolation"]
  if cfg.get("crop_pct") and cfg.get("crop_mode", "center") == "center":
    record["crop_pct"] = float(cfg["crop_pct"])
  return record


def _read_hf(directory: epath.Path, config: dict) -> Checkpoint:
  weights = [directory / name for name in ("model.safetensors", "pytorch_model.bin")]
  weights = [w for w in weights if w.exists()]
  if not weights:
    raise UserError(f"{directory} has a config.json but no model.safetensors or "
                    f"pytorch_model.bin.")
  processor = read_json(directory / "preprocessor_config.json")
  state = _load_tensors(weights[0])
  arch, flat, preprocessing, notes = hf_format.to_params(config, state, processor)
  objective = hf_mae_format.objective_of(config, state)
  extra = {}
  if objective is not None:  # ViTMAEForPreTraining: its decoder, kept apart.
    flat.update(hf_mae_format.decoder_params(config, state))
    extra = dict(objective="mae", own_params=("decoder",), objective_config=objective)
  return Checkpoint.of(arch, unflatten(flat), preprocessing,
                       f"Hugging Face {config.get('model_type')} model {directory}",
                       notes=notes, **extra)


# config.model fields that do not describe the architecture.
_TRAINING_ONLY = ("dtype", "dropout_rate", "attention_dropout_rate", "stochastic_depth_rate",
                  "head_bias_init", "head_kernel_init_std", "attention_implementation",
                  "remat_policy", "scan_layers", "input_patch_size")


def run_arch(config) -> dict[str, Any]:
  """A run's architecture: its preset's hyper-parameters with the config's overrides."""
  try:
    arch = dict(MODEL_PRESETS[resolve_model_name(config.model_name)])
  except UserError:
    arch = {"family": config.model_name}
  arch.update({k: v for k, v in config.model.to_dict().items() if v is not None
               and k not in _TRAINING_ONLY})
  return arch


def _read_run(directory: epath.Path, step: Optional[int], params: str = "live",
              stored: Optional[dict] = None) -> Checkpoint:
  """A run's workdir (or its checkpoint directory alone: then parameters only);
  `stored`: its config.json, already read."""
  _, latest = run_format.latest_complete_step(directory)
  step = latest if step is None else step
  if stored is None:
    return Checkpoint({}, {}, f"checkpoints {directory}", self_described=False, step=step,
                      _load=lambda: run_format.restore_as_numpy(directory, step)[0])
  config = config_lib.from_stored(stored)
  arch = run_arch(config)
  family = family_of(config.model_name)
  key = {"live": "params", "ema": "ema_params"}[params]
  adapters = lora.LoraSpec.from_config(config)

  def load():  # LoRA adapters merged: plain weights any model of the family takes.
    restored = run_format.restore_as_numpy(directory, step, key=key)[0]
    if adapters is not None:
      restored = jax.tree.map(np.asarray, lora.merge(restored, adapters.scale))
    return family_lib.per_layer_params(family, restored)

  def restore(abstract_params):
    if adapters is not None and not lora.has_adapters(abstract_params):
      return sharding.place(load(), jax.tree.map(lambda x: x.sharding, abstract_params))
    return run_format.restore_params(directory, abstract_params, step, key=key)[0]
  what = "" if params == "live" else f", {params} parameters"
  objective = config.get("objective") or "classification"
  declared = objective_module(objective).Objective
  own, section = declared.own_params, declared.config_section
  return Checkpoint(arch, record_of_pp(config.pp_eval), f"run {directory} (step {step}{what})",
                    config=config, step=step, objective=objective, own_params=own,
                    objective_config={section: config[section].to_dict()} if section else {},
                    _load=load, _restore=restore)


def _read_npz(path: epath.Path, model_name: Optional[str],
              num_heads: Optional[int]) -> Checkpoint:
  flat = npz_format.read_arrays(path)  # read once: checkpoints can be gigabytes.
  params, meta = npz_format.split_meta(flat)
  if meta.get("arch"):
    return Checkpoint.of(meta["arch"], params, meta.get("preprocessing") or {}, f"{path}")
  if bit_format.is_published(flat):
    arch, params, preprocessing = bit_format.from_published(flat)
    return Checkpoint.of(arch, params, preprocessing, f"BiT checkpoint {path}")
  if bit_format.is_big_vision(big_vision_format.strip_towers(flat)):
    arch, params, preprocessing = bit_format.from_big_vision(
        big_vision_format.strip_towers(flat))
    return Checkpoint.of(arch, params, preprocessing, f"big_vision BiT checkpoint {path}")
  if big_vision_format.is_big_vision(flat):
    arch, params, preprocessing = big_vision_format.to_params(flat, num_heads=num_heads)
    notes = []
    if "flexi" in path.name.lower():  # big_vision's FlexiViT files (flexivit_*.npz).
      arch.update(posemb_resample="bilinear", posemb_antialias=True)
      notes.append("FlexiViT: position embeddings resampled as big_vision's flexi model "
                   "does (linear, antialiased); any patch size through "
                   "--config.flexi.patch_sizes or evals.*.patch_sizes")
    return Checkpoint.of(arch, params, preprocessing, f"big_vision checkpoint {path}",
                         notes=notes)
  arch = published_arch(params, model_name)
  grid = _posemb_grid(arch, params)
  patch = arch["patch_size"] * (16 if arch.get("resnet_layers") else 1)
  resolution = grid[0] * patch if grid else 224
  return Checkpoint.of(arch, params, {"resolution": resolution, **INCEPTION}, f"{path}",
                       self_described=False)


def _posemb_grid(arch: dict, params: dict):
  return posemb_grid(params) if arch["family"] == "vit" else None


def published_arch(params: dict, model_name: Optional[str] = None) -> dict[str, Any]:
  """The architecture of a published `.npz` read off its shapes by each built-in family
  (a preset name is needed only for the R50 hybrids)."""
  if model_name:
    arch = dict(MODEL_PRESETS[resolve_model_name(model_name)])
    _check_matches(model_name, arch, params)
    if arch["family"] == "vit":
      arch.update(model_overrides(params))
    return arch
  for family in ("mixer", "vit"):
    try:
      arch = family_lib.arch_from_params(family_module(family), params)
    except (KeyError, IndexError, ValueError) as e:  # a partial or foreign file.
      raise UserError(f"This .npz looks like a {family} checkpoint but lacks what its "
                      f"architecture is read from ({type(e).__name__}: {e}); is the file "
                      f"complete?") from None
    if arch is not None:
      return arch
  raise UserError("This .npz holds neither a ViT nor an MLP-Mixer (no Transformer / "
                  "MixerBlock_0 parameters).")


def _check_matches(model_name: str, arch: dict, params: dict) -> None:
  """A preset named for a file must have the file's patch size and width."""
  kernel = (params.get("embedding") or params.get("stem") or {}).get("kernel")
  if kernel is None or arch.get("resnet_layers"):
    return
  for field, value in (("patch_size", kernel.shape[0]), ("hidden_size", kernel.shape[-1])):
    if arch[field] != value:
      raise UserError(f"{model_name} has {field}={arch[field]} but the checkpoint's is "
                      f"{value}; leave the model name out to read the architecture off the "
                      f"file.")


def read(path: str, *, timm_model: Optional[str] = None, model_name: Optional[str] = None,
         num_heads: Optional[int] = None, step: Optional[int] = None,
         params: str = "live", what: str = "checkpoint") -> Checkpoint:
  """Any supported checkpoint -> Checkpoint (see the module docstring). `timm_model`,
  `model_name` (published R50 hybrids) and `num_heads` only where the file cannot tell;
  `step`: a run's checkpoint step (default: its newest); `params`: a run's 'live'
  parameters or their moving average, 'ema'. A LoRA run's adapters are merged. `what`
  names the path in the error when there is nothing there (e.g. 'pretrained')."""
  if params not in ("live", "ema"):
    raise UserError(f"params={params!r} is not one of 'live', 'ema'.")
  path = hub.weights_of(path)  # a preset's name: its published weights.
  if hub.is_hub_name(path):
    path = hub.snapshot(path)
  path = storage.check_reachable(path, what=what)
  is_dir = path.is_dir()
  stored = read_json(path / "config.json") if is_dir else None  # read once, used twice.
  hf = _is_hf_config(stored)
  if is_dir and not hf:
    # A timm Hub repository (config.json names the model) or an OpenCLIP one.
    weights = next((path / name for name in _HUB_WEIGHTS if (path / name).exists()), None)
    if weights is not None:
      path, is_dir = weights, False
  if params != "live" and not (is_dir and not hf):
    raise UserError(f"params={params!r}: only a vit_jax run has a moving average; "
                    f"{os.fspath(path)} is not one.")
  if is_dir:
    return _read_hf(path, stored) if hf else _read_run(path, step, params, stored)
  if path.name.endswith(".npz"):
    return _read_npz(path, model_name, num_heads)
  if path.name.endswith((".safetensors", ".pth", ".pt", ".bin")):
    state = _load_tensors(path)
    if openclip_format.is_openclip(state):
      arch, flat, preprocessing = openclip_format.to_params(
          state, read_json(path.parent / "open_clip_config.json"), num_heads)
      return Checkpoint.of(arch, unflatten(flat), preprocessing,
                           f"OpenCLIP image tower {path}")
    hub_config = read_json(path.parent / "config.json") or {}
    if bit_format.is_timm(state):
      arch, params, preprocessing = bit_format.from_timm(state)
      preprocessing = {**preprocessing, **_timm_pretrained_cfg(hub_config)}
      return Checkpoint.of(arch, params, preprocessing, f"timm BiT checkpoint {path}")
    name = _timm_name(path, hub_config, timm_model)
    # timm's push_to_hub records the create_model kwargs of a non-standard size.
    model_args = hub_config.get("model_args") or {}
    arch, flat, preprocessing = timm_format.to_params(
        state, name=name, num_heads=num_heads or model_args.get("num_heads"))
    preprocessing = {**preprocessing, **_timm_pretrained_cfg(hub_config)}
    return Checkpoint.of(arch, unflatten(flat), preprocessing,
                         f"timm checkpoint {path}" + (f" ({name})" if name else ""))
  raise UserError(f"Cannot tell the format of {path!r}: expected a .npz, a .safetensors / "
                  f".pth (timm, OpenCLIP), a Hugging Face model directory or a vit_jax "
                  f"workdir.")
