"""What each config field means, as data: the text `python -m vit_jax.cli.config` shows
beside each field (keys are the fields' dotted paths; evaluator settings are documented
by the `*_eval` helpers in vit_jax/config.py). tests/test_first_hour.py checks that every
field of the base config has one."""

_GROUPS = ("Parameter groups (regexes searched in the '/'-joined names of parameters.txt, "
           "first match wins)")
_DIVERGENCE = "after a non-finite step: 'stop' (a rerun resumes) or 'rollback'"

MEANINGS: dict[str, str] = {
    # The model.
    "model_name": "a preset from vit_jax/models/presets.py ('b16' works too), or a family "
                  "module ('vit', 'mypackage.my_family').",
    "model.hidden_size": "token width.",
    "model.num_layers": "transformer blocks.",
    "model.num_heads": "attention heads per block.",
    "model.mlp_dim": "hidden width of each block's MLP.",
    "model.patch_size": "side of the square patches, in pixels.",
    "model.classifier": "pooling: 'token' | 'gap' | 'map' (attention pooling).",
    "model.class_token": "a [class] token with 'gap'/'map' pooling.",
    "model.distillation_token": "DeiT's second token and head.",
    "model.num_registers": "register tokens (DINOv2-reg).",
    "model.posemb": "position embeddings: 'learned' | 'sincos2d' | 'sincos2d_mae' | 'none'.",
    "model.posemb_prefix": "learned embeddings cover [class] too.",
    "model.posemb_grid": "learned grid, resampled to the input's.",
    "model.posemb_resample": "'bilinear' | 'bicubic' | 'bilinear_align_corners'.",
    "model.posemb_antialias": "antialiased position-embedding resampling (timm).",
    "model.rope": "rotary embeddings: 'none' | 'eva' | 'dinov3'.",
    "model.rope_temperature": "rotary embeddings' temperature (unset: the kind's own).",
    "model.rope_grid": "EVA-02's pre-training grid for rotary embeddings.",
    "model.layerscale_init": "LayerScale (DeiT III 1e-6, DINOv2 1e-5).",
    "model.qk_norm": "LayerNorm on queries and keys (ViT-22B).",
    "model.mlp_activation": "'gelu_tanh' | 'gelu' | 'quick_gelu' | 'swiglu'.",
    "model.mlp_norm": "LayerNorm inside the MLP (EVA-02 B/L).",
    "model.layernorm_epsilon": "LayerNorm's epsilon (1e-6; CLIP's 1e-5).",
    "model.fc_norm": "LayerNorm after pooling (timm), not before.",
    "model.pre_norm": "LayerNorm before the blocks (CLIP).",
    "model.patch_bias": "patch embedding bias (CLIP: none).",
    "model.representation_size": "pre_logits width (pre-training on 21k/JFT).",
    "model.tokens_mlp_dim": "MLP-Mixer only: token-mixing MLP width.",
    "model.channels_mlp_dim": "MLP-Mixer only: channel-mixing MLP width.",
    "model.block_sizes": "BiT only: residual units per stage, e.g. (3, 4, 6, 3) (R50).",
    "model.width_factor": "BiT only: channel width multiplier (R50x3: 3).",
    "model.norm_groups": "BiT only: GroupNorm groups (32; they must divide the widths).",
    "model.stem_pool_padding": ("BiT only: the root max pool's border: 'zeros' (BiT, timm) "
                                "or '-inf' (big_vision)."),
    "model.dtype": "compute dtype ('bfloat16' on accelerators).",
    "model.dropout_rate": "dropout after the MLP and attention outputs.",
    "model.attention_dropout_rate": "dropout on the attention weights.",
    "model.stochastic_depth_rate": "drop-path rate of the last block (DeiT: 0.1).",
    "model.head_bias_init": "-10 for sigmoid pre-training.",
    "model.head_kernel_init_std": "0: zero head (fine-tuning recipe).",
    "model.attention_implementation": "'auto' (the fastest exact kernel: Pallas flash on "
                                      "TPU from 512 tokens, cuDNN flash on GPU in bf16, "
                                      "else einsum) | 'einsum' | 'xla' | 'cudnn' | 'pallas'.",
    "model.remat_policy": "recompute in the backward pass: 'none' | 'full' | 'dots' | "
                          "'dots_no_batch'.",
    "model.scan_layers": "one scanned block: faster compiles for deep models.",
    "pretrained": "checkpoint to fine-tune from: a published .npz (the model is then "
                  "model_name's) or one that describes itself (a run's workdir, a converted "
                  ".npz, a Hugging Face directory, a timm .safetensors, a big_vision .npz), "
                  "whose architecture and input normalisation then replace the config's.",
    "reset_head": "fine-tuning: always start from a fresh zero head.",
    # Data.
    "dataset": "TFDS name, 'digits', 'pureml_mnist' or 'folder:/path'.",
    "data_dir": "TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets).",
    "train_split": "the training split (a slice like 'train[:90%]' works).",
    "val_split": "held out of training, evaluated like test as val_*; sweeps choose on it, "
                 "never on test ('': none).",
    "test_split": "the split the 'test' evaluator reads (a folder with no test/ gets "
                  "'train[90%:]').",
    "label_key": "the TFDS feature holding the label(s).",
    "pp_train": "training preprocessing ops (vit_jax/pp), e.g. "
                "'to_rgb|inception_crop(224)|flip_lr|value_range(-1, 1)'.",
    "pp_eval": "evaluation preprocessing ops.",
    "pp_modules": "your own modules registering pp ops, e.g. ('my_ops',).",
    "resolution": "train and eval image size: rescales every size in the pp strings; the "
                  "patch grid follows (unset: the sizes written there).",
    "max_num_patches": "NaFlex: images keep their aspect ratio, at most this many patches "
                       "each, as padded patch sequences (unset: square images).",
    "normalize_on_device": "pp_train's final value_range/normalize runs in the train step: "
                           "uint8 crosses to the accelerator (4x fewer bytes).",
    "input_workers": "input worker processes (-1: none for in-memory data, else one per "
                     "host core, up to 16); the batches do not depend on it.",
    "data_shards": "data shards (0: one per process); fix it to make the batches "
                   "independent of the number of processes.",
    "batch_size": "global training batch, summed over all processes and devices.",
    "eval_batch_size": "global eval batch (the split is padded, never dropped).",
    # Optimisation.
    "optimizer": ("'sgd' (fine-tuning), 'adam' (pre-training) or any optax optimizer "
                  "by name with its arguments: 'lion(b1=0.95)', 'adafactor', 'contrib.muon'."),
    "lr": "peak learning rate.",
    "end_lr": "learning rate at the last step.",
    "schedule": ("decay after warm-up: 'cosine' | 'linear' | 'constant' | 'steps' (10x "
                 "lower at each of lr_drops: BiT-HyperRule)."),
    "lr_drops": "schedule='steps': fractions of total_steps where the lr drops 10x.",
    "warmup_steps": "linear warm-up steps from 0 to lr.",
    "total_steps": "training steps.",
    "b1": "Adam's first-moment decay.",
    "b2": "Adam's second-moment decay.",
    "momentum": "SGD momentum.",
    "weight_decay": "decoupled (AdamW-style), weight matrices only.",
    "grad_clip_norm": "global-norm clipping (0: off).",
    "optimizer_dtype": "first moment / momentum dtype ('bfloat16' halves it).",
    "accum_steps": "gradient accumulation micro-batches per step.",
    "loss": "'softmax' or 'sigmoid' (multi-label pre-training).",
    "label_smoothing": "label smoothing of the targets (0: off).",
    "mixup_alpha": "mixup strength (AugReg uses 0.2-0.8); 0: off.",
    "cutmix_alpha": "CutMix strength (DeiT: 1.0); with mixup, one per batch.",
    "ema_decay": "a moving average of the parameters (e.g. 0.9999; 0: off); evaluators "
                 "with params='ema' use it.",
    "frozen": f"{_GROUPS}: these parameters get no update and no optimizer state.",
    "train_last_blocks": ("N > 0: only the model family's last N blocks and what follows "
                          "them (final norm, head) train; the rest is frozen."),
    "lr_mults": f"{_GROUPS}: ((regex, learning-rate multiplier), ...).",
    "wd_mults": f"{_GROUPS}: ((regex, weight-decay multiplier), ...).",
    "layer_decay": "d < 1: block i of L trains at lr x d ** (L - i), the embeddings "
                   "d ** (L + 1), the head at lr (BEiT / MAE fine-tuning).",
    "objective": "what the model is trained for: 'classification' | 'mae' | "
                 "'masked_patch_prediction' | your module (vit_jax/objectives).",
    "mae.mask_ratio": "MAE: share of patches hidden from the encoder (0.75).",
    "mae.norm_pix_loss": "MAE: targets normalised per patch (mean, variance).",
    "mae.decoder.width": "MAE decoder width (512).",
    "mae.decoder.depth": "MAE decoder blocks (8).",
    "mae.decoder.heads": "MAE decoder attention heads (16).",
    "mae.decoder.mlp_dim": "MAE decoder MLP width (unset: 4 x width).",
    "mae.decoder.posemb": "MAE decoder positions: 'sincos2d_mae' (fixed) | 'learned'.",
    "mpp.ratio": "masked patch prediction: share of patches corrupted (0.5).",
    "mpp.mask_share": "of the corrupted: share given the [mask] embedding (0.8).",
    "mpp.random_share": "of the corrupted: share given another patch's embedding (0.1).",
    "flexi.patch_sizes": "FlexiViT: patch sizes drawn per step (() off); the kernel is "
                         "PI-resized from model.patch_size.",
    "flexi.weights": "FlexiViT: the sizes' relative probabilities (() uniform).",
    "lora.rank": "LoRA adapter rank (0: off); the base weights are frozen, the head trains.",
    "lora.alpha": "LoRA scale alpha (0: = rank).",
    "lora.targets": "regex of the kernels that get adapters ('': the family's default).",
    # Devices.
    "mesh.data": "data-parallel devices (-1: the rest).",
    "mesh.fsdp": "devices that split parameters and optimizer state (FSDP).",
    "mesh.model": "devices that split MLP units and attention heads (tensor parallelism).",
    "sharding_rules": "logical axis -> mesh axes (vit_jax/config.py's default rules).",
    # Run control.
    "seed": "initialisation, data order and augmentation.",
    "log_every": "steps between progress lines (and metrics.jsonl rows).",
    "checkpoint_every": "steps between checkpoints, independent of evaluation.",
    "keep_checkpoints": "checkpoints kept (the newest healthy one always is).",
    "trackers": "'tensorboard' and/or 'wandb' (metrics.jsonl is always written).",
    "wandb_project": "W&B project (WANDB_MODE=offline writes a local run).",
    "resume_step": "resume from this intact step (newer ones set aside).",
    "start_over": "True: train from step 0 where every checkpoint is damaged.",
    "skip_nonfinite_steps": "True: drop a non-finite update and go on (counted as "
                            "skipped_steps); False: stop the run.",
    "on_divergence": f"{_DIVERGENCE}: restore the newest healthy checkpoint, skip batches "
                     f"and go on.",
    "max_rollbacks": f"{_DIVERGENCE}: at most this many rollbacks.",
    "rollback_skip_batches": f"{_DIVERGENCE}: rollback k skips k x this many batches.",
    "strict_eval": "True: an unreadable image in an eval split is an error (else skipped "
                   "and counted).",
}
