"""Test setup: 8 simulated CPU devices (set before jax is imported), TF kept off accelerators."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TF must never take an accelerator.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  """One TFDS data dir per test session: the offline datasets are prepared once."""
  return str(tmp_path_factory.mktemp("tensorflow_datasets"))


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory):
  """A real image folder: the digits written as PNGs, DIR/{train,test}/<class>/*.png."""
  from PIL import Image
  from sklearn.datasets import load_digits
  root = tmp_path_factory.mktemp("digits_folder")
  digits = load_digits()
  for i, (image, label) in enumerate(zip(digits.images[:300], digits.target[:300])):
    split = "test" if i % 5 == 0 else "train"
    folder = root / split / f"digit_{label}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image * 255 / 16).astype("uint8")).convert("RGB").resize((16, 16)).save(
        folder / f"{i:04d}.png")
  return root


@pytest.fixture(scope="session")
def quickstart_run(tfds_dir, tmp_path_factory):
  """The README's quickstart command (with its few-shot evaluation and figures), shortened
  to 250 steps: one trained model shared by the trainer and inference tests."""
  from tests import helpers
  workdir = tmp_path_factory.mktemp("quickstart")
  result = helpers.run_cli_timed(workdir, f"--config.data_dir={tfds_dir}",
                                 "--config.total_steps=250",
                                 config=os.path.join(helpers.REPO, "configs", "quickstart.py"))
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result
