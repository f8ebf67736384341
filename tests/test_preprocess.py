"""Every built-in pp op against plain numpy, PIL or the TensorFlow op it replaces, the
key/outkey convention, seeds, and errors that name the bad op."""
import numpy as np
import pytest
from PIL import Image

from vit_jax.pp import builder, ops_image
from vit_jax.errors import UserError

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)


def apply(pipeline, image=IMAGE, seed=(1, 2), **fields):
  example = {"image": image, "label": np.int64(3), "seed": seed, **fields}
  return {k: np.asarray(v) for k, v in builder.build(pipeline)(example).items()}


def test_value_range_is_the_affine_map():
  out = apply("value_range(-1, 1)")["image"]
  np.testing.assert_allclose(out, IMAGE / 255.0 * 2 - 1, atol=1e-6)
  assert out.dtype == np.float32


def test_to_rgb_tiles_gray_and_drops_alpha():
  gray = IMAGE[..., :1]
  np.testing.assert_array_equal(apply("to_rgb", gray)["image"], np.tile(gray, (1, 1, 3)))
  rgba = np.concatenate([IMAGE, IMAGE[..., :1]], -1)
  np.testing.assert_array_equal(apply("to_rgb", rgba)["image"], IMAGE)


def test_central_crop_is_the_middle_window():
  np.testing.assert_array_equal(apply("central_crop(6)")["image"], IMAGE[3:9, 2:8])
  np.testing.assert_array_equal(apply("central_crop((4, 2))")["image"], IMAGE[4:8, 4:6])


def test_resize_matches_pil_on_upsampling_within_one_level():
  out = apply("resize((24, 20))")["image"]
  reference = np.asarray(Image.fromarray(IMAGE).resize((20, 24), Image.BILINEAR), np.int32)
  assert out.shape == (24, 20, 3) and out.dtype == np.uint8
  assert np.abs(out.astype(np.int32) - reference).max() <= 1


def test_resize_matches_tensorflows_antialiased_resize_within_one_level():
  """The op the tf.data pipeline used: tf.image.resize(bilinear, antialias=True)."""
  tf = pytest.importorskip("tensorflow")
  big = RNG.integers(0, 256, (57, 43, 3), dtype=np.uint8)
  for size in ((16, 16), (24, 20), (80, 64)):  # shrinking (antialiased) and enlarging.
    ours = apply(f"resize({size})", big)["image"].astype(np.int32)
    theirs = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
        big, size, method="bilinear", antialias=True)), 0, 255), tf.uint8).numpy()
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1, size


def test_normalize_is_per_channel_mean_std():
  out = apply("normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.5))")["image"]
  expected = (IMAGE / 255.0 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])
  np.testing.assert_allclose(out, expected, atol=1e-5)
  assert out.dtype == np.float32


def test_flip_lr_is_flip_or_identity_and_follows_the_seed():
  outcomes = {seed: apply("flip_lr", seed=(seed, 0))["image"] for seed in range(16)}
  flipped = [s for s, out in outcomes.items() if np.array_equal(out, IMAGE[:, ::-1])]
  kept = [s for s, out in outcomes.items() if np.array_equal(out, IMAGE)]
  assert len(flipped) + len(kept) == 16 and flipped and kept
  for seed in range(16):  # stateless: the same seed, the same answer.
    np.testing.assert_array_equal(apply("flip_lr", seed=(seed, 0))["image"], outcomes[seed])


def test_random_crop_is_a_window_of_the_image():
  out = apply("random_crop(5)", seed=(7, 7))["image"]
  windows = [(i, j) for i in range(12 - 4) for j in range(10 - 4)
             if np.array_equal(IMAGE[i:i + 5, j:j + 5], out)]
  assert len(windows) == 1


