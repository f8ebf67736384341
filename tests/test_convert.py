"""Checkpoint conversion against the reference implementations: timm and transformers
models built offline with random weights, converted, and compared on real images."""
import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import vit_jax
from vit_jax import convert
from vit_jax.convert import npz_format
from vit_jax.convert import openclip_format
from vit_jax.convert import timm_format
from vit_jax.models import create_model
from vit_jax.models import params as params_lib
from vit_jax.models import posemb as posemb_lib
from tests.torch_refs import import_references

torch, timm, transformers = import_references()
TOLERANCE = 1e-4


def photos(size: int, count: int = 2) -> np.ndarray:
  """Real photographs (shipped with scikit-learn), resized and normalised: NHWC float32."""
  from sklearn.datasets import load_sample_images
  from PIL import Image
  images = [np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
            for img in load_sample_images().images]
  batch = np.stack([images[i % len(images)] for i in range(count)]).astype(np.float32)
  return (batch / 255.0 - 0.45) / 0.25


def randomise(module, seed: int = 0):
  """Random weights everywhere (zero-initialised tokens and heads would hide layout bugs)."""
  generator = torch.Generator().manual_seed(seed)
  for name, tensor in module.state_dict().items():
    if tensor.is_floating_point():
      noise = torch.randn(tensor.shape, generator=generator)
      is_scale = tensor.ndim == 1 and ("norm" in name or "layer_scale" in name or
                                       name.endswith((".gamma", "lambda1"))) and name.endswith(
                                           ("weight", "gamma", "lambda1"))
      tensor.copy_(1 + 0.1 * noise if is_scale else 0.05 * noise)
  module.eval()
  return module


def nchw(images: np.ndarray):
  return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def state_of(module) -> dict:
  return {k: v.numpy() for k, v in module.state_dict().items()}


def ours(checkpoint: convert.Checkpoint, images, **kwargs):
  model = create_model(checkpoint.arch["family"], num_classes=checkpoint.num_classes,
                       **{k: v for k, v in checkpoint.arch.items() if k != "family"})
  # Jitted: one compile per input shape, not one per operation.
  return np.asarray(jax.jit(functools.partial(model.apply, **kwargs))(
      {"params": checkpoint.params}, images))


def tokens_of(checkpoint: convert.Checkpoint, images, blocks=()):
  """`features.extract` of a checkpoint, jitted (as cli.features runs it)."""
  from vit_jax.analysis import features
  from vit_jax.convert.pretrained import model_for
  model = model_for(checkpoint)
  return jax.jit(lambda p, x: features.extract(model, p, x, blocks=blocks))(
      checkpoint.params, images)


def assert_close(a, b):
  assert a.shape == b.shape, (a.shape, b.shape)
  diff = np.abs(a - b).max()
  assert diff <= TOLERANCE, f"max |diff| {diff:.2e}"


def save_timm(model, path):
  from safetensors.torch import save_file
  save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


# name, create_model overrides, input size.
TIMM_MODELS = [
    ("vit_small_patch16_224.augreg_in21k", dict(depth=2), 64),
    ("deit3_small_patch16_224", dict(depth=2), 64),
    ("vit_small_patch14_dinov2", dict(depth=2, num_classes=10), 56),
    ("vit_small_patch14_reg4_dinov2", dict(depth=2, num_classes=10), 56),
    ("vit_giant_patch14_dinov2", dict(depth=1, embed_dim=192, num_heads=3, num_classes=0), 28),
    ("deit_small_distilled_patch16_224", dict(depth=2), 64),
    ("vit_base_patch16_siglip_224", dict(depth=2, num_classes=7), 64),
    # CLIP: pre-norm, no patch bias, QuickGELU, LayerNorm eps 1e-5, the projection as head.
    ("vit_base_patch16_clip_quickgelu_224.openai", dict(depth=2), 64),
    ("vit_base_patch16_224.mae", dict(depth=1), 32),  # MAE's encoder: ImageNet statistics.
]
# timm's Eva class: rotary embeddings. (name, overrides, the size the weights are for.)
EVA_MODELS = [
    ("vit_small_patch16_dinov3", dict(depth=2, num_classes=5), 64),       # no qkv bias
    ("vit_small_patch16_dinov3_qkvb", dict(depth=2, num_classes=5), 64),  # q, v biases
    ("vit_small_plus_patch16_dinov3", dict(depth=1), 64),                 # SwiGLU
    ("eva02_tiny_patch14_224", dict(depth=2, num_classes=5), 56),         # packed SwiGLU
    ("eva02_base_patch14_224", dict(depth=1, embed_dim=192, num_heads=3), 56),  # sub-LN
]


