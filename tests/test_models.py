"""Model family: published parameter counts, a numpy reference forward pass, dtypes, errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from vit_jax.bench import minimal_vit
from vit_jax.objectives import classification
from vit_jax.models import create_model

PUBLISHED_COUNTS = {  # 1000-class head, 224 px, as published.
    "ViT-Ti_16": 5_717_416,
    "ViT-S_16": 22_050_664,
    "ViT-B_16": 86_567_656,
    "ViT-B_32": 88_224_232,
    "ViT-L_16": 304_326_632,
    "ViT-H_14": 632_045_800,
    "R50+ViT-B_16": 98_659_112,
}


def abstract_params(model, resolution):
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, resolution, resolution, 3))))
  return nn.unbox(variables["params"])


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name,expected", sorted(PUBLISHED_COUNTS.items()))
def test_published_parameter_counts(name, expected):
  assert count(abstract_params(create_model(name, num_classes=1000), 224)) == expected


def test_b16_block_and_ti16_ten_class_counts():
  b16 = abstract_params(create_model("ViT-B_16", num_classes=1000), 224)
  assert count(b16["Transformer"]["encoderblock_0"]) == 7_087_872
  assert count(abstract_params(create_model("ViT-Ti_16", num_classes=10), 224)) == 5_526_346


@pytest.mark.parametrize("name", ["ViT-S_32", "ViT-B_8", "ViT-L_32", "ViT-g_14", "ViT-G_14"])
def test_other_variants_have_analytic_counts(name):
  model = create_model(name, num_classes=1000)
  d, layers, mlp, p = model.hidden_size, model.num_layers, model.mlp_dim, model.patch_size
  tokens = (224 // p) ** 2 + 1
  block = 4 * d * d + 4 * d + 2 * d * mlp + mlp + d + 4 * d
  expected = (p * p * 3 * d + d) + d + tokens * d + layers * block + 2 * d + d * 1000 + 1000
  assert count(abstract_params(model, 224)) == expected


def random_params(model, resolution, seed=0):
  """Initialised params with every leaf replaced by random values (zero heads hide bugs)."""
  # Only the shapes are used: eval_shape, no initialisation run op by op.
  params = nn.unbox(jax.eval_shape(model.init, jax.random.key(seed),
                                   jnp.zeros((1, resolution, resolution, 3)))["params"])
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: (rng.standard_normal(x.shape) * 0.3).astype(np.float32), params)


@pytest.mark.parametrize("classifier,representation_size",
                         [("token", None), ("gap", None), ("token", 24), ("gap", 24)])
def test_matches_numpy_reference(classifier, representation_size):
  model = create_model("ViT-test", num_classes=7, classifier=classifier,
                       representation_size=representation_size)
  params = random_params(model, 16)
  images = np.random.default_rng(1).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
  logits = np.asarray(model.apply({"params": params}, images))
  reference = minimal_vit.numpy_reference(params, images, patch_size=4, classifier=classifier)
  assert logits.shape == (3, 7)
  rel = np.linalg.norm(logits - reference) / np.linalg.norm(reference)
  assert rel < 1e-5, rel


def test_non_square_images_match_reference():
  model = create_model("ViT-test", num_classes=5)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 16, 3)))
  rng = np.random.default_rng(2)
  params = jax.tree.map(lambda x: (rng.standard_normal(x.shape) * 0.3).astype(np.float32),
                        nn.unbox(variables["params"]))
  images = rng.uniform(-1, 1, (2, 8, 16, 3)).astype(np.float32)
  logits = np.asarray(model.apply({"params": params}, images))
  reference = minimal_vit.numpy_reference(params, images, patch_size=4)
  assert np.linalg.norm(logits - reference) / np.linalg.norm(reference) < 1e-5


def test_bfloat16_compute_close_to_float32():
  """Measured relative error of bf16 logits vs float32: 6.9e-3 here (8.5e-3 for ViT-Ti/16
  at 64 px, same random-weight setup); bound 3e-2."""
  f32 = create_model("ViT-test", num_classes=10)
  bf16 = create_model("ViT-test", num_classes=10, dtype="bfloat16")
  params = random_params(f32, 16)
  images = np.random.default_rng(3).uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32)
  ref = np.asarray(f32.apply({"params": params}, images))
  out = bf16.apply({"params": params}, images)
  assert out.dtype == jnp.float32  # logits come back in float32 for a stable loss.
  rel = np.linalg.norm(np.asarray(out) - ref) / np.linalg.norm(ref)
  assert 0 < rel < 3e-2, rel
  # Parameters stay float32 even with bf16 compute.
  bf16_params = nn.unbox(bf16.init(jax.random.key(0), images)["params"])
  assert {x.dtype for x in jax.tree.leaves(bf16_params)} == {jnp.dtype(jnp.float32)}


def test_dropout_only_in_training():
  model = create_model("ViT-test", num_classes=3, dropout_rate=0.5, attention_dropout_rate=0.5)
  params = random_params(model, 16)
  images = np.ones((2, 16, 16, 3), np.float32)
  eval_a = model.apply({"params": params}, images)
  eval_b = model.apply({"params": params}, images)
  np.testing.assert_array_equal(eval_a, eval_b)
  train = model.apply({"params": params}, images, train=True,
                      rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(train, eval_a)


def test_head_initialisation_options():
  model = create_model("ViT-test", num_classes=4, head_bias_init=-10.0)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"])
  np.testing.assert_array_equal(params["head"]["kernel"], 0)
  np.testing.assert_array_equal(params["head"]["bias"], -10)


def test_hybrid_matches_reference_after_the_stem():
  """The hybrid's stem reduces 32 px to a 2x2 map (16x), then 1x1 patches."""
  model = create_model("R50+ViT-B_16", num_classes=3, hidden_size=32, num_heads=2,
                       mlp_dim=64, num_layers=1, resnet_layers=(1, 1, 1))
  out = model.apply(model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))),
                    jnp.zeros((2, 32, 32, 3)), return_representation=True)
  assert out.shape == (2, 32)
  params = abstract_params(model, 32)
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 1 + 4, 32)
  assert params["block1"]["unit1"]["conv_proj"]["kernel"].shape == (1, 1, 64, 256)


