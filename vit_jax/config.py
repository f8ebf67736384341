"""The base training config, the schema: every field the trainer reads, with its meaning
(each field's meaning for the tools is `config_fields.MEANINGS`), the evaluators' settings,
and a stored config read back. Recipes (datasets' splits and preprocessing, fine-tuning
variants) are `vit_jax/configs/common.py`'s.

Config files under configs/ start from `base_config()` and change what their recipe needs;
the result is locked, so a typo on the command line (--config.lr_rate=...) is an error.
Importing this module imports neither JAX nor TensorFlow: configs load in a blink.
"""
from __future__ import annotations

import copy

import ml_collections
from ml_collections.config_dict import placeholder

from vit_jax.errors import UserError

# Logical axis -> mesh axis (Flax's `nn.logical_axis_rules` format). Parameters: FSDP
# shards the embedding dimension of every large weight over 'fsdp'; tensor parallelism
# shards MLP and attention heads over 'model'. Activations use their own names ('act_*')
# so that the batch is split over data and fsdp while their hidden dimension stays whole.
DEFAULT_SHARDING_RULES = (
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("classes", None),
    ("length", None),
    ("layers", None),
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_mlp", "model"),
    ("act_heads", "model"),
    ("act_kv", None),
)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Model.
  c.model_name = "ViT-B_16"        # a preset from vit_jax/models/presets.py ('b16' works too),
                                   # or a family module ('vit', 'mypackage.my_family').
  # Every hyper-parameter of the model, overridable on the command line. Unset (None):
  # the preset's value; vit_jax/models/vit.py (and mixer.py) say what each one does.
  c.model = ml_collections.ConfigDict({
      # Shape.
      "patch_size": placeholder(int),         # side of the square patches, in pixels.
      "hidden_size": placeholder(int),        # token width.
      "num_layers": placeholder(int),         # transformer blocks.
      "num_heads": placeholder(int),          # attention heads per block.
      "mlp_dim": placeholder(int),            # hidden width of each block's MLP.
      "tokens_mlp_dim": placeholder(int),     # MLP-Mixer only.
      "channels_mlp_dim": placeholder(int),   # MLP-Mixer only.
      "block_sizes": placeholder(tuple),      # BiT: units per stage, e.g. (3, 4, 6, 3).
      "width_factor": placeholder(float),     # BiT: channels x this (R50x3: 3).
      "stem_pool_padding": placeholder(str),  # BiT: 'zeros' (BiT, timm) | '-inf'.
      "norm_groups": placeholder(int),        # BiT: GroupNorm groups (32).
      # Tokens, pooling and position embeddings.
      "classifier": placeholder(str),         # 'token' | 'gap' | 'map' (attention pooling).
      "class_token": placeholder(bool),       # a [class] token with 'gap'/'map' pooling.
      "num_registers": placeholder(int),      # register tokens (DINOv2-reg).
      "representation_size": placeholder(int),  # pre_logits width (pre-training on 21k/JFT).
      "fc_norm": placeholder(bool),           # LayerNorm after pooling (timm), not before.
      "pre_norm": placeholder(bool),          # LayerNorm before the blocks (CLIP).
      "patch_bias": placeholder(bool),        # patch embedding bias (CLIP: none).
      "mlp_norm": placeholder(bool),          # LayerNorm inside the MLP (EVA-02 B/L).
      "rope": placeholder(str),               # rotary embeddings: 'none' | 'eva' | 'dinov3'.
      "rope_temperature": placeholder(float),
      "rope_grid": placeholder(tuple),        # EVA-02's pre-training grid.
      "posemb": placeholder(str),             # 'learned' | 'sincos2d' | 'none'.
      "posemb_resample": placeholder(str),    # 'bilinear' | 'bicubic' | 'bilinear_align_corners'.
      "posemb_antialias": placeholder(bool),  # ... antialiased (timm).
      "posemb_prefix": placeholder(bool),     # learned embeddings cover [class] too.
      "posemb_grid": placeholder(tuple),      # learned grid, resampled to the input's.
      "distillation_token": placeholder(bool),  # DeiT's second token and head.
      # Blocks.
      "layerscale_init": placeholder(float),  # LayerScale (DeiT III 1e-6, DINOv2 1e-5).
      "qk_norm": placeholder(bool),           # LayerNorm on queries and keys (ViT-22B).
      "mlp_activation": placeholder(str),     # 'gelu_tanh' | 'gelu' | 'swiglu'.
      "layernorm_epsilon": placeholder(float),  # LayerNorm's epsilon (1e-6; timm's 1e-6).
      # Training-time settings.
      "dtype": "float32",             # compute dtype ('bfloat16' on accelerators).
      "dropout_rate": 0.0,            # dropout after the MLP and attention outputs.
      "attention_dropout_rate": 0.0,  # dropout on the attention weights.
      "stochastic_depth_rate": 0.0,   # drop-path rate of the last block (DeiT: 0.1).
      "head_bias_init": 0.0,          # -10 for sigmoid pre-training.
      "head_kernel_init_std": 0.0,    # 0: zero head (fine-tuning recipe).
      "attention_implementation": "auto",  # fastest exact: 'pallas' TPU, 'cudnn' GPU, 'einsum'.
      "remat_policy": "none",         # 'none' | 'full' | 'dots' | 'dots_no_batch'.
      "scan_layers": False,           # one scanned block: faster compiles for deep models.
  })
  # Checkpoint to fine-tune from: a published .npz (the model is then model_name's), or
  # one that describes itself (a run's workdir, a `python -m vit_jax.convert` .npz, a
  # Hugging Face directory, a timm .safetensors, a big_vision .npz), whose architecture
  # and input normalisation then replace the config's.
  c.pretrained = placeholder(str)
  c.reset_head = True              # fine-tuning: always start from a fresh zero head.

  # Data. Batch sizes are GLOBAL: summed over all processes and devices.
  c.dataset = "sklearn_digits"     # TFDS name, 'digits', 'pureml_mnist' or 'folder:/path'.
  c.data_dir = placeholder(str)         # TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
  c.label_key = "label"             # the TFDS feature holding the label(s).
  c.train_split = "train"
  # Held out of training, evaluated like `test` (as `val_*`); hyper-parameters (sweep) are
  # chosen on it, never on `test`. '' : none. Datasets set both (see data/presets.py).
  c.val_split = ""
  c.test_split = "test"
  c.pp_train = "to_rgb|inception_crop(224)|flip_lr|value_range(-1, 1)"  # preprocessing ops.
  c.pp_eval = "to_rgb|resize(224)|value_range(-1, 1)"
  c.pp_modules = ()                # your own modules registering pp ops, e.g. ('my_ops',).
  # Train and eval image size: rescales every size in the pp strings (a resize(256)|
  # central_crop(224) eval becomes resize(128)|central_crop(112) at 112); the model's
  # patch grid follows. Unset: the sizes written in the pp strings.
  c.resolution = placeholder(int)
  # NaFlex (SigLIP 2): each image keeps its aspect ratio, resized to at most this many
  # patches and fed as a padded patch sequence (every pp string rewritten: resizes keep
  # the aspect, square crops go, patchify last; model.posemb_grid fixed at the
  # resolution's grid and resized per image). Unset: square images.
  c.max_num_patches = placeholder(int)
  c.batch_size = 512               # global training batch.
  c.eval_batch_size = 512          # global eval batch (the split is padded, never dropped).
  c.input_workers = -1             # input worker processes (-1: none for in-memory data,
                                   # else one per host core, up to 16); the batches do not
                                   # depend on it.
  c.normalize_on_device = True     # pp_train's final value_range/normalize runs in the
                                   # train step: uint8 crosses from the input workers to
                                   # the accelerator (4x fewer bytes, no host float math).
  c.data_shards = 0                # data shards (0: one per process). Fix it to make the
                                   # batches independent of the number of processes.

  # Optimisation.
  c.optimizer = "sgd"              # 'sgd', 'adam' or an optax name: 'lion(b1=0.95)'.
  c.lr = 0.003                     # peak learning rate.
  c.end_lr = 0.0                   # learning rate at the last step.
  c.schedule = "cosine"            # decay after warm-up: 'cosine' | 'linear' | 'constant'
                                   # | 'steps' (10x lower at each of lr_drops).
  c.lr_drops = ()                  # schedule='steps': fractions of total_steps.
  c.warmup_steps = 500
  c.total_steps = 10_000
  c.momentum = 0.9                 # SGD momentum.
  c.b1 = 0.9                       # Adam.
  c.b2 = 0.999
  c.weight_decay = 0.0             # decoupled (AdamW-style), weight matrices only.
  c.grad_clip_norm = 1.0           # global-norm clipping (0: off).
  c.accum_steps = 1                # gradient accumulation micro-batches per step.
  c.optimizer_dtype = "float32"    # first moment / momentum dtype ('bfloat16' halves it).
  # What the model is trained for (vit_jax/objectives): 'classification' (labels),
  # 'mae' (masked autoencoder, `mae` below), 'masked_patch_prediction' (the ViT paper's,
  # `mpp` below) or your own module. The last two need no labels.
  c.objective = "classification"
  c.mae = ml_collections.ConfigDict({
      "mask_ratio": 0.75,          # share of patches hidden from the encoder.
      "norm_pix_loss": True,       # targets: each patch's pixels normalised by its own stats.
      # The light decoder (MAE's ViT-B: width 512, depth 8, 16 heads); mlp_dim unset: 4x;
      # posemb: 'sincos2d_mae' (MAE's fixed table) or 'learned'.
      "decoder": ml_collections.ConfigDict({"width": 512, "depth": 8, "heads": 16,
                                            "mlp_dim": placeholder(int),
                                            "posemb": "sincos2d_mae"})})
  c.mpp = ml_collections.ConfigDict({
      "ratio": 0.5,                # share of patch embeddings corrupted ...
      "mask_share": 0.8,           # ... of those: the [mask] embedding,
      "random_share": 0.1})        # another patch's embedding; the rest unchanged.
  # FlexiViT (Beyer et al. 2023): each step cuts the images into patches of a size drawn
  # from `patch_sizes` (by `weights`; every process draws the same, from the seed and the
  # step), the kernel stored at model.patch_size PI-resized to it, learned position
  # embeddings (a fixed model.posemb_grid) resampled: one model for every patch size.
  # One compiled program per size. (): off.
  c.flexi = ml_collections.ConfigDict({"patch_sizes": (), "weights": ()})
  c.loss = "softmax"               # 'softmax' or 'sigmoid' (multi-label pre-training).
  c.label_smoothing = 0.0
  c.mixup_alpha = 0.0              # mixup strength (AugReg uses 0.2-0.8); 0: off.
  c.cutmix_alpha = 0.0             # CutMix strength (DeiT: 1.0); with mixup, one per batch.
  c.seed = 0                       # initialisation, data order and augmentation.
  # Parameter groups (regexes searched in the '/'-joined names of parameters.txt, first
  # match wins): `frozen` parameters get no update and no optimizer state; lr_mults /
  # wd_mults are ((regex, multiplier), ...); layer_decay d < 1 gives block i of L the
  # learning rate times d ** (L - i), the embeddings d ** (L + 1), the head 1.
  c.frozen = ""
  c.train_last_blocks = 0          # N > 0: only the last N blocks and the top train.
  c.lr_mults = ()
  c.wd_mults = ()
  c.layer_decay = 1.0
  # A moving average of the parameters (e.g. 0.9999; 0: off), checkpointed with the state;
  # evaluators with params='ema' use it (each classification eval gets an `<name>_ema` twin).
  c.ema_decay = 0.0
  # LoRA adapters (rank 0: off) on the kernels matching `targets`; the rest is frozen but
  # the head (unless `frozen` says otherwise). alpha 0: = rank.
  c.lora = ml_collections.ConfigDict({"rank": 0, "alpha": 0.0,
                                      "targets": ""})  # '': the family's (attention, MLP).
  # A step with a non-finite loss, gradient norm or parameters is never checkpointed; by
  # default it stops the run. True: drop that update and go on (counted as skipped_steps).
  c.skip_nonfinite_steps = False
  # After a non-finite step: 'stop' (a rerun resumes from the newest healthy checkpoint)
  # or 'rollback': restore the newest healthy checkpoint, skip the next
  # k x `rollback_skip_batches` batches at rollback k (each retry reads new data) and go
  # on, at most `max_rollbacks` times.
  c.on_divergence = "stop"
  c.rollback_skip_batches = 100
  c.max_rollbacks = 3
  c.resume_step = placeholder(int)  # resume from this intact step (newer ones set aside).
  c.start_over = False  # True: train from step 0 where every checkpoint is damaged.

  # Devices: mesh axes (data, fsdp, model); -1 takes the remaining devices.
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 1})
  c.sharding_rules = DEFAULT_SHARDING_RULES  # logical axis -> mesh axes, see above.

  # Logging and checkpoints. metrics.jsonl is always written; trackers: 'tensorboard' and
  # 'wandb' (pip install -e '.[wandb]'; WANDB_MODE=offline writes a local run to sync later).
  c.trackers = ("tensorboard",)
  c.wandb_project = "vit_jax"
  c.log_every = 50
  c.checkpoint_every = 1000        # its own cadence, independent of evaluation.
  c.keep_checkpoints = 3

  # Evaluators: name -> settings. `type` is a module of vit_jax/evaluators/ or your own
  # dotted module path; `every` N runs it every N steps and at the end (0: only at the
  # end, -1: never). Scalars are written as <name>_<metric>, e.g. test_accuracy.
  c.evals = ml_collections.ConfigDict({"test": classification_eval(every=1000)})
  # An unreadable image in an eval split is skipped and counted (<name>_skipped_examples
  # in the eval line and summary); True: it is an error instead.
  c.strict_eval = False
  return c


