"""Test setup: 8 simulated CPU devices (set before jax is imported), TF kept off accelerators,
and one JAX compilation cache for the session (tests and their subprocesses compile the same
small programs many times; a cache hit is the same executable, so no result changes)."""
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TF must never take an accelerator.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# libtpu (the TPU compiler, for deviceless TPU topologies) takes a lock per machine unless
# told that several processes (pytest -n 2) may load it.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# Set in the first process (xdist's controller) and inherited by its workers: one cache per
# test session, starting empty as on a fresh CI machine.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vit_jax_jit_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

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


class Buckets:
  """The loopback GCS server of this test process: `new()` makes an empty bucket."""

  def __init__(self, url: str):
    self.url, self._count = url, 0

  def new(self, prefix: str = "vitjax") -> str:
    from tests import gcs_server  # pylint: disable=import-outside-toplevel
    self._count += 1
    name = f"{prefix}-{os.getpid()}-{self._count}"
    gcs_server.create_bucket(self.url, name)
    return name


@pytest.fixture(scope="session")
def gcs():
  """A real GCS-protocol server on loopback for the whole session; this process's gs://
  clients point at it (and `helpers.cli_env` passes the same to subprocesses)."""
  from tests import gcs_server  # pylint: disable=import-outside-toplevel
  with gcs_server.running() as url:
    os.environ.update(gcs_server.environment(url))
    yield Buckets(url)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups.
def pytest_collection_modifyitems(items):
  """Tests that use the quickstart run share one xdist worker (`--dist loadgroup` in
  pytest.ini), so the run is trained once per test session, not once per worker."""
  for item in items:
    if "quickstart_run" in getattr(item, "fixturenames", ()):
      item.add_marker(pytest.mark.xdist_group("quickstart"))