def test_unknown_name_lists_valid_ones():
  with pytest.raises(ValueError, match=r"Model 'ViT-X_16' is not a preset .*ViT-B_16"):
    create_model("ViT-X_16", num_classes=10)


def test_unknown_override_is_named():
  with pytest.raises(ValueError, match="hiden_size"):
    create_model("ViT-B_16", num_classes=10, hiden_size=3)


def test_image_size_not_divisible_by_patch():
  model = create_model("ViT-B_16", num_classes=10)
  with pytest.raises(ValueError, match=r"Image size 100x100.*patch_size=16"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 100, 100, 3))))


def test_short_names_resolve():
  assert create_model("b16", num_classes=2).hidden_size == 768
  assert create_model("ti16", num_classes=2).num_heads == 3


def test_scanned_layers_match_the_per_layer_model():
  from vit_jax.models import vit_layout
  plain = create_model("ViT-test", num_classes=5, num_layers=3)
  scanned = create_model("ViT-test", num_classes=5, num_layers=3, scan_layers=True,
                         remat_policy="full")
  params = random_params(plain, 16)
  stacked = vit_layout.scan_params(params)
  assert stacked["Transformer"]["encoderblock"]["MlpBlock_3"]["Dense_0"]["kernel"].shape == \
      (3, 32, 64)
  assert jax.tree.structure(stacked) == jax.tree.structure(abstract_params(scanned, 16))
  assert count(abstract_params(scanned, 16)) == count(params)
  images = np.random.default_rng(4).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  np.testing.assert_allclose(scanned.apply({"params": stacked}, images),
                             plain.apply({"params": params}, images), rtol=1e-5, atol=1e-6)
  back = vit_layout.unscan_params(stacked)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  # Scanned params carry the 'layers' logical axis in front.
  boxed = scanned.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
  spec = boxed["Transformer"]["encoderblock"]["MlpBlock_3"]["Dense_0"]["kernel"].names
  assert spec == ("layers", "embed", "mlp")