def pp_strings(config: ml_collections.ConfigDict) -> dict[str, str]:
  """Every pp string a config keeps, by field ('pp_train', 'pp_eval', 'evals.<name>.pp'):
  the one place that knows where they are."""
  found = {"pp_train": config.pp_train, "pp_eval": config.pp_eval}
  found.update({f"evals.{name}.pp": evaluator.pp for name, evaluator in config.evals.items()
                if evaluator.get("pp")})
  return found


def with_overrides(config: ml_collections.ConfigDict,
                   overrides: dict[str, object]) -> ml_collections.ConfigDict:
  """A copy of `config` with these fields set, by dotted name ('model.patch_size',
  'evals.test.pp'), as the command line sets them: a field that refers to another (a
  warm-up of `total_steps // 10`) follows its new value."""
  config = copy.deepcopy(config)  # references kept (copy_and_resolve_references drops them).
  with config.unlocked():
    for field, value in overrides.items():
      *parents, leaf = field.split(".")
      target = config
      for parent in parents:
        target = target[parent]
      target[leaf] = value
  return config


def _evaluator(kind: str, every: int, fields: dict, given: dict) -> ml_collections.ConfigDict:
  """An evaluator's settings: `fields` ({name: type}) are listed so the command line can
  set them (`--config.evals.test.split=...`); unset (None) ones take the evaluator class's
  own default, the one home of each default."""
  unknown = sorted(set(given) - set(fields))
  if unknown:
    raise UserError(f"{kind} evaluator has no setting(s) {unknown}; it has {sorted(fields)}.")
  fields = {**fields, "params": str}  # 'live' (default) or 'ema': the moving average.
  settings = {name: placeholder(kind_) for name, kind_ in fields.items()}
  settings.update({k: v for k, v in given.items() if v is not None})
  return ml_collections.ConfigDict({"type": kind, "every": every, **settings})