@pytest.mark.parametrize("name,overrides,size", TIMM_MODELS, ids=[m[0] for m in TIMM_MODELS])
def test_timm_logits(tmp_path, name, overrides, size):
  reference = randomise(timm.create_model(name, pretrained=False, img_size=size, **overrides))
  path = str(tmp_path / "model.safetensors")
  save_timm(reference, path)
  checkpoint = convert.read(path, timm_model=name)
  images = photos(size)
  theirs = reference(nchw(images)).numpy()
  assert_close(ours(checkpoint, images), theirs)
  # Round trip: our params -> timm layout -> ours, bit for bit.
  back = timm_format.from_params(checkpoint.arch, params_lib.flatten(checkpoint.params))
  original = state_of(reference)
  assert sorted(back) == sorted(original)
  for key, value in back.items():
    np.testing.assert_array_equal(value, original[key], err_msg=key)


@pytest.mark.parametrize("name,overrides,size", EVA_MODELS, ids=[m[0] for m in EVA_MODELS])
def test_timm_eva_rotary_models(tmp_path, name, overrides, size):
  """DINOv3 and EVA-02 from timm's Eva: logits and every token (forward_features) at the
  size the weights are for and at a larger and a smaller one (rotary angles and absolute
  embeddings recomputed / resampled as timm does with dynamic_img_size)."""
  reference = randomise(timm.create_model(name, pretrained=False, img_size=size,
                                          dynamic_img_size=True, **overrides))
  path = str(tmp_path / "model.safetensors")
  save_timm(reference, path)
  checkpoint = convert.read(path, timm_model=name)
  # Written back: the Eva the writer describes loads it strictly (and gives the same
  # logits, below), and reading it again gives our parameters bit for bit.
  kwargs = convert.write_timm(checkpoint, str(tmp_path / "back.safetensors"))
  import functools
  from safetensors.torch import load_file
  rebuilt = timm.models.eva.Eva(**kwargs, norm_layer=functools.partial(
      torch.nn.LayerNorm, eps=timm_format.norm_epsilon(checkpoint.arch))).eval()
  rebuilt.load_state_dict(load_file(str(tmp_path / "back.safetensors")), strict=True)
  again = convert.read(str(tmp_path / "back.safetensors"), timm_model=name)
  for key, value in params_lib.flatten(checkpoint.params).items():
    np.testing.assert_array_equal(params_lib.flatten(again.params)[key], value, err_msg=key)
  for factor in (1.0, 1.5, 0.5):
    side = int(size * factor) // checkpoint.arch["patch_size"] * checkpoint.arch["patch_size"]
    images = photos(side)
    with torch.no_grad():
      assert_close(ours(checkpoint, images), reference(nchw(images)).numpy())
      assert_close(rebuilt(nchw(images)).numpy(), reference(nchw(images)).numpy())
      tokens = reference.forward_features(nchw(images)).numpy()
    out = tokens_of(checkpoint, images)
    assert_close(np.concatenate([out["prefix_tokens"], out["patch_tokens"]], axis=1), tokens)


def test_timm_resamples_position_embeddings_as_timm(tmp_path):
  """A 4x4-grid DINOv2-style model fed 6x6 and 3x3 grids: timm's dynamic_img_size path
  (bicubic, antialiased) and ours agree."""
  reference = randomise(timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False,
                                          img_size=56, depth=2, dynamic_img_size=True))
  path = str(tmp_path / "model.safetensors")
  save_timm(reference, path)
  checkpoint = convert.read(path, timm_model="vit_small_patch14_reg4_dinov2")
  for size in (84, 42):
    images = photos(size)
    assert_close(ours(checkpoint, images), reference(nchw(images)).numpy())


def test_timm_qk_norm_gap_fc_norm(tmp_path):
  from timm.models.vision_transformer import VisionTransformer
  reference = randomise(VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2,
                                          num_heads=4, qk_norm=True, global_pool="avg",
                                          fc_norm=True, num_classes=5, init_values=0.1))
  path = str(tmp_path / "model.safetensors")
  save_timm(reference, path)
  checkpoint = convert.read(path, num_heads=4)
  assert checkpoint.arch["classifier"] == "gap" and checkpoint.arch["fc_norm"]
  images = photos(32)
  assert_close(ours(checkpoint, images), reference(nchw(images)).numpy())


