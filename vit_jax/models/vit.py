"""The Vision Transformer (Dosovitskiy et al. 2021) in Flax linen.

The parameter tree follows the published checkpoint layout (older naming:
encoderblock_i/{LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3}), so
the Google `.npz` files load without renaming. Every parameter and the main activations
carry logical axis names; `vit_jax.sharding` maps them to a device mesh by rule.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.errors import UserError
from vit_jax.models import attention as attention_lib
from vit_jax.models import naflex
from vit_jax.models import posemb as posemb_lib
from vit_jax.models import rope as rope_lib
from vit_jax.models.hparams import checked
from vit_jax.models import resnet
from vit_jax.models.dropout import Dropout
from vit_jax.models.patch_embed import PatchEmbedding
from vit_jax.param_names import HEADS, FamilyNames
# The family contract's optional parts (see vit_jax/models/family.py).
from vit_jax.models.vit_layout import (  # noqa: F401  pylint: disable=unused-import
    adapt_pretrained, arch_from_params, per_layer_params)

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
# token: the [class] token; gap: the mean of the patch tokens; map: multi-head attention
# pooling (big_vision's MAP head, SigLIP).
# Blocks `Transformer/encoderblock_{i}` (scanned: one `Transformer/encoderblock`); after
# them the final norm, pre-logits and the heads.
NAMES = FamilyNames(block="Transformer/encoderblock_{}/",
                    scanned_block="Transformer/encoderblock/",
                    top=(*HEADS, "pre_logits/", "Transformer/encoder_norm/", "fc_norm/",
                         "norm/"))

CLASSIFIERS = ("token", "gap", "map")
# sincos2d: big_vision's fixed table; sincos2d_mae: MAE's (see posemb.sincos_2d). Neither
# covers the [class] token (MAE's zero row for it is the same thing).
POSEMB_KINDS = ("learned", "sincos2d", "sincos2d_mae", "none")
# gelu_tanh: the tanh approximation, as the published ViT checkpoints were trained (and
# big_vision, SigLIP); gelu: exact erf GELU (timm, DINOv2, DeiT); quick_gelu: OpenAI
# CLIP's x * sigmoid(1.702 x); swiglu: SiLU-gated (DINOv2-g): Dense_0 packs the
# [gate, value] halves, silu(gate) * value.
MLP_ACTIVATIONS = ("gelu_tanh", "gelu", "quick_gelu", "swiglu")


def activation(x, name: str):
  if name == "quick_gelu":
    return x * jax.nn.sigmoid(1.702 * x)
  return nn.gelu(x, approximate=name == "gelu_tanh")


def layer_norm(name: str, epsilon: float, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype,
                      scale_init=partitioned(nn.initializers.ones, ("embed",)),
                      bias_init=partitioned(nn.initializers.zeros, ("embed",)), name=name)


class MlpBlock(nn.Module):
  mlp_dim: int
  dropout_rate: float = 0.0
  activation: str = "gelu_tanh"
  norm: bool = False              # a LayerNorm on the hidden units (EVA-02's sub-LN).
  layernorm_epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    hidden = x.shape[-1]
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    gated = self.activation == "swiglu"
    x = dense(self.mlp_dim * (2 if gated else 1),
              kernel_init=partitioned(_kernel_init, ("embed", "mlp")),
              bias_init=partitioned(_bias_init, ("mlp",)), name="Dense_0")(x)
    if gated:
      gate, value = jnp.split(x, 2, axis=-1)
      x = nn.silu(gate) * value
    else:
      x = activation(x, self.activation)
    x = constrain(x, ("act_batch", "act_length", "act_mlp"))
    x = Dropout(self.dropout_rate)(x, deterministic=deterministic)
    if self.norm:
      x = nn.LayerNorm(epsilon=self.layernorm_epsilon, dtype=self.dtype,
                       param_dtype=self.param_dtype,
                       scale_init=partitioned(nn.initializers.ones, ("mlp",)),
                       bias_init=partitioned(nn.initializers.zeros, ("mlp",)), name="norm")(x)
    x = dense(hidden, kernel_init=partitioned(_kernel_init, ("mlp", "embed")),
              bias_init=partitioned(_bias_init, ("embed",)), name="Dense_1")(x)
    return Dropout(self.dropout_rate)(x, deterministic=deterministic)


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

  `implementation` (models/attention.py): 'einsum' spells out softmax(QK^T)V (supports
  attention dropout and records the attention weights with `sow` when the
  'intermediates' collection is mutable, which costs nothing otherwise); 'xla' / 'cudnn'
  call `jax.nn.dot_product_attention` (cuDNN flash attention on GPU); 'pallas' the TPU
  flash attention kernel; 'auto' the fastest exact one for the backend, einsum where
  attention dropout or attention maps need it.
  """
  num_heads: int
  dropout_rate: float = 0.0
  implementation: str = "einsum"
  qk_norm: bool = False          # LayerNorm over each head's queries and keys.
  layernorm_epsilon: float = 1e-6
  rope: str = "none"             # rotary embeddings of the patch tokens (models/rope.py).
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic: bool, inputs_kv=None, rope_table=None,
               kv_lengths=None):
    """Self-attention over x, or x's queries over `inputs_kv` (attention pooling);
    `rope_table`: the (sin, cos) of the patch tokens, which come last; `kv_lengths` (B,):
    each sequence's keys before its padding (NaFlex), the rest masked out."""
    hidden = x.shape[-1]
    head_dim = hidden // self.num_heads
    projection = functools.partial(
        HeadsProjection, "...d,dhk->...hk", (hidden, self.num_heads, head_dim),
        ("embed", "heads", "kv"), dtype=self.dtype, param_dtype=self.param_dtype)
    heads_axes = ("act_batch", "act_length", "act_heads", "act_kv")
    inputs_kv = x if inputs_kv is None else inputs_kv
    query = constrain(projection(name="query")(x), heads_axes)
    key = constrain(projection(name="key")(inputs_kv), heads_axes)
    value = constrain(projection(name="value")(inputs_kv), heads_axes)
    if self.qk_norm:
      head_norm = functools.partial(nn.LayerNorm, epsilon=self.layernorm_epsilon,
                                    dtype=self.dtype, param_dtype=self.param_dtype)
      query = head_norm(name="query_norm")(query)
      key = head_norm(name="key_norm")(key)
    if self.rope != "none":
      query = rope_lib.apply(query, rope_table, self.rope)
      key = rope_lib.apply(key, rope_table, self.rope)

    implementation = self.implementation
    if implementation == "auto":
      wants_einsum = ((self.dropout_rate and not deterministic)
                      or self.is_mutable_collection("intermediates"))
      implementation = "einsum" if wants_einsum else attention_lib.resolve(
          "auto", platform=jax.default_backend(), dtype=self.dtype, num_tokens=key.shape[1])
    if implementation == "einsum":
      out, weights = attention_lib.einsum_attention(
          query, key, value, dtype=self.dtype,
          dropout=functools.partial(Dropout(self.dropout_rate), deterministic=deterministic),
          kv_lengths=kv_lengths)
      self.sow("intermediates", "attention_weights", weights)
    else:
      if self.dropout_rate and not deterministic:
        raise UserError(
            f"attention_dropout_rate={self.dropout_rate} needs attention_implementation="
            f"'einsum' (or 'auto'); '{implementation}' has no attention dropout.")
      if implementation == "pallas":
        out = attention_lib.pallas_attention(query, key, value, kv_lengths)
      else:
        out = attention_lib.fused_attention(query, key, value, implementation=implementation,
                                            kv_lengths=kv_lengths)
    out = constrain(out, heads_axes)
    return HeadsProjection("...hk,hkd->...d", (self.num_heads, head_dim, hidden),
                           ("heads", "kv", "embed"), fan_in_dims=2, dtype=self.dtype,
                           param_dtype=self.param_dtype, name="out")(out)