def test_npz_and_finetuning_work_across_layer_layouts(tmp_path):
  from vit_jax.convert import npz_format
  from vit_jax.models import vit_layout
  plain = create_model("ViT-test", num_classes=5)
  scanned = create_model("ViT-test", num_classes=5, scan_layers=True)
  params = random_params(plain, 16)
  npz_format.save_npz(vit_layout.scan_params(params), tmp_path / "from_scanned.npz")
  assert "Transformer/encoderblock_1/LayerNorm_0/scale" in np.load(
      tmp_path / "from_scanned.npz").files  # written in the published per-layer layout.
  adapted = vit_layout.adapt_pretrained(npz_format.load_npz(tmp_path / "from_scanned.npz"),
                                        abstract_params(scanned, 16), model=scanned,
                                        image_shape=(16, 16, 3), reset_head=False, notes=[])
  images = np.ones((1, 16, 16, 3), np.float32)
  np.testing.assert_allclose(scanned.apply({"params": adapted}, images),
                             plain.apply({"params": params}, images), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("length", [197, 50, 64])
def test_padded_fused_attention_is_exact(length):
  """The cuDNN path pads the tokens (197 -> 200) and masks the padded keys: the result must
  equal unpadded attention. Checked with the XLA implementation, which runs on CPU."""
  from vit_jax.models import attention
  q, k, v = (jax.random.normal(jax.random.key(i), (2, length, 3, 16)) for i in range(3))
  reference = jax.nn.dot_product_attention(q, k, v, implementation="xla")
  padded = attention.fused_attention(q, k, v, implementation="xla",
                                     pad_to=attention.CUDNN_SEQUENCE_MULTIPLE)
  assert padded.shape == reference.shape
  np.testing.assert_allclose(padded, reference, atol=1e-6)
  wide = attention.fused_attention(q, k, v, implementation="xla", pad_to=128)
  np.testing.assert_allclose(wide, reference, atol=1e-6)


def test_xla_attention_model_matches_einsum_model():
  """attention_implementation='xla' (the fused API the cuDNN path uses) gives the einsum
  model's logits with the same parameters."""
  einsum = create_model("ViT-test", num_classes=5)
  fused = create_model("ViT-test", num_classes=5, attention_implementation="xla",
                       head_kernel_init_std=0.02)
  images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
  params = nn.unbox(fused.init(jax.random.key(1), images)["params"])
  np.testing.assert_allclose(einsum.apply({"params": params}, images),
                             fused.apply({"params": params}, images), rtol=1e-5, atol=1e-5)


def test_sincos2d_table_matches_its_definition():
  """big_vision's fixed embeddings, written out element by element."""
  from vit_jax.models.posemb import sincos_2d
  h, w, dim = 3, 5, 8
  table = sincos_2d(h, w, dim)
  quarter = dim // 4
  for row in range(h):
    for col in range(w):
      for k in range(quarter):
        omega = 1.0 / 10_000 ** (k / (quarter - 1))
        expected = [np.sin(col * omega), np.cos(col * omega), np.sin(row * omega),
                    np.cos(row * omega)]
        got = table[row * w + col, [k, quarter + k, 2 * quarter + k, 3 * quarter + k]]
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("option,present,absent", [
    (dict(layerscale_init=0.1), "Transformer/encoderblock_0/LayerScale_mlp/scale", None),
    (dict(qk_norm=True), "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/key_norm/scale", None),
    (dict(num_registers=3), "registers", None),
    (dict(posemb="sincos2d"), None, "Transformer/posembed_input/pos_embedding"),
    (dict(posemb="none"), None, "Transformer/posembed_input/pos_embedding"),
    (dict(classifier="map"), "MAPHead_0/probe", "cls"),
    (dict(classifier="gap", fc_norm=True), "fc_norm/scale", "Transformer/encoder_norm/scale"),
    (dict(distillation_token=True), "head_dist/kernel", None),
])
def test_each_option_reaches_the_parameters(option, present, absent):
  from vit_jax.models import params as params_lib
  flat = params_lib.flatten(abstract_params(create_model("ViT-test", num_classes=3, **option), 8))
  baseline = params_lib.flatten(abstract_params(create_model("ViT-test", num_classes=3), 8))
  assert present is None or present in flat
  assert absent is None or absent not in flat
  assert sorted(flat) != sorted(baseline)


def test_swiglu_packs_gate_and_value():
  model = create_model("ViT-test", num_classes=3, mlp_activation="swiglu")
  params = abstract_params(model, 8)
  assert params["Transformer"]["encoderblock_0"]["MlpBlock_3"]["Dense_0"]["kernel"].shape == (32, 128)
  assert params["Transformer"]["encoderblock_0"]["MlpBlock_3"]["Dense_1"]["kernel"].shape == (64, 32)


def test_fixed_posemb_grid_serves_any_input_size():
  """A learned 4x4 grid (posemb_grid) resampled to 2x2 and 3x3 inputs; the parameter keeps
  its shape, and at the native size no resampling happens."""
  model = create_model("ViT-test", num_classes=3, posemb_grid=(4, 4), posemb_resample="bicubic")
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
  assert nn.unbox(params)["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 17, 32)
  for size in (8, 12, 16):
    assert model.apply({"params": params}, jnp.ones((2, size, size, 3))).shape == (2, 3)


def test_mixer_published_layout_and_npz_round_trip(tmp_path):
  from vit_jax import convert
  from vit_jax.convert import npz_format
  model = create_model("Mixer-S_32", num_classes=4, num_layers=2)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"])
  assert set(params) == {"stem", "MixerBlock_0", "MixerBlock_1", "pre_head_layer_norm", "head"}
  assert set(params["MixerBlock_0"]) == {"LayerNorm_0", "token_mixing", "LayerNorm_1",
                                         "channel_mixing"}
  npz_format.save_npz(params, tmp_path / "mixer.npz")
  checkpoint = convert.read(str(tmp_path / "mixer.npz"))  # architecture from the shapes.
  assert checkpoint.arch == dict(family="mixer", patch_size=32, hidden_size=512, num_layers=2,
                                 tokens_mlp_dim=256, channels_mlp_dim=2048)


def test_stochastic_depth_drops_whole_branches_in_training_only():
  model = create_model("ViT-test", num_classes=3, stochastic_depth_rate=0.5,
                       head_kernel_init_std=0.1)
  plain = create_model("ViT-test", num_classes=3, head_kernel_init_std=0.1)
  x = jax.random.normal(jax.random.key(1), (16, 8, 8, 3))
  params = model.init(jax.random.key(0), x)["params"]
  np.testing.assert_array_equal(model.apply({"params": params}, x),
                                plain.apply({"params": params}, x))  # eval: no effect.
  a, b = (model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(s)})
          for s in (1, 2))
  assert not np.allclose(a, b)
  # The first block's rate is 0 (linear from 0 to the rate at the last block): with a
  # one-block model nothing is ever dropped.
  one = create_model("ViT-test", num_classes=3, num_layers=1, stochastic_depth_rate=0.9,
                     head_kernel_init_std=0.1)
  p1 = one.init(jax.random.key(0), x)["params"]
  np.testing.assert_array_equal(one.apply({"params": p1}, x, train=True,
                                          rngs={"dropout": jax.random.key(3)}),
                                one.apply({"params": p1}, x))
  with pytest.raises(ValueError, match=r"stochastic_depth_rate=1.0 must be in \[0, 1\)"):
    create_model("ViT-test", num_classes=3, stochastic_depth_rate=1.0)