def _hf_models():
  t = transformers
  small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
  return [
      ("vit", lambda: t.ViTForImageClassification(t.ViTConfig(image_size=32, patch_size=8,
                                                               num_labels=6, **small)), 32),
      ("vit_pooler", lambda: t.ViTModel(t.ViTConfig(image_size=32, patch_size=8, **small)), 32),
      ("deit", lambda: t.DeiTForImageClassificationWithTeacher(
          t.DeiTConfig(image_size=32, patch_size=8, num_labels=6, **small)), 32),
      ("dinov2", lambda: t.Dinov2Model(t.Dinov2Config(
          image_size=42, patch_size=14, hidden_size=64, num_hidden_layers=2,
          num_attention_heads=4, layerscale_value=0.5)), 42),
      ("dinov2_swiglu", lambda: t.Dinov2Model(t.Dinov2Config(
          image_size=42, patch_size=14, hidden_size=64, num_hidden_layers=2,
          num_attention_heads=4, use_swiglu_ffn=True)), 42),
      ("dinov2_registers", lambda: t.Dinov2WithRegistersModel(t.Dinov2WithRegistersConfig(
          image_size=42, patch_size=14, hidden_size=64, num_hidden_layers=2,
          num_attention_heads=4, num_register_tokens=4)), 42),
      ("siglip", lambda: t.SiglipVisionModel(t.SiglipVisionConfig(
          image_size=32, patch_size=8, **small)), 32),
      ("clip", lambda: t.CLIPVisionModel(t.CLIPVisionConfig(
          image_size=32, patch_size=8, **small)), 32),
      ("clip_projection", lambda: t.CLIPVisionModelWithProjection(t.CLIPVisionConfig(
          image_size=32, patch_size=8, projection_dim=16, **small)), 32),
  ]


def hf_output(model, images):
  out = model(pixel_values=nchw(images))
  for name in ("logits", "image_embeds", "pooler_output"):  # image_embeds: CLIP's projection.
    if getattr(out, name, None) is not None:
      return getattr(out, name).numpy()
  return out.last_hidden_state[:, 0].numpy()


def save_hf(model, directory):
  model.save_pretrained(directory)
  return directory


@pytest.mark.parametrize("name", [m[0] for m in _hf_models()])
def test_hf_outputs_and_round_trip(tmp_path, name):
  build, size = {n: (b, s) for n, b, s in _hf_models()}[name]
  reference = randomise(build())
  directory = save_hf(reference, str(tmp_path / "hf"))
  checkpoint = convert.read(directory)
  images = photos(size)
  theirs = hf_output(reference, images)
  out = reference(pixel_values=nchw(images))
  has_logits = hasattr(out, "logits") or hasattr(out, "image_embeds")
  assert_close(ours(checkpoint, images, return_representation=not has_logits), theirs)
  # Round trip through our HF export: the same tensors, and transformers loads it.
  exported = str(tmp_path / "exported")
  convert.write_hf(checkpoint, exported)
  reloaded = convert.read(exported)
  for key, value in params_lib.flatten(checkpoint.params).items():
    np.testing.assert_array_equal(params_lib.flatten(reloaded.params)[key], value, err_msg=key)
  loaded = type(reference).from_pretrained(exported).eval()
  assert_close(hf_output(loaded, images), theirs)


def test_clip_tokens_and_blocks_match_transformers_and_timm(tmp_path):
  """CLIP's block outputs (transformers' hidden_states, before the post-LayerNorm) and
  every final token (timm's forward_features) match, also at a larger input."""
  t = transformers
  hf = randomise(t.CLIPVisionModel(t.CLIPVisionConfig(
      image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=128)))
  checkpoint = convert.read(save_hf(hf, str(tmp_path / "hf")))
  images = photos(32)
  with torch.no_grad():
    out = hf(pixel_values=nchw(images), output_hidden_states=True)
  ours_out = tokens_of(checkpoint, images, blocks=(0, 1))
  for i in range(2):
    assert_close(ours_out[f"block_{i}"], out.hidden_states[i + 1].numpy())
  images = photos(48)  # transformers' interpolate_pos_encoding at a new size.
  with torch.no_grad():
    pooled = hf(pixel_values=nchw(images), interpolate_pos_encoding=True).pooler_output
  assert_close(ours(checkpoint, images, return_representation=True), pooled.numpy())
  name = "vit_base_patch16_clip_224.openai"
  reference = randomise(timm.create_model(name, pretrained=False, img_size=32, depth=2,
                                          patch_size=8, dynamic_img_size=True))
  save_timm(reference, str(tmp_path / "clip.safetensors"))
  checkpoint = convert.read(str(tmp_path / "clip.safetensors"), timm_model=name)
  for size in (32, 48):
    images = photos(size)
    tokens = tokens_of(checkpoint, images)
    with torch.no_grad():
      theirs = reference.forward_features(nchw(images)).numpy()
    assert_close(np.concatenate([tokens["prefix_tokens"], tokens["patch_tokens"]], 1), theirs)