class LayerScale(nn.Module):
  """Per-channel learned scale of a residual branch (CaiT, DeiT III, DINOv2)."""
  init_value: float
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", partitioned(nn.initializers.constant(self.init_value),
                                            ("embed",)), (x.shape[-1],), self.param_dtype)
    return x * scale.astype(x.dtype)


class Encoder1DBlock(nn.Module):
  """Pre-LayerNorm block: x + MSA(LN(x)), then x + MLP(LN(x)) (each branch scaled by a
  LayerScale when `layerscale_init` is set)."""
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  attention_implementation: str = "auto"
  layerscale_init: Optional[float] = None
  qk_norm: bool = False
  mlp_activation: str = "gelu_tanh"
  mlp_norm: bool = False
  rope: str = "none"
  layernorm_epsilon: float = 1e-6
  stochastic_depth: float = 0.0  # probability of dropping each residual branch (training).
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  return_carry: bool = False   # (x, None), the form nn.scan needs.

  def _residual(self, x, y, name: str, deterministic: bool):
    if self.layerscale_init is not None:
      y = LayerScale(self.layerscale_init, param_dtype=self.param_dtype, name=name)(y)
    if self.stochastic_depth and not deterministic:
      # Stochastic depth (Huang et al. 2016): per example, the whole branch or nothing.
      keep = 1.0 - self.stochastic_depth
      kept = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0], 1, 1))
      y = jnp.where(kept, y / keep, jnp.zeros_like(y))
    return constrain(x + y, ("act_batch", "act_length", "act_embed"))

  @nn.compact
  def __call__(self, x, deterministic: bool, rope_table=None, kv_lengths=None):
    norm = functools.partial(layer_norm, epsilon=self.layernorm_epsilon, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    y = norm("LayerNorm_0")(x)
    y = MultiHeadDotProductAttention(
        num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
        implementation=self.attention_implementation, qk_norm=self.qk_norm,
        layernorm_epsilon=self.layernorm_epsilon, rope=self.rope, dtype=self.dtype,
        param_dtype=self.param_dtype, name="MultiHeadDotProductAttention_1")(
            y, deterministic=deterministic, rope_table=rope_table, kv_lengths=kv_lengths)
    y = Dropout(self.dropout_rate)(y, deterministic=deterministic)
    x = self._residual(x, y, "LayerScale_attention", deterministic)
    y = norm("LayerNorm_2")(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, activation=self.mlp_activation, norm=self.mlp_norm,
                 layernorm_epsilon=self.layernorm_epsilon, dtype=self.dtype,
                 param_dtype=self.param_dtype, dropout_rate=self.dropout_rate,
                 name="MlpBlock_3")(y, deterministic=deterministic)  # dropout inside.
    x = self._residual(x, y, "LayerScale_mlp", deterministic)
    self.sow("intermediates", "out", x)  # recorded only when asked (features.extract).
    return (x, None) if self.return_carry else x


class AddPositionEmbs(nn.Module):
  """Learned position embeddings: `num_prefix` for leading tokens, then a patch grid
  (`grid`, or the input's), resampled to the input's grid when they differ."""
  num_prefix: int = 0
  grid: Optional[tuple[int, int]] = None
  resample: str = "bilinear"
  antialias: bool = False
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, input_grid: Optional[tuple[int, int]], coords=None):
    """`coords` (B, N, 2): NaFlex patches, the grid resized to each image's own (the
    `resample` / `antialias` resize computed on the device, models/naflex.py)."""
    grid = tuple(self.grid or input_grid)
    pos_embedding = self.param(
        "pos_embedding",
        partitioned(nn.initializers.normal(stddev=0.02), (None, "length", "embed")),
        (1, self.num_prefix + grid[0] * grid[1], x.shape[2]), self.param_dtype)
    prefix, patches = pos_embedding[:, :self.num_prefix], pos_embedding[:, self.num_prefix:]
    if coords is not None:
      patches = naflex.grid_embeddings(patches.reshape(*grid, -1), coords,
                                       method=self.resample, antialias=self.antialias)
      prefix = jnp.broadcast_to(prefix, (x.shape[0], *prefix.shape[1:]))
      return x + jnp.concatenate([prefix, patches], axis=1).astype(x.dtype)
    patches = posemb_lib.resample_grid(patches.reshape(1, *grid, -1), input_grid,
                                       method=self.resample, antialias=self.antialias, xp=jnp)
    pos_embedding = jnp.concatenate([prefix, patches.reshape(1, -1, x.shape[2])], axis=1)
    return x + pos_embedding.astype(x.dtype)


