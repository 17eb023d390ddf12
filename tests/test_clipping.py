"""Paddle's clipping strategies as Optax transforms, checked by hand and in NumPy."""

import jax.numpy as jnp
import numpy as np
import pytest

import optax_ldl


def _apply(tx, grads):
  return tx.update(grads, tx.init(grads))[0]


def test_global_norm_scales_all_leaves_together():
  grads = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}  # global norm 5
  out = _apply(optax_ldl.clip_grad_by_global_norm(2.5), grads)
  np.testing.assert_allclose(out["a"], [1.5, 0.0])
  np.testing.assert_allclose(out["b"], [[2.0]])
  same = _apply(optax_ldl.clip_grad_by_global_norm(5.0), grads)  # at the threshold: x1
  np.testing.assert_array_equal(same["a"], grads["a"])


def test_norm_scales_each_leaf_by_its_own_norm():
  rng = np.random.default_rng(0)
  grads = {"a": jnp.asarray(rng.normal(size=(3, 4)) * 5, jnp.float32),
           "b": jnp.asarray(rng.normal(size=(2,)) * 0.01, jnp.float32)}
  out = _apply(optax_ldl.clip_grad_by_norm(1.0), grads)
  a = np.asarray(grads["a"], np.float64)
  np.testing.assert_allclose(out["a"], a / np.linalg.norm(a), rtol=1e-6)
  np.testing.assert_array_equal(out["b"], grads["b"])  # below the threshold: unchanged.


def test_value_clips_elementwise_with_paddle_defaults():
  g = jnp.array([-2.0, -0.05, 0.5, 2.0])
  np.testing.assert_allclose(_apply(optax_ldl.clip_grad_by_value(1.0), g), [-1, -0.05, 0.5, 1])
  np.testing.assert_allclose(_apply(optax_ldl.ClipGradByValue(max=0.3, min=-0.1), g),
                             [-0.1, -0.05, 0.3, 0.3])


@pytest.mark.parametrize("tx", [optax_ldl.clip_grad_by_global_norm(1.0),
                                optax_ldl.clip_grad_by_norm(1.0),
                                optax_ldl.clip_grad_by_value(1.0)])
def test_dtype_is_preserved(tx):
  g = {"w": jnp.full((3,), 4.0, jnp.bfloat16)}
  assert _apply(tx, g)["w"].dtype == jnp.bfloat16


@pytest.mark.parametrize("make, match", [
    (lambda: optax_ldl.clip_grad_by_global_norm(0.0), r"clip_norm must be a number > 0, got 0.0"),
    (lambda: optax_ldl.clip_grad_by_norm(-1.0), r"clip_norm must be a number > 0, got -1.0"),
    (lambda: optax_ldl.clip_grad_by_value(-1.0), r"max must be a number > 0 when min is None"),
    (lambda: optax_ldl.clip_grad_by_value(0.1, min=0.2), r"min must be a number <= max"),
])
def test_bad_thresholds(make, match):
  with pytest.raises(ValueError, match=match):
    make()