def test_mae_encoder_from_a_transformers_pretraining_checkpoint(tmp_path):
  """ViTMAEForPreTraining as the Hub ships it: the encoder is read, the decoder dropped
  with a note; every token matches the reference (mask_ratio 0, tokens in order)."""
  t = transformers
  config = t.ViTMAEConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=128, mask_ratio=0.0,
                          decoder_num_hidden_layers=1, decoder_hidden_size=32,
                          decoder_intermediate_size=64)
  reference = randomise(t.ViTMAEForPreTraining(config))
  checkpoint = convert.read(save_hf(reference, str(tmp_path / "hf")))
  assert any("decoder" in note for note in checkpoint.notes)
  assert checkpoint.preprocessing["mean"] == timm_format.IMAGENET_MEAN
  images = photos(32)
  with torch.no_grad():
    out = reference.vit(pixel_values=nchw(images), noise=torch.arange(16.0).expand(2, 16),
                        output_hidden_states=True)
  tokens = tokens_of(checkpoint, images, blocks=(0,))
  assert_close(tokens["patch_tokens"], out.last_hidden_state[:, 1:].numpy())
  assert_close(tokens["block_0"], out.hidden_states[1].numpy())
  assert_close(ours(checkpoint, images, return_representation=True),
               out.last_hidden_state[:, 0].numpy())
  # Written back: the encoder is a plain ViT, which transformers' ViTModel loads.
  convert.write_hf(checkpoint, str(tmp_path / "exported"))
  vit = t.ViTModel.from_pretrained(str(tmp_path / "exported"), add_pooling_layer=False).eval()
  with torch.no_grad():
    assert_close(vit(pixel_values=nchw(images)).last_hidden_state.numpy(),
                 out.last_hidden_state.numpy())


def _open_clip():
  import open_clip  # after import_references: it imports torchvision.
  return open_clip


@pytest.mark.parametrize("quick_gelu", [True, False])
def test_openclip_image_tower_and_export(tmp_path, quick_gelu):
  """An OpenCLIP CLIP (random, small) saved as the Hub ships it: its image features
  (encode_image, the projection included) and block outputs match; the text tower is
  ignored; the export loads back into OpenCLIP's model.visual."""
  open_clip = _open_clip()
  model = open_clip.model.CLIP(
      embed_dim=16, quick_gelu=quick_gelu,
      vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=16),
      text_cfg=dict(context_length=8, vocab_size=50, width=32, heads=2, layers=1))
  reference = randomise(model)
  directory = tmp_path / "hub"
  directory.mkdir()
  save_timm(reference, str(directory / "open_clip_model.safetensors"))
  (directory / "open_clip_config.json").write_text(json.dumps({
      "model_cfg": {"quick_gelu": quick_gelu, "vision_cfg": {"head_width": 16}},
      "preprocess_cfg": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}}))
  checkpoint = convert.read(str(directory))
  assert checkpoint.arch["mlp_activation"] == ("quick_gelu" if quick_gelu else "gelu")
  assert checkpoint.preprocessing["mean"] == (0.5, 0.4, 0.3)
  images = photos(32)
  with torch.no_grad():
    assert_close(ours(checkpoint, images), reference.encode_image(nchw(images)).numpy())
  exported = str(tmp_path / "visual.safetensors")
  convert.write_openclip(checkpoint, exported)
  from safetensors.torch import load_file
  fresh = open_clip.model.CLIP(
      embed_dim=16, quick_gelu=quick_gelu,
      vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=16),
      text_cfg=dict(context_length=8, vocab_size=50, width=32, heads=2, layers=1)).eval()
  fresh.visual.load_state_dict({k.removeprefix("visual."): v
                                for k, v in load_file(exported).items()})
  with torch.no_grad():
    assert_close(fresh.encode_image(nchw(images)).numpy(),
                 reference.encode_image(nchw(images)).numpy())
  # The line `convert --to=openclip` prints, executed as printed: the same tower.
  scope = {}
  exec(openclip_format.openclip_code(checkpoint.arch, checkpoint.num_classes, exported),  # pylint: disable=exec-used
       scope)
  with torch.no_grad():
    assert_close(scope["visual"].eval()(nchw(images)).numpy(),
                 reference.encode_image(nchw(images)).numpy())
  # At 48 px: OpenCLIP's own loader (resize_pos_embed into a 48-px model) and ours agree.
  larger = open_clip.model.CLIP(
      embed_dim=16, quick_gelu=quick_gelu,
      vision_cfg=dict(image_size=48, patch_size=8, width=64, layers=2, head_width=16),
      text_cfg=dict(context_length=8, vocab_size=50, width=32, heads=2, layers=1)).eval()
  state = reference.state_dict()
  open_clip.model.resize_pos_embed(state, larger)
  larger.load_state_dict(state)
  np.testing.assert_allclose(posemb_lib.resize_posemb(
      params_lib.flatten(checkpoint.params)["Transformer/posembed_input/pos_embedding"],
      target_grid=(6, 6), method="bicubic", antialias=True),
      state["visual.positional_embedding"].numpy()[None], atol=1e-5)
  images = photos(48)
  with torch.no_grad():
    assert_close(ours(checkpoint, images), larger.encode_image(nchw(images)).numpy())