# The hyper-parameters of one Encoder1DBlock, handed down by name from the model.
BLOCK_FIELDS = ("mlp_dim", "num_heads", "dropout_rate", "attention_dropout_rate",
                "attention_implementation", "layerscale_init", "qk_norm", "mlp_activation",
                "mlp_norm", "rope", "layernorm_epsilon", "dtype", "param_dtype")


class Encoder(nn.Module):
  """Position embeddings, then the blocks, then the final LayerNorm.

  Tokens come in as `prefix` ([class], distillation; covered by the position embeddings
  when `posemb_prefix`), `registers` (never position-embedded) and the patch grid; they
  leave in that order.
  """
  num_layers: int
  block: dict                     # Encoder1DBlock keyword arguments (BLOCK_FIELDS).
  posemb: str = "learned"
  posemb_prefix: bool = True
  posemb_grid: Optional[tuple[int, int]] = None
  posemb_resample: str = "bilinear"
  posemb_antialias: bool = False
  pre_norm: bool = False          # a LayerNorm before the blocks (CLIP's ln_pre).
  rope_temperature: Optional[float] = None
  rope_grid: Optional[tuple[int, int]] = None  # EVA-02's pre-training grid.
  final_norm: bool = True
  stochastic_depth_rate: float = 0.0
  dropout_rate: float = 0.0
  remat_policy: str = "none"
  scan_layers: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _embed_positions(self, prefix, patches, coords=None):
    if coords is not None:  # NaFlex: (B, N, D) patches at their coordinates.
      grid_h = grid_w = None
    else:
      batch, grid_h, grid_w, channels = patches.shape
      patches = jnp.reshape(patches, (batch, grid_h * grid_w, channels))
    if self.posemb in ("sincos2d", "sincos2d_mae"):
      table = posemb_lib.sincos_2d(grid_h, grid_w, channels, mae=self.posemb == "sincos2d_mae")
      return prefix, patches + jnp.asarray(table, patches.dtype)[None]
    if self.posemb == "none":
      return prefix, patches
    covered = self.posemb_prefix and prefix.shape[1] > 0
    add = AddPositionEmbs(num_prefix=prefix.shape[1] if covered else 0,
                          grid=self.posemb_grid, resample=self.posemb_resample,
                          antialias=self.posemb_antialias, param_dtype=self.param_dtype,
                          name="posembed_input")
    input_grid = None if coords is not None else (grid_h, grid_w)
    if not covered:
      return prefix, add(patches, input_grid, coords)
    x = add(jnp.concatenate([prefix, patches], axis=1), input_grid, coords)
    return x[:, :prefix.shape[1]], x[:, prefix.shape[1]:]

  @nn.compact
  def __call__(self, prefix, registers, patches, *, train: bool, visible=None, coords=None):
    """`visible`: (batch, K) indices of the only patches the blocks see (MAE's encoder),
    taken after the position embeddings are added. `coords` (batch, N, 2): `patches` is
    a NaFlex sequence (batch, N, width), its padding (coordinates -1, last) masked out of
    attention."""
    rope_table = None
    kv_lengths = None
    if coords is not None:
      kv_lengths = naflex.sequence_lengths(coords, prefix.shape[1] + registers.shape[1])
    if self.block["rope"] != "none":
      rope_table = rope_lib.table(self.block["rope"], patches.shape[1:3],
                                  patches.shape[-1] // self.block["num_heads"],
                                  temperature=self.rope_temperature, ref_grid=self.rope_grid)
    prefix, patches = self._embed_positions(prefix, patches, coords)
    if visible is not None:
      patches = jnp.take_along_axis(patches, visible[..., None], axis=1)
    x = jnp.concatenate([prefix, registers, patches], axis=1)
    x = Dropout(self.dropout_rate)(x, deterministic=not train)
    if self.pre_norm:
      x = layer_norm("pre_norm", self.block["layernorm_epsilon"], self.dtype,
                     self.param_dtype)(x)
    x = constrain(x.astype(self.dtype), ("act_batch", "act_length", "act_embed"))
    block = Encoder1DBlock
    if self.remat_policy != "none":
      # Recompute activations in the backward pass: memory for compute, per block.
      block = nn.remat(Encoder1DBlock, policy=REMAT_POLICIES[self.remat_policy],
                       static_argnums=(2,))
    if self.scan_layers:
      # One compiled block applied num_layers times: compile time and program size stop
      # growing with depth. Parameters gain a leading 'layers' axis under
      # Transformer/encoderblock; vit_jax.models.vit_layout converts to and from the per-layer
      # layout of the published files.
      scanned = nn.scan(block, variable_axes={"params": 0, "intermediates": 0},
                        split_rngs={"params": True, "dropout": True},
                        in_axes=nn.broadcast, length=self.num_layers,
                        metadata_params={nn.PARTITION_NAME: "layers"})
      # One block for all layers: the mean of the per-layer rates below.
      x, _ = scanned(**self.block, stochastic_depth=self.stochastic_depth_rate / 2,
                     return_carry=True, name="encoderblock")(x, not train, rope_table,
                                                             kv_lengths)
    else:
      for i in range(self.num_layers):
        # DeiT's rule: the drop rate grows linearly with depth, 0 to stochastic_depth_rate.
        rate = self.stochastic_depth_rate * i / max(self.num_layers - 1, 1)
        x = block(**self.block, stochastic_depth=rate, name=f"encoderblock_{i}")(
            x, not train, rope_table, kv_lengths)
    if not self.final_norm:
      return x
    return layer_norm("encoder_norm", self.block["layernorm_epsilon"], self.dtype,
                      self.param_dtype)(x)


