"""Known dependency breaks are handled: clu's Std metric works with current jax."""
import jax.numpy as jnp
import numpy as np
import pytest

import vit_jax  # noqa: F401  (applies vit_jax.compat)


def test_clu_std_metric_computes_with_current_jax():
  from clu import metrics
  values = jnp.array([1.0, 2.0, 4.0, 8.0])
  std = metrics.Std.from_model_output(values).compute()
  assert float(std) == pytest.approx(np.std(np.asarray(values)), rel=1e-6)
  constant = metrics.Std.from_model_output(jnp.full((5,), 3.0)).compute()
  assert float(constant) == 0.0  # rounding never makes the variance negative.