@pytest.mark.parametrize("gated", [False, True])
def test_hf_dinov3_tokens_any_size_and_round_trip(tmp_path, gated):
  """transformers' DINOv3ViTModel (registers, no key bias; gated SiLU MLP or GELU): the
  pooled [class] token, every block's output and the patch tokens match at the size of
  the config and at other sizes (rotary angles recomputed per grid); the export loads
  back into transformers with the same outputs."""
  t = transformers
  config = t.DINOv3ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=128,
                             num_register_tokens=2, use_gated_mlp=gated,
                             hidden_act="silu" if gated else "gelu")
  reference = randomise(t.DINOv3ViTModel(config))
  checkpoint = convert.read(save_hf(reference, str(tmp_path / "hf")))
  exported = str(tmp_path / "exported")
  convert.write_hf(checkpoint, exported)
  loaded = t.DINOv3ViTModel.from_pretrained(exported).eval()
  for size in (32, 48, 24):
    images = photos(size)
    with torch.no_grad():
      out = reference(pixel_values=nchw(images), output_hidden_states=True)
      again = loaded(pixel_values=nchw(images))
    assert_close(ours(checkpoint, images, return_representation=True),
                 out.pooler_output.numpy())
    tokens = tokens_of(checkpoint, images, blocks=(0, 1))
    assert_close(tokens["patch_tokens"], out.last_hidden_state[:, 3:].numpy())
    for i in range(2):
      assert_close(tokens[f"block_{i}"], out.hidden_states[i + 1].numpy())
    assert_close(again.last_hidden_state.numpy(), out.last_hidden_state.numpy())


def test_hf_dinov2_resamples_position_embeddings_as_transformers(tmp_path):
  t = transformers
  reference = randomise(t.Dinov2Model(t.Dinov2Config(
      image_size=56, patch_size=14, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)))
  checkpoint = convert.read(save_hf(reference, str(tmp_path / "hf")))
  for size in (84, 42):  # up and down from the 4x4 grid.
    images = photos(size)
    assert_close(ours(checkpoint, images, return_representation=True), hf_output(reference, images))


def _big_vision_resample_posemb(old, new_positions):
  """big_vision's own high-res rule (models/vit.py, resample_posemb in load()): the
  square grid zoomed with scipy.ndimage.zoom, order 1."""
  import scipy.ndimage
  old_side, new_side = int(np.sqrt(old.shape[1])), int(np.sqrt(new_positions))
  zoom = (new_side / old_side, new_side / old_side, 1)
  grid = scipy.ndimage.zoom(old.reshape(old_side, old_side, -1), zoom, order=1)
  return grid.reshape(1, new_side * new_side, -1)


def test_big_vision_resamples_position_embeddings_as_big_vision(tmp_path):
  """A big_vision ViT (4x4 posemb grid) read from its .npz and fed 6x6 and 3x3 grids gives
  the logits of the same model whose embeddings big_vision's load() zoomed."""
  model = create_model("vit", num_classes=5, patch_size=8, hidden_size=32, num_layers=1,
                       num_heads=2, mlp_dim=64, classifier="gap", class_token=False,
                       posemb_prefix=False)
  params = params_lib.flatten(jax.eval_shape(
      model.init, jax.random.key(0), np.zeros((1, 32, 32, 3)))["params"])
  params = {k: np.random.default_rng(len(k)).normal(size=v.shape).astype(np.float32) * 0.2
            for k, v in params.items()}
  posemb = params.pop("Transformer/posembed_input/pos_embedding")
  # big_vision's own layout: the embeddings at the root, current block names.
  flat = {"params/pos_embedding": posemb}
  for key, value in params.items():
    key = key.replace("LayerNorm_2", "LayerNorm_1").replace(
        "MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0").replace(
            "MlpBlock_3", "MlpBlock_0")
    flat[f"params/{key}"] = value
  path = str(tmp_path / "bv.npz")
  np.savez(path, **flat)
  checkpoint = convert.read(path)
  assert checkpoint.arch["posemb_resample"] == "bilinear_align_corners"
  for size in (48, 24):
    grid = size // 8
    np.testing.assert_allclose(  # the embeddings themselves, then the logits.
        posemb_lib.resize_posemb(posemb, target_grid=(grid, grid), num_prefix_tokens=0,
                                 method="bilinear_align_corners"),
        _big_vision_resample_posemb(posemb, grid * grid), atol=1e-5)
    zoomed = dict(params, **{"Transformer/posembed_input/pos_embedding":
                             _big_vision_resample_posemb(posemb, grid * grid)})
    native = create_model("vit", num_classes=5, patch_size=8, hidden_size=32, num_layers=1,
                          num_heads=2, mlp_dim=64, classifier="gap", class_token=False,
                          posemb_prefix=False)
    images = photos(size)
    expected = np.asarray(jax.jit(native.apply)({"params": params_lib.unflatten(zoomed)},
                                                images))
    assert_close(ours(checkpoint, images), expected)