class MAPHead(nn.Module):
  """Multi-head attention pooling (big_vision; SigLIP): a learned probe attends over all
  tokens, then a residual MLP."""
  num_heads: int
  mlp_dim: int
  mlp_activation: str = "gelu_tanh"
  layernorm_epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, kv_lengths=None):
    probe = self.param("probe", partitioned(nn.initializers.xavier_uniform(),
                                            (None, None, "embed")),
                       (1, 1, x.shape[-1]), self.param_dtype)
    probe = jnp.tile(probe.astype(x.dtype), (x.shape[0], 1, 1))
    x = MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype,
                                     param_dtype=self.param_dtype,
                                     name="MultiHeadDotProductAttention_0")(
                                         probe, inputs_kv=x, deterministic=True,
                                         kv_lengths=kv_lengths)
    y = layer_norm("LayerNorm_0", self.layernorm_epsilon, self.dtype, self.param_dtype)(x)
    x = x + MlpBlock(self.mlp_dim, activation=self.mlp_activation, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="MlpBlock_0")(y, deterministic=True)
    return x[:, 0]


class VisionTransformer(nn.Module):
  """ViT: patches -> [class] token + position embeddings -> encoder -> head.

  Attributes mirror the paper's hyper-parameters; see `vit_jax.models.presets` for the
  named variants (ViT, DeiT III, DINOv2, SigLIP, ...). Every option defaults to the
  2020 ViT and its parameter tree. `head_kernel_init` defaults to zeros (the fine-tuning
  recipe); `head_bias_init` = -10 is the sigmoid pre-training recipe.
  """
  num_classes: Optional[int]
  patch_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  classifier: str = "token"       # pooling: 'token' | 'gap' | 'map'.
  class_token: Optional[bool] = None  # None: only for classifier='token'.
  distillation_token: bool = False    # DeiT: a 2nd token with its own head, averaged.
  num_registers: int = 0          # register tokens (Darcet et al. 2024), never pooled.
  posemb: str = "learned"         # 'learned' | 'sincos2d' | 'sincos2d_mae' | 'none'.
  posemb_prefix: bool = True      # learned embeddings cover the class/distillation tokens.
  posemb_grid: Optional[Sequence[int]] = None  # learned grid; None: the input's at init.
  # To other grids at run time: 'bilinear' | 'bicubic' | 'bilinear_align_corners'
  # (big_vision's scipy zoom), antialiased or not (timm: bicubic, antialiased).
  posemb_resample: str = "bilinear"
  posemb_antialias: bool = False
  layerscale_init: Optional[float] = None  # LayerScale on both residual branches.
  qk_norm: bool = False
  mlp_activation: str = "gelu_tanh"   # 'gelu_tanh' | 'gelu' | 'swiglu'.
  layernorm_epsilon: float = 1e-6
  fc_norm: bool = False           # LayerNorm after pooling instead of before (timm).
  # The MAP head attends to the prefix tokens ([class], registers) too (big_vision), or
  # to the patches only (timm's default).
  map_pool_prefix: bool = True
  pre_norm: bool = False          # LayerNorm on the embedded tokens (CLIP's ln_pre).
  patch_bias: bool = True         # the patch embedding's bias (CLIP has none).
  mlp_norm: bool = False          # LayerNorm inside the MLP (EVA-02 B/L's sub-LN).
  # Rotary embeddings of the patch tokens: 'none' | 'eva' (EVA-02) | 'dinov3'; the
  # temperature (None: the kind's own) and EVA's pre-training grid (models/rope.py).
  rope: str = "none"
  rope_temperature: Optional[float] = None
  rope_grid: Optional[Sequence[int]] = None
  representation_size: Optional[int] = None
  # FlexiViT: the patch size the input is cut into, when not `patch_size` (the kernel's
  # stored size): the kernel is PI-resized to it (models/patch_embed.py) as the resize
  # `patch_resample` / `patch_antialias` would (big_vision: bilinear; timm: bicubic,
  # antialiased). Set per step or per evaluation, never stored with the parameters.
  input_patch_size: Optional[int] = None
  patch_resample: str = "bilinear"
  patch_antialias: bool = False
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth_rate: float = 0.0  # drop-path rate of the last block (linear from 0).
  resnet_layers: Optional[Sequence[int]] = None
  resnet_width_factor: float = 1.0
  head_kernel_init_std: float = 0.0
  head_bias_init: float = 0.0
  attention_implementation: str = "auto"  # models/attention.py: the fastest exact kernel.
  remat_policy: str = "none"
  scan_layers: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def pixels_per_patch(self) -> int:
    """Input pixels along each side of one token: the patch size, times the hybrid's 16x
    ResNet downsampling."""
    return self.token_patch_size * (16 if self.resnet_layers is not None else 1)

  @property
  def token_patch_size(self) -> int:
    """The patch size the input is cut into (`input_patch_size`, else `patch_size`)."""
    return self.input_patch_size or self.patch_size

  def patch_grid(self, height: int, width: int) -> tuple[int, int]:
    """The (rows, columns) token grid for images of this size."""
    return height // self.pixels_per_patch(), width // self.pixels_per_patch()

  @property
  def has_class_token(self) -> bool:
    return self.classifier == "token" if self.class_token is None else self.class_token

  @property
  def num_posemb_prefix_tokens(self) -> int:
    """Leading entries of the learned position embeddings that are not on the grid."""
    if self.posemb != "learned" or not self.posemb_prefix:
      return 0
    return int(self.has_class_token) + int(self.distillation_token)

  @property
  def num_prefix_tokens(self) -> int:
    """Tokens before the patches: [class], distillation, registers."""
    return int(self.has_class_token) + int(self.distillation_token) + self.num_registers

  def _check_divisible(self, images, height: int, width: int) -> None:
    size = self.token_patch_size
    if not (height % size or width % size):
      return
    if self.resnet_layers is not None:
      raise UserError(
          f"Image size {images.shape[1]}x{images.shape[2]} gives a {height}x{width} "
          f"feature map after the ResNet stem that patch_size={size} does not "
          f"divide; use a resolution that is a multiple of {16 * size}.")
    raise UserError(
        f"Image size {images.shape[1]}x{images.shape[2]} is not divisible by "
        f"patch_size={size}; use a resolution that is a multiple of {size}.")

  def num_patches(self, image_shape) -> int:
    """Patch tokens of one example: (H, W, C) images, or (N, P*P*C) NaFlex patches."""
    if naflex.is_sequence_shape(image_shape):
      return image_shape[0]
    rows, cols = self.patch_grid(*image_shape[:2])
    return rows * cols

  def _check_sequence_input(self, visible, corrupt) -> None:
    """NaFlex patches: what the model must have to take them, one line each."""
    problems = {
        "a ResNet stem (hybrid)": self.resnet_layers is not None,
        f"posemb={self.posemb!r} (NaFlex resizes learned position grids)":
            self.posemb not in ("learned", "none"),
        "no posemb_grid (the learned grid's size; a run sets it from its resolution)":
            self.posemb == "learned" and not self.posemb_grid,
        f"rope={self.rope!r}": self.rope != "none",
        f"posemb_resample={self.posemb_resample!r} (bilinear or bicubic)":
            self.posemb_resample not in ("bilinear", "bicubic"),
        "MAE's visible patches or masked patch prediction (square images only)":
            visible is not None or corrupt is not None,
    }
    found = [what for what, bad in problems.items() if bad]
    if found:
      raise UserError(f"NaFlex inputs (max_num_patches) do not work with {found[0]}; "
                      f"train on square images (leave max_num_patches unset) instead.")

  def _token(self, name: str, count: int, batch: int, dtype):
    token = self.param(name, partitioned(nn.initializers.zeros, (None, None, "embed")),
                       (1, count, self.hidden_size), self.param_dtype)
    return jnp.tile(token.astype(dtype), (batch, 1, 1))

  def _dense(self, features: int, name: str, kernel_init, bias_init, axis: str):
    # The input side is the token width: FSDP splits it (a pod's 1000-class head would
    # otherwise be a whole copy, with its optimizer state, on every chip).
    return nn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype,
                    kernel_init=partitioned(kernel_init, ("embed", axis)),
                    bias_init=partitioned(bias_init, (axis,)), name=name)

  def _pool(self, x, coords=None):
    """Encoder output -> (pooled features, distillation-token features or None);
    `coords`: NaFlex patches, their padding left out of the pooling."""
    if self.classifier == "token":
      return x[:, 0], (x[:, 1] if self.distillation_token else None)
    if self.classifier == "gap":
      patches = x[:, self.num_prefix_tokens:]
      if coords is None:
        return jnp.mean(patches, axis=1), None
      keep = naflex.valid(coords)[..., None].astype(patches.dtype)
      count = jnp.maximum(jnp.sum(keep, axis=1), 1)
      return jnp.sum(patches * keep, axis=1) / count, None
    prefix = self.num_prefix_tokens if self.map_pool_prefix else 0
    x = x if self.map_pool_prefix else x[:, self.num_prefix_tokens:]
    kv_lengths = None if coords is None else naflex.sequence_lengths(coords, prefix)
    return MAPHead(num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                   mlp_activation=self.mlp_activation,
                   layernorm_epsilon=self.layernorm_epsilon, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="MAPHead_0")(x, kv_lengths), None

  @nn.compact
  def __call__(self, images, *, train: bool = False, return_representation: bool = False,
               return_tokens: bool = False, visible=None, corrupt: Optional[Callable] = None):
    """images: (batch, height, width, channels), preprocessed as the model was trained
    ([-1, 1] for the published ViTs). Returns float32 logits.

    The self-supervised objectives (vit_jax.objectives) ask for `return_tokens`: every
    token after the encoder (prefix, registers, patches), no pooling or head; `visible`
    (batch, K) patch indices: the blocks see only those patches (MAE); `corrupt`:
    patch embeddings (batch, rows, columns, width) -> the same, before the position
    embeddings (masked patch prediction).

    `images` may be NaFlex patches (`models.naflex.Patches`: patch sequences with their
    grid coordinates, padded): the position grid is resized to each image's, padding
    masked out of attention and pooling."""
    coords = None
    if isinstance(images, naflex.Patches):
      self._check_sequence_input(visible, corrupt)
      images, coords = images
    x = images.astype(self.dtype)
    if self.resnet_layers is not None:
      x = resnet.resnet_stem(x, num_layers=self.resnet_layers,
                             width_factor=self.resnet_width_factor, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    if coords is None:
      self._check_divisible(images, *x.shape[1:3])
    x = PatchEmbedding(self.hidden_size, self.patch_size, use_bias=self.patch_bias,
                       input_patch_size=self.input_patch_size,
                       resize_method=self.patch_resample,
                       resize_antialias=self.patch_antialias,
                       dtype=self.dtype, param_dtype=self.param_dtype,
                       kernel_init=partitioned(nn.initializers.lecun_normal(),
                                               (None, None, None, "embed")),
                       bias_init=partitioned(nn.initializers.zeros, ("embed",)),
                       name="embedding")(x)
    if corrupt is not None:
      x = corrupt(x)
    batch = x.shape[0]
    prefix = [self._token("cls", 1, batch, x.dtype)] if self.has_class_token else []
    if self.distillation_token:
      prefix.append(self._token("dist", 1, batch, x.dtype))
    empty = jnp.zeros((batch, 0, x.shape[-1]), x.dtype)
    prefix = jnp.concatenate(prefix, axis=1) if prefix else empty
    registers = (self._token("registers", self.num_registers, batch, x.dtype)
                 if self.num_registers else empty)
    x = Encoder(num_layers=self.num_layers,
                block={field: getattr(self, field) for field in BLOCK_FIELDS},
                posemb=self.posemb, posemb_prefix=self.posemb_prefix,
                posemb_grid=tuple(self.posemb_grid) if self.posemb_grid else None,
                posemb_resample=self.posemb_resample,
                posemb_antialias=self.posemb_antialias, pre_norm=self.pre_norm,
                rope_temperature=self.rope_temperature,
                rope_grid=tuple(self.rope_grid) if self.rope_grid else None,
                final_norm=not self.fc_norm,
                stochastic_depth_rate=self.stochastic_depth_rate,
                dropout_rate=self.dropout_rate, remat_policy=self.remat_policy,
                scan_layers=self.scan_layers, dtype=self.dtype, param_dtype=self.param_dtype,
                name="Transformer")(prefix, registers, x, train=train, visible=visible,
                                    coords=coords)
    if return_tokens:
      return x
    self.sow("intermediates", "tokens", x)  # every token after the encoder, when asked.
    x, x_dist = self._pool(x, coords)
    if self.fc_norm:
      x = layer_norm("fc_norm", self.layernorm_epsilon, self.dtype, self.param_dtype)(x)
    if self.representation_size is not None:
      x = jnp.tanh(self._dense(self.representation_size, "pre_logits",
                               nn.initializers.lecun_normal(), nn.initializers.zeros,
                               None)(x))
    if return_representation or not self.num_classes:
      features = x if x_dist is None else (x + x_dist) / 2
      return features.astype(jnp.float32)
    head_kernel_init = (nn.initializers.normal(self.head_kernel_init_std)
                        if self.head_kernel_init_std else nn.initializers.zeros)
    head = functools.partial(self._dense, self.num_classes, kernel_init=head_kernel_init,
                             bias_init=nn.initializers.constant(self.head_bias_init),
                             axis="classes")
    logits = head("head")(x)
    if x_dist is not None:  # DeiT's inference rule: the mean of both heads.
      logits = (logits + head("head_dist")(x_dist)) / 2
    return logits.astype(jnp.float32)


_CHOICES = {"classifier": CLASSIFIERS, "attention_implementation": attention_lib.IMPLEMENTATIONS,
            "remat_policy": tuple(REMAT_POLICIES), "posemb": POSEMB_KINDS,
            "posemb_resample": posemb_lib.RESAMPLE_METHODS, "mlp_activation": MLP_ACTIVATIONS,
            "rope": rope_lib.KINDS, "patch_resample": ("bilinear", "bicubic")}


def create(*, num_classes: Optional[int], **hparams) -> VisionTransformer:
  """The family's entry point (see `vit_jax.models.create_model`): checks every
  hyper-parameter by name before any JAX work."""
  hparams = checked(VisionTransformer, hparams, family="vit", example="ViT-B_16")
  if hparams["hidden_size"] % hparams["num_heads"]:
    raise UserError(f"hidden_size={hparams['hidden_size']} is not divisible by "
                    f"num_heads={hparams['num_heads']}.")
  for field, valid in _CHOICES.items():
    if field in hparams and hparams[field] not in valid:
      raise UserError(f"model.{field}={hparams[field]!r} is not one of {list(valid)}.")
  for field in ("resnet_layers", "posemb_grid", "rope_grid"):
    if hparams.get(field) is not None:
      hparams[field] = tuple(hparams[field])
  if hparams.get("posemb", "").startswith("sincos2d") and hparams["hidden_size"] % 4:
    raise UserError(f"posemb={hparams['posemb']!r} needs hidden_size divisible by 4, not "
                    f"{hparams['hidden_size']}.")
  if hparams.get("rope", "none") != "none" and (
      hparams["hidden_size"] // hparams["num_heads"]) % 4:
    raise UserError(f"rope={hparams['rope']!r} needs a head dimension (hidden_size / "
                    f"num_heads) divisible by 4, not "
                    f"{hparams['hidden_size'] // hparams['num_heads']}.")
  if not 0 <= hparams.get("stochastic_depth_rate", 0.0) < 1:
    raise UserError(f"stochastic_depth_rate={hparams['stochastic_depth_rate']} must be in "
                    f"[0, 1).")
  if hparams.get("distillation_token") and hparams.get("classifier", "token") != "token":
    raise UserError("distillation_token=True pools tokens: it needs classifier='token'.")
  return VisionTransformer(num_classes=num_classes, **hparams)