def test_cutmix_pastes_a_box_and_mixes_targets_by_its_area():
  images = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
  targets = jax.nn.one_hot(jnp.arange(4), 4)
  for seed in range(5):
    mixed, mixed_targets = classification.cutmix(jax.random.key(seed), images, targets, 1.0)
    from_neighbour = np.all(np.asarray(mixed) == np.roll(np.asarray(images), 1, axis=0), axis=-1)
    own = np.all(np.asarray(mixed) == np.asarray(images), axis=-1)
    assert (from_neighbour | own).all()
    pasted = from_neighbour[0].mean()
    assert (from_neighbour == from_neighbour[0]).all()  # one box for the batch.
    rows, cols = np.nonzero(from_neighbour[0])
    if len(rows):  # a rectangle
      assert len(rows) == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
    np.testing.assert_allclose(np.asarray(mixed_targets),
                               (1 - pasted) * targets + pasted * np.roll(targets, 1, axis=0),
                               atol=1e-6)


def test_patch_embedding_is_the_strided_convolution_with_its_init():
  """Patchify + matmul gives the PxP stride-P convolution's output, and its parameters
  are created as nn.Conv creates them (checkpoints and seeds unchanged)."""
  from vit_jax.models.patch_embed import PatchEmbedding
  images = jax.random.normal(jax.random.key(0), (2, 12, 8, 3))
  conv = nn.Conv(5, (4, 4), strides=(4, 4), padding="VALID")
  conv_params = conv.init(jax.random.key(1), images)["params"]
  ours = PatchEmbedding(5, 4)
  params = ours.init(jax.random.key(1), images)["params"]
  np.testing.assert_array_equal(params["kernel"], conv_params["kernel"])
  np.testing.assert_allclose(ours.apply({"params": params}, images),
                             conv.apply({"params": conv_params}, images), atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 97, 128), (64, 97, 31)])