def test_export_to_timm_loads_in_timm(tmp_path):
  """A vit_jax DINOv2-style model -> timm .safetensors -> timm's own model: same logits."""
  model = create_model("DINOv2-S_14-reg4", num_classes=3, num_layers=2, posemb_grid=(4, 4))
  images = photos(56)
  flat = params_lib.flatten(model.init(jax.random.key(0), images)["params"])
  rng = np.random.default_rng(0)
  params = params_lib.unflatten({k: np.asarray(v) + 0.05 * rng.standard_normal(v.shape).astype(
      np.float32) for k, v in flat.items()})
  arch = dict(family="vit", **{k: getattr(model, k) for k in (
      "patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim", "mlp_activation",
      "layerscale_init", "num_registers", "posemb_grid", "posemb_resample")})
  arch["posemb_grid"] = (4, 4)
  checkpoint = convert.Checkpoint.of(arch, params, {"resolution": 56}, "test")
  kwargs = convert.write_timm(checkpoint, str(tmp_path / "m.safetensors"))
  from timm.models.vision_transformer import VisionTransformer
  from safetensors.torch import load_file
  net = VisionTransformer(**kwargs)
  net.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
  net.eval()
  assert_close(net(nchw(images)).numpy(), ours(checkpoint, images))


def test_mixer_matches_timm(tmp_path):
  """Our MLP-Mixer in the published layout against timm's Mixer: parameter count and
  logits (timm's layout mapped by hand here, independently of vit_jax.convert)."""
  from timm.models.mlp_mixer import MlpMixer
  reference = randomise(MlpMixer(num_classes=5, img_size=64, patch_size=16, num_blocks=2,
                                 embed_dim=512, mlp_ratio=(0.5, 4.0),
                                 act_layer=lambda: torch.nn.GELU(approximate="tanh")))
  model = create_model("Mixer-S_16", num_classes=5, num_layers=2)
  s = state_of(reference)
  lin = lambda k: {"kernel": s[k + ".weight"].T, "bias": s[k + ".bias"]}  # noqa: E731
  ln = lambda k: {"scale": s[k + ".weight"], "bias": s[k + ".bias"]}  # noqa: E731
  params = {"stem": {"kernel": s["stem.proj.weight"].transpose(2, 3, 1, 0),
                     "bias": s["stem.proj.bias"]},
            "pre_head_layer_norm": ln("norm"), "head": lin("head")}
  for i in range(2):
    b = f"blocks.{i}"
    params[f"MixerBlock_{i}"] = {
        "LayerNorm_0": ln(f"{b}.norm1"), "LayerNorm_1": ln(f"{b}.norm2"),
        "token_mixing": {"Dense_0": lin(f"{b}.mlp_tokens.fc1"), "Dense_1": lin(f"{b}.mlp_tokens.fc2")},
        "channel_mixing": {"Dense_0": lin(f"{b}.mlp_channels.fc1"),
                           "Dense_1": lin(f"{b}.mlp_channels.fc2")}}
  images = photos(64)
  assert_close(np.asarray(model.apply({"params": params}, images)),
               reference(nchw(images)).numpy())
  full = timm.create_model("mixer_b16_224", pretrained=False)
  assert vit_jax.models.count_parameters("Mixer-B_16") == sum(p.numel() for p in full.parameters())


