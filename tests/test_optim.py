"""The optimizer seam: adam and sgd as optax's own chains, bit for bit; any optax optimizer
by name, with the config's schedule, weight decay, state dtype and parameter groups."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests import tiny_config
from tests.test_models import random_params
from vit_jax.errors import UserError
from vit_jax.models import create_model
from vit_jax.trainer import optim


def _tree():
  params = random_params(create_model("ViT-test", num_classes=3), 8)
  rng = np.random.default_rng(1)
  grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
  return params, grads


def _updates(tx, params, grads, steps=3):
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(grads, state, params)
  return updates


def _config(**fields):
  config = tiny_config.get_config().unlock()
  config.update({"warmup_steps": 0, "schedule": "constant", "grad_clip_norm": 1.0, **fields})
  return config


def _kernels(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, p: path[-1].key == "kernel" and p.ndim >= 2, params)


def test_adam_and_sgd_are_optax_chains_bit_for_bit():
  params, grads = _tree()
  config = _config(optimizer="adam", weight_decay=0.1, b1=0.8, b2=0.99)
  reference = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(b1=0.8, b2=0.99),
                          optax.add_decayed_weights(0.1, _kernels(params)),
                          optax.scale_by_learning_rate(config.lr))
  ours, _ = optim.make_optimizer(config)
  for a, b in zip(jax.tree.leaves(_updates(ours, params, grads)),
                  jax.tree.leaves(_updates(reference, params, grads))):
    np.testing.assert_array_equal(a, b)
  config = _config(optimizer="sgd", weight_decay=0.0, momentum=0.7)
  reference = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(config.lr, momentum=0.7))
  ours, _ = optim.make_optimizer(config)
  for a, b in zip(jax.tree.leaves(_updates(ours, params, grads)),
                  jax.tree.leaves(_updates(reference, params, grads))):
    np.testing.assert_array_equal(a, b)


def test_named_optax_optimizer_gets_schedule_decay_mask_and_arguments():
  params, grads = _tree()
  config = _config(optimizer="lion(b1=0.95, b2=0.98)", weight_decay=0.05, lr=0.01)
  ours, _ = optim.make_optimizer(config)
  reference = optax.chain(optax.clip_by_global_norm(1.0), optax.lion(
      0.01, b1=0.95, b2=0.98, weight_decay=0.05, mask=_kernels(params)))
  for a, b in zip(jax.tree.leaves(_updates(ours, params, grads)),
                  jax.tree.leaves(_updates(reference, params, grads))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
  # weight_decay=0 turns lion's own default decay off: zero gradients, zero update.
  config = _config(optimizer="lion", weight_decay=0.0)
  ours, _ = optim.make_optimizer(config)
  zeros = jax.tree.map(jnp.zeros_like, params)
  assert not any(np.any(u) for u in jax.tree.leaves(_updates(ours, params, zeros, 1)))


def test_contrib_optimizer_dtype_and_frozen_groups():
  params, grads = _tree()
  config = _config(optimizer="optax.contrib.muon", weight_decay=0.0,
                   optimizer_dtype="bfloat16", frozen="^(?!head/)")
  ours, _ = optim.make_optimizer(config)
  state = ours.init(params)
  dtypes = {x.dtype for x in jax.tree.leaves(state) if getattr(x, "ndim", 0) >= 2}
  assert jnp.dtype(jnp.bfloat16) in dtypes
  updates = _updates(ours, params, grads)
  assert np.any(updates["head"]["kernel"])
  assert not np.any(updates["embedding"]["kernel"])  # frozen: no update.
  # Adafactor's rate is added after its learning rate: the config's decay stays lr-scaled.
  config = _config(optimizer="adafactor(multiply_by_parameter_scale=False)",
                   weight_decay=0.1, grad_clip_norm=0.0)
  ours, _ = optim.make_optimizer(config)
  zeros = jax.tree.map(jnp.zeros_like, params)
  decay = _updates(ours, params, zeros, 1)["embedding"]["kernel"]
  np.testing.assert_allclose(decay, -config.lr * 0.1 * params["embedding"]["kernel"],
                             rtol=1e-5)


@pytest.mark.parametrize("spec, message", [
    ("lino", "did you mean 'lion'"),
    ("contrib.muonn", "'contrib.muon'"),
    ("lion(0.1)", "give arguments by keyword"),
    ("lion(bogus=1)", "takes no ['bogus']"),
    ("lion(weight_decay=0.1)", "--config.weight_decay"),
    ("lion(b1=[x])", "must be literals"),
])
def test_bad_optimizer_is_one_line(spec, message):
  with pytest.raises(UserError, match=None) as error:
    optim.make_optimizer(_config(optimizer=spec, weight_decay=0.0))
  assert message in str(error.value) and "\n" not in str(error.value)


def test_state_dtype_and_decay_an_optimizer_cannot_take():
  with pytest.raises(UserError, match="float32 only"):
    optim.make_optimizer(_config(optimizer="rmsprop", weight_decay=0.0,
                                 optimizer_dtype="bfloat16"))
  with pytest.raises(UserError, match="takes no weight decay"):
    optim.make_optimizer(_config(optimizer="rmsprop", weight_decay=0.1))