def test_inception_crop_size_range_and_determinism():
  big = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  first = apply("inception_crop(16)", big, seed=(5, 1))["image"]
  assert first.shape == (16, 16, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(first, apply("inception_crop(16)", big, seed=(5, 1))["image"])
  assert not np.array_equal(first, apply("inception_crop(16)", big, seed=(6, 1))["image"])
  # The whole image (area 100%) is a plain resize.
  whole = apply("inception_crop(16, area_min=100, area_max=100)", big)["image"]
  np.testing.assert_array_equal(whole, apply("resize(16)", big)["image"])


def test_inception_crop_windows_follow_the_area_and_aspect_ranges():
  rng = np.random.default_rng(0)
  windows = [ops_image.sample_crop_window(200, 300, rng, area_range=(0.3, 0.6))
             for _ in range(2000)]
  fractions = np.array([h * w / (200 * 300) for _, _, h, w in windows])
  aspects = np.array([w / h for _, _, h, w in windows])
  assert 0.29 < fractions.min() and fractions.max() < 0.61
  assert abs(fractions.mean() - 0.45) < 0.01  # uniform in the area range.
  assert 0.74 < aspects.min() and aspects.max() < 1.34
  assert all(0 <= t and t + h <= 200 and 0 <= l and l + w <= 300 for t, l, h, w in windows)


def test_multi_hot_reads_the_label_field():
  out = apply("multi_hot(5)", label=np.array([0, 3, 3]))
  np.testing.assert_array_equal(out["label"], [1, 0, 0, 1, 0])
  np.testing.assert_array_equal(out["image"], IMAGE)


def test_key_and_outkey_choose_the_fields():
  out = apply("central_crop(4, outkey='centre')|value_range(0, 1, key='centre')")
  np.testing.assert_array_equal(out["image"], IMAGE)           # untouched.
  np.testing.assert_allclose(out["centre"], IMAGE[4:8, 3:7] / 255.0, atol=1e-6)
  with pytest.raises(UserError, match="reads field 'mask'"):
    apply("resize(4, key='mask')")


def test_bad_specs_name_the_op():
  with pytest.raises(UserError, match="Unknown preprocessing op 'inception_cop'.*pp_modules"):
    builder.build("inception_cop(224)|flip_lr")
  with pytest.raises(UserError, match="Cannot parse"):
    builder.build("resize(224")
  with pytest.raises(UserError, match="'resize\\(1, 2, 3\\)'"):
    builder.build("resize(1, 2, 3)")


def _photo(size=(48, 64)):
  from PIL import Image
  from sklearn.datasets import load_sample_images
  return np.asarray(Image.fromarray(load_sample_images().images[1]).resize(size[::-1]))


def test_randaugment_ops_against_numpy():
  from vit_jax.pp import randaugment as ra
  image = _photo()
  rng = np.random.default_rng(0)
  np.testing.assert_array_equal(ra.OPS["invert"](image, 10, rng), 255 - image)
  np.testing.assert_array_equal(ra.OPS["posterize"](image, 10, rng), image & 0xF0)
  np.testing.assert_array_equal(ra.OPS["solarize"](image, 5, rng),
                                np.where(image >= 128, 255 - image, image))
  np.testing.assert_array_equal(ra.OPS["solarize_add"](image, 10, rng),
                                np.where(image < 128, np.minimum(image.astype(int) + 110, 255),
                                         image))
  moved = ra.translate(image, 3, -5)
  np.testing.assert_array_equal(moved[3:, :-5], image[:-3, 5:])
  assert (moved[:3] == ra.GRAY).all() and (moved[:, -5:] == ra.GRAY).all()
  # Brightness blends with black: round(x * factor), factor 1 +- 0.9 at magnitude 10.
  bright = ra.OPS["brightness"](image, 10, np.random.default_rng(1)).astype(float)
  factor = 1.9 if np.random.default_rng(1).integers(2) else 0.1
  assert np.abs(bright - np.clip(image * factor, 0, 255)).max() <= 1
  cut = ra.OPS["cutout"](image, 10, np.random.default_rng(2))
  changed = np.argwhere((cut != image).any(-1))
  side = np.ptp(changed, axis=0).max() + 1
  assert 0 < side <= round(0.2 * min(image.shape[:2]))


def test_randaugment_magnitude_zero_moves_nothing_and_op_is_seeded():
  from vit_jax.pp import randaugment as ra
  image = _photo()
  for name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "posterize",
               "solarize", "solarize_add", "color", "contrast", "brightness", "sharpness",
               "cutout"):
    np.testing.assert_array_equal(ra.OPS[name](image, 0, np.random.default_rng(0)), image,
                                  err_msg=name)
  op = builder.build("randaug(2, 9)")
  outputs = [op({"image": image, "label": 0, "seed": (seed, 0)})["image"] for seed in (0, 0, 1, 2)]
  np.testing.assert_array_equal(outputs[0], outputs[1])
  assert any(not np.array_equal(outputs[0], o) for o in outputs[2:])
  assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outputs)
  gray = op({"image": image[..., :1], "label": 0, "seed": (3, 0)})["image"]
  assert gray.shape == image[..., :1].shape
  with pytest.raises(ValueError, match="unknown op"):
    builder.build("randaug(2, 9, exclude=('nope',))")