def test_dropout_keeps_the_rate_and_the_expectation(shape):
  """Two decisions per 32-bit word (even last axis) or one (odd): the kept fraction is
  1 - rate and kept values are scaled so that the mean is unchanged."""
  from vit_jax.models.dropout import Dropout
  x = jnp.ones(shape)
  out = Dropout(0.1).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(3)})
  kept = np.asarray(out != 0)
  assert abs(kept.mean() - 0.9) < 0.005, kept.mean()
  assert float(out.mean()) == pytest.approx(1.0, abs=0.01)
  # Both halves of each word are used independently: their agreement is chance's.
  half = shape[-1] // 2
  if shape[-1] % 2 == 0:
    agree = (kept[..., :half] == kept[..., half:]).mean()
    assert abs(agree - (0.9**2 + 0.1**2)) < 0.01, agree
  assert (Dropout(0.1).apply({}, x, deterministic=True) == x).all()


def test_auto_attention_resolves_per_platform():
  from vit_jax.models import attention
  resolve = lambda platform, dtype, tokens=577, **kw: attention.resolve(  # noqa: E731
      "auto", platform=platform, dtype=dtype, num_tokens=tokens, **kw)
  assert resolve("tpu", "float32") == "pallas"
  assert resolve("tpu", "bfloat16", tokens=197) == "einsum"  # the kernel does not pay.
  assert resolve("gpu", "bfloat16", tokens=197) == "cudnn"
  assert resolve("gpu", "float32") == "einsum"
  assert resolve("cpu", "bfloat16") == "einsum"
  assert resolve("tpu", "bfloat16", attention_dropout=True) == "einsum"
  assert attention.resolve("xla", platform="tpu", dtype="float32", num_tokens=9) == "xla"


def test_pallas_tpu_attention_matches_einsum_in_interpret_mode():
  """The Pallas TPU flash attention kernel (run by Pallas's TPU interpreter on the CPU):
  17 tokens padded to a 128-token block with the padded keys masked, logits and
  gradients equal to einsum attention's. (Sharded, the kernel runs per shard inside
  shard_map: compiled for a TPU topology in test_tpu_compile.) In a process of its own:
  the interpreter's callbacks stalled once inside a test worker that had run other JAX
  programs."""
  script = """
import flax.linen as nn, jax, numpy as np
from jax.experimental.pallas import tpu as pltpu
from vit_jax.models import create_model
einsum = create_model("ViT-test", num_classes=5, head_kernel_init_std=0.02,
                      attention_implementation="einsum")
pallas = einsum.clone(attention_implementation="pallas")
images = jax.random.uniform(jax.random.key(0), (8, 16, 16, 3), minval=-1, maxval=1)
params = nn.unbox(einsum.init(jax.random.key(1), images)["params"])
loss = lambda model: lambda p: (model.apply({"params": p}, images) ** 2).sum()
reference = np.asarray(einsum.apply({"params": params}, images))
reference_grads = jax.tree.map(np.asarray, jax.grad(loss(einsum))(params))
with pltpu.force_tpu_interpret_mode():
  logits = np.asarray(jax.jit(pallas.apply)({"params": params}, images))
  grads = jax.tree.map(np.asarray, jax.jit(jax.grad(loss(pallas)))(params))
np.testing.assert_allclose(logits, reference, atol=1e-5)
jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grads, reference_grads)
print("exact", float(np.abs(logits - reference).max()))
"""
  result = helpers.run_subprocess(["-c", script], timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "exact" in result.stdout
