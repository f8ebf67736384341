"""The Vision Transformer (Dosovitskiy et al. 2021) in Flax linen.

The parameter tree follows the published checkpoint layout (older naming:
encoderblock_i/{LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3}), so
the Google `.npz` files load without renaming. Every parameter and the main activations
carry logical axis names; `vit_jax.sharding` maps them to a device mesh by rule.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.errors import UserError
from vit_jax.models import resnet

Dtype = Any
partitioned = nn.with_logical_partitioning
# Activations by logical axis name; the rules and mesh come from the caller's Flax context
# (`vit_jax.sharding.with_mesh_rules`), and outside one this is a no-op.
constrain = nn.with_logical_constraint

# What the published code uses: Xavier-uniform kernels, near-zero biases.
_kernel_init = nn.initializers.xavier_uniform()
_bias_init = nn.initializers.normal(stddev=1e-6)

REMAT_POLICIES: dict[str, Optional[Callable]] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
ATTENTION_IMPLEMENTATIONS = ("einsum", "xla", "cudnn")
CLASSIFIERS = ("token", "gap")


class MlpBlock(nn.Module):
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    hidden = x.shape[-1]
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    x = dense(self.mlp_dim, kernel_init=partitioned(_kernel_init, ("embed", "mlp")),
              bias_init=partitioned(_bias_init, ("mlp",)), name="Dense_0")(x)
    x = nn.gelu(x, approximate=True)  # tanh approximation, as the checkpoints were trained.
    x = constrain(x, ("act_batch", "act_length", "act_mlp"))
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    x = dense(hidden, kernel_init=partitioned(_kernel_init, ("mlp", "embed")),
              bias_init=partitioned(_bias_init, ("embed",)), name="Dense_1")(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


# cuDNN's flash attention takes only some sequence lengths in training (jax 0.11: even
# ones); ViT's 1 + 14*14 = 197 tokens are not. Tokens are padded to a multiple of this
# and the padded keys masked out: exact. Measured on an H100 (B/16, batch 256): a
# multiple of 8 (200 tokens) 3,129 img/s, of 2 the same, of 64 (256 tokens) 3,077.
CUDNN_SEQUENCE_MULTIPLE = 8


def fused_attention(query, key, value, *, implementation: str, pad_to: int = 1):
  """`jax.nn.dot_product_attention` on (B, T, heads, head_dim), the sequence padded to a
  multiple of `pad_to` with the padded keys masked out (the result is unchanged)."""
  length = query.shape[1]
  padded = -(-length // pad_to) * pad_to
  if padded == length:
    return jax.nn.dot_product_attention(query, key, value, implementation=implementation)
  pad = lambda x: jnp.pad(x, ((0, 0), (0, padded - length), (0, 0), (0, 0)))  # noqa: E731
  lengths = jnp.full((query.shape[0],), length, jnp.int32)
  out = jax.nn.dot_product_attention(pad(query), pad(key), pad(value),
                                     key_value_seq_lengths=lengths,
                                     implementation=implementation)
  return out[:, :length]


class HeadsProjection(nn.Module):
  """`einsum(equation, x, kernel) + bias` with a multi-axis kernel (the published layout:
  query/key/value (embed, heads, kv), out (heads, kv, embed)). Unlike nn.DenseGeneral it
  initialises the kernel in its own shape, so its logical axes fit it when a mesh is
  active; the Xavier fans are those of the flattened matrix, as the published code has."""
  equation: str
  kernel_shape: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  fan_in_dims: int = 1          # leading kernel dimensions that are contracted.
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    dims = tuple(range(len(self.kernel_shape)))
    init = nn.initializers.xavier_uniform(in_axis=dims[:self.fan_in_dims],
                                          out_axis=dims[self.fan_in_dims:])
    kernel = self.param("kernel", partitioned(init, self.kernel_axes), self.kernel_shape,
                        self.param_dtype)
    bias = self.param("bias", partitioned(nn.initializers.zeros,
                                          self.kernel_axes[self.fan_in_dims:]),
                      self.kernel_shape[self.fan_in_dims:], self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return jnp.einsum(self.equation, x, kernel) + bias


class MultiHeadDotProductAttention(nn.Module):
  """Self-attention with the published parameter layout (query/key/value/out).

  `implementation`: 'einsum' spells out softmax(QK^T)V (supports attention dropout and
  records the attention weights with `sow` when the 'intermediates' collection is
  mutable, which costs nothing otherwise); 'xla' / 'cudnn' call
  `jax.nn.dot_product_attention` (cuDNN flash attention on GPU).
  """
  num_heads: int
  dropout_rate: float = 0.0
  implementation: str = "einsum"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    hidden = x.shape[-1]
    head_dim = hidden // self.num_heads
    projection = functools.partial(
        HeadsProjection, "...d,dhk->...hk", (hidden, self.num_heads, head_dim),
        ("embed", "heads", "kv"), dtype=self.dtype, param_dtype=self.param_dtype)
    heads_axes = ("act_batch", "act_length", "act_heads", "act_kv")
    query = constrain(projection(name="query")(x), heads_axes)
    key = constrain(projection(name="key")(x), heads_axes)
    value = constrain(projection(name="value")(x), heads_axes)

    if self.implementation == "einsum":
      query = query / jnp.sqrt(head_dim).astype(self.dtype)
      logits = jnp.einsum("bqhd,bkhd->bhqk", query, key)
      weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
      self.sow("intermediates", "attention_weights", weights)
      weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
      out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(self.dtype), value)
    else:
      if self.dropout_rate and not deterministic:
        raise UserError(
            f"attention_dropout_rate={self.dropout_rate} needs attention_implementation="
            f"'einsum'; '{self.implementation}' has no attention dropout.")
      out = fused_attention(query, key, value, implementation=self.implementation,
                            pad_to=CUDNN_SEQUENCE_MULTIPLE if self.implementation == "cudnn"
                            else 1)
    out = constrain(out, heads_axes)
    return HeadsProjection("...hk,hkd->...d", (self.num_heads, head_dim, hidden),
                           ("heads", "kv", "embed"), fan_in_dims=2, dtype=self.dtype,
                           param_dtype=self.param_dtype, name="out")(out)


class Encoder1DBlock(nn.Module):
  """Pre-LayerNorm block: x + MSA(LN(x)), then x + MLP(LN(x))."""
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  attention_implementation: str = "einsum"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  return_carry: bool = False   # (x, None), the form nn.scan needs.

  @nn.compact
  def __call__(self, x, deterministic: bool):
    norm = functools.partial(nn.LayerNorm, dtype=self.dtype, param_dtype=self.param_dtype,
                             scale_init=partitioned(nn.initializers.ones, ("embed",)),
                             bias_init=partitioned(nn.initializers.zeros, ("embed",)))
    y = norm(name="LayerNorm_0")(x)
    y = MultiHeadDotProductAttention(
        num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
        implementation=self.attention_implementation, dtype=self.dtype,
        param_dtype=self.param_dtype, name="MultiHeadDotProductAttention_1")(
            y, deterministic=deterministic)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    x = constrain(x + y, ("act_batch", "act_length", "act_embed"))
    y = norm(name="LayerNorm_2")(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="MlpBlock_3")(y, deterministic=deterministic)
    x = constrain(x + y, ("act_batch", "act_length", "act_embed"))
    return (x, None) if self.return_carry else x


class AddPositionEmbs(nn.Module):
  """Learned 1-D position embeddings, one per token (class token included)."""
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    pos_embedding = self.param(
        "pos_embedding",
        partitioned(nn.initializers.normal(stddev=0.02), (None, "length", "embed")),
        (1, x.shape[1], x.shape[2]), self.param_dtype)
    return x + pos_embedding.astype(x.dtype)


# The hyper-parameters of one Encoder1DBlock, handed down by name from the model.
BLOCK_FIELDS = ("mlp_dim", "num_heads", "dropout_rate", "attention_dropout_rate",
                "attention_implementation", "dtype", "param_dtype")


class Encoder(nn.Module):
  num_layers: int
  block: dict                     # Encoder1DBlock keyword arguments (BLOCK_FIELDS).
  dropout_rate: float = 0.0
  remat_policy: str = "none"
  scan_layers: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = AddPositionEmbs(param_dtype=self.param_dtype, name="posembed_input")(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    x = x.astype(self.dtype)
    block = Encoder1DBlock
    if self.remat_policy != "none":
      # Recompute activations in the backward pass: memory for compute, per block.
      block = nn.remat(Encoder1DBlock, policy=REMAT_POLICIES[self.remat_policy],
                       static_argnums=(2,))
    if self.scan_layers:
      # One compiled block applied num_layers times: compile time and program size stop
      # growing with depth. Parameters gain a leading 'layers' axis under
      # Transformer/encoderblock; vit_jax.npz_format converts to and from the per-layer
      # layout of the published files.
      scanned = nn.scan(block, variable_axes={"params": 0, "intermediates": 0},
                        split_rngs={"params": True, "dropout": True},
                        in_axes=nn.broadcast, length=self.num_layers,
                        metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = scanned(**self.block, return_carry=True, name="encoderblock")(x, not train)
    else:
      for i in range(self.num_layers):
        x = block(**self.block, name=f"encoderblock_{i}")(x, not train)
    return nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype,
                        scale_init=partitioned(nn.initializers.ones, ("embed",)),
                        bias_init=partitioned(nn.initializers.zeros, ("embed",)),
                        name="encoder_norm")(x)


class VisionTransformer(nn.Module):
  """ViT: patches -> [class] token + position embeddings -> encoder -> head.

  Attributes mirror the paper's hyper-parameters; see `vit_jax.models.presets` for the
  named variants. `head_kernel_init` defaults to zeros (the fine-tuning recipe);
  `head_bias_init` = -10 is the sigmoid pre-training recipe.
  """
  num_classes: Optional[int]
  patch_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  classifier: str = "token"
  representation_size: Optional[int] = None
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  resnet_layers: Optional[Sequence[int]] = None
  resnet_width_factor: float = 1.0
  head_kernel_init_std: float = 0.0
  head_bias_init: float = 0.0
  attention_implementation: str = "einsum"
  remat_policy: str = "none"
  scan_layers: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def pixels_per_patch(self) -> int:
    """Input pixels along each side of one token: the patch size, times the hybrid's 16x
    ResNet downsampling."""
    return self.patch_size * (16 if self.resnet_layers is not None else 1)

  def patch_grid(self, height: int, width: int) -> tuple[int, int]:
    """The (rows, columns) token grid for images of this size."""
    return height // self.pixels_per_patch(), width // self.pixels_per_patch()

  @nn.compact
  def __call__(self, images, *, train: bool = False, return_representation: bool = False):
    """images: (batch, height, width, channels) in [-1, 1]. Returns float32 logits."""
    x = images.astype(self.dtype)
    if self.resnet_layers is not None:
      x = resnet.resnet_stem(x, num_layers=self.resnet_layers,
                             width_factor=self.resnet_width_factor, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    height, width = x.shape[1:3]
    if height % self.patch_size or width % self.patch_size:
      if self.resnet_layers is not None:
        raise UserError(
            f"Image size {images.shape[1]}x{images.shape[2]} gives a {height}x{width} "
            f"feature map after the ResNet stem that patch_size={self.patch_size} does not "
            f"divide; use a resolution that is a multiple of {16 * self.patch_size}.")
      raise UserError(
          f"Image size {images.shape[1]}x{images.shape[2]} is not divisible by "
          f"patch_size={self.patch_size}; use a resolution that is a multiple of "
          f"{self.patch_size}.")
    x = nn.Conv(self.hidden_size, (self.patch_size, self.patch_size),
                strides=(self.patch_size, self.patch_size), padding="VALID",
                dtype=self.dtype, param_dtype=self.param_dtype,
                kernel_init=partitioned(nn.initializers.lecun_normal(),
                                        (None, None, None, "embed")),
                bias_init=partitioned(nn.initializers.zeros, ("embed",)),
                name="embedding")(x)
    batch, grid_h, grid_w, channels = x.shape
    x = jnp.reshape(x, (batch, grid_h * grid_w, channels))
    if self.classifier == "token":
      cls = self.param("cls", partitioned(nn.initializers.zeros, (None, None, "embed")),
                       (1, 1, channels), self.param_dtype)
      x = jnp.concatenate([jnp.tile(cls.astype(x.dtype), (batch, 1, 1)), x], axis=1)
    x = constrain(x, ("act_batch", "act_length", "act_embed"))
    x = Encoder(num_layers=self.num_layers,
                block={field: getattr(self, field) for field in BLOCK_FIELDS},
                dropout_rate=self.dropout_rate, remat_policy=self.remat_policy,
                scan_layers=self.scan_layers, dtype=self.dtype, param_dtype=self.param_dtype,
                name="Transformer")(x, train=train)
    x = x[:, 0] if self.classifier == "token" else jnp.mean(x, axis=1)
    if self.representation_size is not None:
      x = nn.Dense(self.representation_size, dtype=self.dtype, param_dtype=self.param_dtype,
                   kernel_init=partitioned(nn.initializers.lecun_normal(), ("embed", None)),
                   bias_init=partitioned(nn.initializers.zeros, (None,)),
                   name="pre_logits")(x)
      x = jnp.tanh(x)
    if return_representation or not self.num_classes:
      return x.astype(jnp.float32)
    head_kernel_init = (nn.initializers.normal(self.head_kernel_init_std)
                        if self.head_kernel_init_std else nn.initializers.zeros)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                      kernel_init=partitioned(head_kernel_init, (None, "classes")),
                      bias_init=partitioned(nn.initializers.constant(self.head_bias_init),
                                            ("classes",)),
                      name="head")(x)
    return logits.astype(jnp.float32)


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_CHOICES = {"classifier": CLASSIFIERS, "attention_implementation": ATTENTION_IMPLEMENTATIONS,
            "remat_policy": tuple(REMAT_POLICIES)}


def as_dtype(value, field: str):
  """'bfloat16' -> jnp.bfloat16 (config files hold strings)."""
  if isinstance(value, str):
    if value not in _DTYPES:
      raise UserError(f"model.{field}={value!r} is not a dtype; use one of {list(_DTYPES)}.")
    return _DTYPES[value]
  return value


def create(*, num_classes: Optional[int], **hparams) -> VisionTransformer:
  """The family's entry point (see `vit_jax.models.create_model`): checks every
  hyper-parameter by name before any JAX work."""
  fields = {f.name for f in dataclasses.fields(VisionTransformer)} - {"parent", "name"}
  unknown = sorted(set(hparams) - fields)
  if unknown:
    raise UserError(f"Unknown model hyper-parameter(s) {unknown}; valid: "
                    f"{sorted(fields - {'num_classes'})}.")
  missing = sorted(f.name for f in dataclasses.fields(VisionTransformer)
                   if f.default is dataclasses.MISSING and f.name not in hparams
                   and f.name not in ("num_classes", "parent", "name"))
  if missing:
    raise UserError(f"The 'vit' family needs model.{', model.'.join(missing)} (or use a "
                    f"preset such as 'ViT-B_16').")
  for field in ("dtype", "param_dtype"):
    if field in hparams:
      hparams[field] = as_dtype(hparams[field], field)
  if hparams["hidden_size"] % hparams["num_heads"]:
    raise UserError(f"hidden_size={hparams['hidden_size']} is not divisible by "
                    f"num_heads={hparams['num_heads']}.")
  for field, valid in _CHOICES.items():
    if field in hparams and hparams[field] not in valid:
      raise UserError(f"model.{field}={hparams[field]!r} is not one of {list(valid)}.")
  if hparams.get("resnet_layers") is not None:
    hparams["resnet_layers"] = tuple(hparams["resnet_layers"])
  return VisionTransformer(num_classes=num_classes, **hparams)