def classification_eval(*, every: int, **given) -> ml_collections.ConfigDict:
  """Loss and top-1 accuracy on a split (dataset, split, pp, batch_size; unset: the run's
  dataset, test_split, pp_eval, eval_batch_size); per_class: the confusion matrix too;
  patch_sizes (FlexiViT): at each of these patch sizes, as p<size>_accuracy."""
  return _evaluator("classification", every, {"dataset": str, "split": str, "pp": str,
                                              "batch_size": int, "per_class": bool,
                                              "patch_sizes": tuple}, given)


def fewshot_eval(*, every: int = 0, **given) -> ml_collections.ConfigDict:
  """Few-shot linear probes on the frozen pre-logits (k examples per class): shots,
  dataset, train_split, test_split, pp, l2_reg, batch_size."""
  return _evaluator("fewshot", every, {"shots": tuple, "dataset": str, "train_split": str,
                                       "test_split": str, "pp": str, "l2_reg": float,
                                       "batch_size": int, "patch_sizes": tuple}, given)


def knn_eval(*, every: int = 0, **given) -> ml_collections.ConfigDict:
  """k-NN accuracy on the frozen pooled features (DINO's weighted vote): k, temperature,
  dataset, train_split, test_split, pp, batch_size."""
  return _evaluator("knn", every, {"k": tuple, "temperature": float, "dataset": str,
                                   "train_split": str, "test_split": str, "pp": str,
                                   "batch_size": int, "patch_sizes": tuple}, given)