@pytest.mark.parametrize("pipeline,host,affine_of", [
    ("to_rgb|inception_crop(8)|flip_lr|value_range(-1, 1)", "to_rgb|inception_crop(8)|flip_lr",
     "value_range(-1, 1)"),
    ("resize(8)|normalize()|multi_hot(10)", "resize(8)|multi_hot(10)", "normalize()"),
    ("value_range(0, 1, key='image')", "", "value_range(0, 1)"),
    ("value_range(-1, 1)|flip_lr", None, None),                  # an image op after it.
    ("value_range(-1, 1, outkey='small')", None, None),         # writes another field.
    ("resize(8)", None, None),
])
def test_split_device_affine_takes_only_the_images_last_affine_op(pipeline, host, affine_of):
  """The split-off map is the op itself: host part then affine == the whole pipeline."""
  rest, affine = builder.split_device_affine(pipeline)
  if affine_of is None:
    assert (rest, affine) == (pipeline, None)
    return
  assert rest == host
  image = apply(affine_of)["image"]
  np.testing.assert_array_equal(np.asarray(affine(IMAGE)), image)  # numpy, as the op.
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  on_device = np.asarray(affine(jnp.asarray(IMAGE)))  # jax, as the train step runs it.
  assert on_device.dtype == np.float32
  np.testing.assert_allclose(on_device, image, rtol=1e-6, atol=1e-6)


def test_rescale_keeps_ratios():
  assert builder.rescale("to_rgb|resize(256)|central_crop(224)|value_range(-1, 1)", 112) == (
      "to_rgb|resize(128)|central_crop(112)|value_range(-1, 1)")
  assert builder.rescale("resize(24)|inception_crop(24, area_min=70)|flip_lr", 32) == (
      "resize(32)|inception_crop(32, area_min=70)|flip_lr")
  assert builder.rescale("resize((16, 24))|random_crop(size=(8, 12))", 16) == (
      "resize((32, 48))|random_crop(size=(16, 24))")
  assert builder.rescale("to_rgb|value_range(-1, 1)", 32) == "to_rgb|value_range(-1, 1)"
  assert builder.output_size("resize(256)|central_crop(224)|resize(64, outkey='small')") == \
      (224, 224)  # a size written to another field is not the image's.


def test_sizes_and_value_maps_are_what_each_op_declares():
  """A new resize-like op declares its size argument: resolution rescaling, the output
  size and the device split all know it from the registry, not from its name."""
  from vit_jax.pp import registry  # pylint: disable=g-import-not-at-top

  @registry.register("pad_to_square_and_resize", sizes=("side",))
  def pad_and_resize(side, fill=0):
    del fill
    return lambda image, rng: image[:side, :side]

  pp = "to_rgb|pad_to_square_and_resize(40, fill=3)|value_range(-1, 1)"
  assert builder.output_size(pp) == (40, 40)
  assert builder.rescale(pp, 20) == "to_rgb|pad_to_square_and_resize(20, fill=3)|value_range(-1, 1)"
  rest, affine = builder.split_device_affine(pp)
  assert rest == "to_rgb|pad_to_square_and_resize(40, fill=3)" and affine is not None
  assert builder.with_final_affine(pp, "normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))") == \
      "to_rgb|pad_to_square_and_resize(40, fill=3)|normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))"
  # An op after the value map that touches the image keeps the pipeline whole.
  assert builder.split_device_affine("value_range(-1, 1)|flip_lr")[1] is None


def test_a_duplicate_op_name_is_an_error():
  from vit_jax.pp import registry  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="'resize' is registered twice"):
    registry.register("resize")(lambda size: None)
