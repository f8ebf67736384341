r"""Baselines for configs/small_data.py on the same pixels: logistic regression
(scikit-learn) and a small CNN (two 3x3 conv layers, max-pool, two dense layers; Adam,
--cnn_epochs epochs, in JAX). Prints a table of test accuracy and wall time.

    python scripts/small_data_baselines.py --dataset=digits
    python scripts/small_data_baselines.py --dataset=pureml_mnist --cnn_epochs=3
    python scripts/small_data_baselines.py --dataset=pureml_mnist --train_size=6000
    python scripts/small_data_baselines.py --dataset=folder:/data/my_images
"""
import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.linear_model import LogisticRegression

from vit_jax.data import offline, sources
from vit_jax.data.presets import canonical_name


class SmallCNN(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(32, (3, 3))(x))
    x = nn.relu(nn.Conv(64, (3, 3))(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes)(x)


def logistic_regression(train, test) -> float:
  (x, y), (xt, yt) = train, test
  model = LogisticRegression(max_iter=2000)
  model.fit(x.reshape(len(x), -1), y)
  return float(model.score(xt.reshape(len(xt), -1), yt))


def small_cnn(train, test, *, epochs: int = 20, batch: int = 128, seed: int = 0) -> float:
  (x, y), (xt, yt) = train, test
  model = SmallCNN(int(y.max()) + 1)
  params = model.init(jax.random.key(seed), x[:1])
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, xb, yb):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(  # noqa: E731
        model.apply(p, xb), yb).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(len(x))
    for i in range(0, len(x) - batch + 1, batch):
      params, opt_state = step(params, opt_state, x[order[i:i + batch]], y[order[i:i + batch]])
  predict = jax.jit(lambda p, xb: jnp.argmax(model.apply(p, xb), -1))
  hits = sum(int((predict(params, xt[i:i + 1000]) == yt[i:i + 1000]).sum())
             for i in range(0, len(xt), 1000))
  return hits / len(xt)


def load(dataset: str):
  """(train, test) pairs of uint8 images (N, H, W[, C]) and labels: the offline sets, or an
  image folder's train/ and test/ as decoded by the training pipeline."""
  if not dataset.startswith("folder:"):
    data = offline.LOADERS[canonical_name(dataset)]()
    return data["train"], data["test"]
  source = sources.get_source(dataset)
  def arrays(split):
    decoded = [source.decode(r) for r in source.records(split)]
    images = np.stack([np.asarray(d["image"]) for d in decoded])
    if (images == images[..., :1]).all():  # grayscale saved as RGB: one channel.
      images = images[..., :1]
    return images, np.asarray([d["label"] for d in decoded])
  return arrays("train"), arrays("test")


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--dataset", default="digits")
  parser.add_argument("--train_size", type=int, default=0, help="first N training images")
  parser.add_argument("--cnn_epochs", type=int, default=20)
  args = parser.parse_args()
  (x, y), (xt, yt) = load(args.dataset)
  if args.train_size:
    x, y = x[:args.train_size], y[:args.train_size]
  scale = lambda a: a.astype(np.float32) / 255.0  # noqa: E731
  train, test = (scale(x), y), (scale(xt), yt)
  print(f"{args.dataset}: {len(x)} train / {len(xt)} test images of {x.shape[1:]}")
  print("| baseline | test accuracy | wall s |\n|---|---|---|")
  cnn = lambda tr, te: small_cnn(tr, te, epochs=args.cnn_epochs)  # noqa: E731
  for name, fn in (("logistic regression", logistic_regression),
                   (f"small CNN ({args.cnn_epochs} epochs)", cnn)):
    start = time.perf_counter()
    accuracy = fn(train, test)
    print(f"| {name} | {accuracy:.4f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
  main()