def reconstruction_eval(*, every: int = 0, **given) -> ml_collections.ConfigDict:
  """A self-supervised objective's own loss on a split (MAE: the masked patches' pixel
  error) with the same fixed masks every time, and a picture of `num_images` examples
  (original / masked / reconstructed): split, pp, batch_size, num_images, seed."""
  return _evaluator("reconstruction", every, {"split": str, "pp": str, "batch_size": int,
                                              "num_images": int, "seed": int}, given)


def real_eval(*, every: int = 0, **given) -> ml_collections.ConfigDict:
  """ImageNet-ReaL top-1: correct when the prediction is any of the re-assessed labels
  (prepare once: python -m vit_jax.cli.prepare --dataset=imagenet2012_real)."""
  return _evaluator("real", every, {"dataset": str, "split": str, "label_key": str,
                                    "num_classes": int, "pp": str, "batch_size": int}, given)


def figures_eval(*, every: int = 0, **given) -> ml_collections.ConfigDict:
  """The paper's figures (attention rollout, position embeddings, attention distance,
  embedding filters) on test images, to TensorBoard."""
  return _evaluator("figures", every, {"num_images": int, "split": str, "pp": str}, given)


def from_stored(stored: dict) -> ml_collections.ConfigDict:
  """A config stored as JSON (a run's config.json: `runtime.workdir.read_config`) on top
  of today's defaults, so that a run from an older version still has every field; evals
  as the run had them."""
  stored = dict(stored)
  c = base_config()
  evals = stored.pop("evals", None)
  _update_known(c, stored)
  if evals is not None:
    c.evals = ml_collections.ConfigDict({name: _evaluator_from_json(settings)
                                         for name, settings in evals.items()})
  return c