def test_converted_npz_records_everything(tmp_path):
  """timm file -> convert CLI -> .npz with plain arrays -> load_pretrained and
  preprocessing_of with no other argument."""
  name = "vit_small_patch14_reg4_dinov2"
  reference = randomise(timm.create_model(name, pretrained=False, img_size=56, depth=2,
                                          num_classes=4))
  src = str(tmp_path / "model.safetensors")
  save_timm(reference, src)
  out = str(tmp_path / "dinov2.npz")
  result = subprocess.run([sys.executable, "-m", "vit_jax.convert", src, out,
                           f"--timm_model={name}"], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert "DINOv2" in result.stdout or "vit" in result.stdout
  with np.load(out, allow_pickle=False) as data:  # no object arrays anywhere.
    assert all(data[k].dtype != object for k in data.files)
  model, params = vit_jax.load_pretrained(out)
  preprocessing = vit_jax.preprocessing_of(out)
  assert preprocessing.resolution == 56
  np.testing.assert_allclose(preprocessing.mean, (0.485, 0.456, 0.406))
  raw = (np.random.default_rng(0).uniform(0, 255, (2, 56, 56, 3))).astype(np.uint8)
  images = preprocessing(raw)
  expected = (raw / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(images, expected, atol=1e-5)
  features = np.asarray(model.apply({"params": params}, images, train=False,
                                    return_representation=True))
  theirs = reference.forward_head(reference.forward_features(nchw(images.astype(np.float32))),
                                  pre_logits=True).numpy()
  assert_close(features, theirs)


def test_unknown_tensors_are_an_error_not_a_partial_load(tmp_path):
  reference = randomise(timm.create_model("vit_small_patch16_224", pretrained=False, depth=1,
                                          img_size=32))
  state = state_of(reference)
  state["blocks.0.mystery.weight"] = np.zeros(3, np.float32)
  from safetensors.numpy import save_file
  path = str(tmp_path / "odd.safetensors")
  save_file(state, path)
  result = subprocess.run([sys.executable, "-m", "vit_jax.convert", path,
                           str(tmp_path / "out.npz")], capture_output=True, text=True)
  assert result.returncode == 2
  assert result.stderr.strip().count("\n") == 0, result.stderr
  assert "blocks.0.mystery.weight" in result.stderr
  assert not os.path.exists(tmp_path / "out.npz")
  # A rotary Eva file without a name to tell EVA-02 from DINOv3: one line saying so.
  eva = randomise(timm.create_model("vit_small_patch16_dinov3", pretrained=False, depth=1))
  save_file(state_of(eva), str(tmp_path / "eva.safetensors"))
  with pytest.raises(vit_jax.errors.UserError, match=r"needs its model name .* --timm_model"):
    convert.read(str(tmp_path / "eva.safetensors"), timm_model="my_finetune")


def test_finetune_a_timm_dinov3_by_hub_name_offline(tfds_dir, tmp_path, monkeypatch):
  """A timm DINOv3 (rotary embeddings, registers, no absolute embeddings) in the Hub
  cache, named as `--config.pretrained=hf-hub:...` with HF_HUB_OFFLINE=1, fine-tunes
  through the trainer: the run records the rotary arch, keeps the backbone (lr = 0) and
  puts a fresh head on; reading the run back gives the same features as the file."""
  from vit_jax.trainer import loop
  from tests.test_train import tiny
  from tests.test_hub import _cache
  name = "vit_small_patch16_dinov3"
  reference = randomise(timm.create_model(name, pretrained=False, img_size=16, patch_size=4,
                                          embed_dim=32, num_heads=2, depth=1, num_classes=3))
  path = tmp_path / "hub" / "model.safetensors"
  path.parent.mkdir()
  save_timm(reference, str(path))
  (path.parent / "config.json").write_text(json.dumps(
      {"architecture": name, "model_args": {"num_heads": 2}}))  # as push_to_hub writes it.
  (tmp_path / "cache").mkdir()
  _cache(tmp_path / "cache", "someone/tiny-dinov3", path.parent)
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  config = tiny(tfds_dir, pretrained="hf-hub:someone/tiny-dinov3", lr=0.0, total_steps=3,
                optimizer="sgd", weight_decay=0.0)
  state = loop.train_and_evaluate(config, tmp_path / "run")
  params = jax.device_get(state.params)
  np.testing.assert_array_equal(params["registers"], state_of(reference)["reg_token"])
  np.testing.assert_array_equal(params["head"]["kernel"], np.zeros((32, 10)))
  with open(tmp_path / "run" / "config.json") as f:
    assert json.load(f)["model"]["rope"] == "dinov3"
  source, run = convert.read(str(path.parent)), convert.read(str(tmp_path / "run"))
  images = photos(8)
  assert_close(ours(run, images, return_representation=True),
               ours(source, images, return_representation=True))


def test_finetune_from_hugging_face_directory_needs_no_model_flags(tfds_dir, tmp_path, capsys):
  """A transformers DINOv2-with-registers directory as `pretrained` of the tiny digits
  config: the architecture and ImageNet normalisation come from the checkpoint, the
  registers, LayerScales and the 4x4 position-embedding grid are kept (resampled
  bicubically to the 2x2 input grid at run time, as DINOv2 does), and a fresh 10-class
  head is added. lr = 0: the trained params are the checkpoint's exactly."""
  from vit_jax.trainer import loop
  from tests.test_train import tiny
  t = transformers
  reference = randomise(t.Dinov2WithRegistersModel(t.Dinov2WithRegistersConfig(
      image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
      num_attention_heads=2, num_register_tokens=4)))
  directory = save_hf(reference, str(tmp_path / "hf"))
  config = tiny(tfds_dir, pretrained=directory, lr=0.0, total_steps=3, optimizer="sgd",
                weight_decay=0.0)
  state = loop.train_and_evaluate(config, tmp_path / "run")
  log = capsys.readouterr().out
  assert "architecture and input normalisation (normalize(" in log, log
  assert "4x4 position embeddings are resampled to the 2x2 input grid at run time (bicubic)" in log
  params = jax.device_get(state.params)
  s = state_of(reference)
  np.testing.assert_array_equal(params["registers"], s["embeddings.register_tokens"])
  np.testing.assert_array_equal(
      params["Transformer"]["encoderblock_1"]["LayerScale_mlp"]["scale"],
      s["encoder.layer.1.layer_scale2.lambda1"])
  np.testing.assert_array_equal(params["head"]["kernel"], np.zeros((32, 10)))
  np.testing.assert_array_equal(params["Transformer"]["posembed_input"]["pos_embedding"],
                                s["embeddings.position_embeddings"])
  with open(tmp_path / "run" / "config.json") as f:
    stored = json.load(f)
  assert stored["model"]["num_registers"] == 4 and stored["model"]["posemb_grid"] == [4, 4]
  assert "normalize(" in stored["pp_eval"]


@pytest.mark.parametrize("ours_name,timm_name,extra", [
    ("DINOv2-S_14", "vit_small_patch14_dinov2", 0),
    # Our -reg4 keeps the published layout (an embedding for the [class] token); timm's
    # folds it into the token: one width more here.
    ("DINOv2-S_14-reg4", "vit_small_patch14_reg4_dinov2", 384),
    ("DeiT3-S_16", "deit3_small_patch16_224", 0),
    ("SigLIP-B_16", "vit_base_patch16_siglip_224", 0),
    ("ViT-S_16", "vit_small_patch16_224", 0),
])
def test_preset_parameter_counts_match_timm(ours_name, timm_name, extra):
  net = timm.create_model(timm_name, pretrained=False, num_classes=1000)
  assert vit_jax.models.count_parameters(ours_name) == sum(p.numel() for p in net.parameters()) + extra


def test_model_names_are_checked_against_the_file(tmp_path):
  """A patch-14 .npz opened as ViT-S_16: one line naming both, not a Flax shape error."""
  model = create_model("ViT-S_14", num_classes=3, num_layers=1)
  params = model.init(jax.random.key(0), np.zeros((1, 28, 28, 3), np.float32))["params"]
  npz_format.save_npz(params, tmp_path / "s14.npz")
  with pytest.raises(ValueError, match="patch_size=16.*the checkpoint's is 14"):
    convert.read(str(tmp_path / "s14.npz"), model_name="ViT-S_16")
  checkpoint = convert.read(str(tmp_path / "s14.npz"))  # no name: read off the shapes.
  assert checkpoint.arch["patch_size"] == 14 and checkpoint.arch["num_heads"] == 6
  assert checkpoint.preprocessing["resolution"] == 28


@pytest.mark.parametrize("target,suffix", [("timm", ".safetensors"), ("hf", "")])
def test_the_printed_hand_off_line_runs_as_printed(tmp_path, target, suffix):
  """`convert --to=timm|hf` prints a line of Python that builds the model and loads the
  written weights: executed as printed, it gives a model with the JAX model's outputs."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  jax_model = create_model("ViT-test", num_classes=3, head_kernel_init_std=0.02)
  images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  params = nn.unbox(jax_model.init(jax.random.key(0), images)["params"])
  src = str(tmp_path / "model.npz")
  npz_format.save_npz(params, src)
  out = str(tmp_path / f"out{suffix}")
  result = subprocess.run([sys.executable, "-m", "vit_jax.convert", src, out, f"--to={target}",
                           "--model=ViT-test"], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  line = next(l for l in result.stdout.splitlines() if l.startswith(("timm: ", "transformers: ")))
  code = line.split(": ", 1)[1]
  scope = {}
  exec(code, scope)  # pylint: disable=exec-used  (the line a user pastes)
  model = scope["model"]
  assert isinstance(model, torch.nn.Module)
  x = nchw(images)
  theirs = (model(x) if target == "timm" else model(pixel_values=x).logits).detach().numpy()
  assert_close(np.asarray(jax_model.apply({"params": params}, images)), theirs)