def _evaluator_from_json(stored: dict):
  """A stored evaluator's settings with the types of its kind's fields again (JSON keeps
  none: an unset field comes back as null), so `--config.evals.test.per_class=True`
  works on a run's config as on a config file's; other kinds as stored."""
  makers = {"classification": classification_eval, "fewshot": fewshot_eval,
            "knn": knn_eval, "real": real_eval, "figures": figures_eval,
            "reconstruction": reconstruction_eval}
  if not isinstance(stored, dict) or stored.get("type") not in makers:
    return stored
  given = {key: tuple(value) if isinstance(value, list) else value
           for key, value in stored.items()
           if key not in ("type", "every") and value is not None}
  return makers[stored["type"]](every=stored.get("every", 0), **given)


def _update_known(config: ml_collections.ConfigDict, values: dict, *,
                  keep_unknown: bool = False) -> None:
  """Sets the stored values. Fields today's config no longer has are dropped, except under
  `model` (a custom family's hyper-parameters); tuples come back from JSON lists."""
  for key, value in values.items():
    if key not in config:
      if keep_unknown:
        config[key] = value
      continue
    current = config[key]
    if isinstance(current, ml_collections.ConfigDict) and isinstance(value, dict):
      _update_known(current, value, keep_unknown=key == "model")
    elif isinstance(current, tuple) and isinstance(value, list):
      config[key] = _as_tuples(value)
    else:
      config[key] = value


def _as_tuples(value):
  return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value
