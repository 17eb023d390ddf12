"""Paddle's clipping strategies as Optax transforms, checked by hand and in NumPy."""

import math
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _compat import enable_x64

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
    (lambda: optax_ldl.clip_grad_by_global_norm(0.0),
     r"clip_norm must be a number > 0 \(inf: no clipping\), got 0.0"),
    (lambda: optax_ldl.clip_grad_by_norm(-1.0),
     r"clip_norm must be a number > 0 \(inf: no clipping\), got -1.0"),
    (lambda: optax_ldl.clip_grad_by_value(-1.0), r"max must be a number > 0 when min is None"),
    (lambda: optax_ldl.clip_grad_by_value(0.1, min=0.2), r"min must be a number <= max"),
])
def test_bad_thresholds(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def _paddle_norm(leaves):
  """Paddle's formula, as the module computed it before overflow safety (the parity numbers)."""
  acc = [g.astype(jnp.promote_types(g.dtype, jnp.float32)) for g in leaves]
  return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in acc))


@pytest.mark.parametrize("dtype, scale", [
    (jnp.float32, s) for s in (1e-12, 1e-3, 1.0, 30.0, 1e6, 1e15)
] + [(jnp.bfloat16, s) for s in (1e-12, 1.0, 1e15)] + [(jnp.float16, s) for s in (1e-2, 1.0, 1e3)])
def test_normal_range_is_bit_identical_to_paddles_formula(dtype, scale):
  rng = np.random.default_rng(int(math.log10(scale)) + 20)
  leaves = [jnp.asarray(rng.normal(size=s) * scale, dtype) for s in [(7, 5), (3,), ()]]
  c = 0.5 * float(_paddle_norm(leaves))
  tree = dict(enumerate(leaves))
  out = _apply(optax_ldl.clip_grad_by_global_norm(c), tree)
  norm = _paddle_norm(leaves)
  for k, g in tree.items():
    np.testing.assert_array_equal(out[k], g * (c / jnp.maximum(norm, c)).astype(g.dtype))
  out = _apply(optax_ldl.clip_grad_by_norm(c), tree)
  for k, g in tree.items():
    n = _paddle_norm([g])
    np.testing.assert_array_equal(out[k], g * (c / jnp.maximum(n, c)).astype(g.dtype))


@pytest.mark.parametrize("make", [optax_ldl.clip_grad_by_global_norm, optax_ldl.clip_grad_by_norm])
def test_huge_gradients_do_not_overflow_the_norm(make):
  # |g| ~ 1e20: g**2 overflows float32, and Paddle's clipped step is exactly 0.
  g = {"w": jnp.array([3e20, -4e20], jnp.float32)}
  assert not np.isfinite(float(_paddle_norm([g["w"]])))
  out = jax.jit(make(1.0).update)(g, None)[0]
  np.testing.assert_allclose(out["w"], [0.6, -0.8], rtol=1e-6)
  # float64 under x64 too: |g| ~ 1e160.
  with enable_x64():
    d = {"w": jnp.array([3e160, -4e160], jnp.float64)}
    out = make(1.0).update(d, None)[0]
    assert out["w"].dtype == jnp.float64
    np.testing.assert_allclose(out["w"], [0.6, -0.8], rtol=1e-12)


@pytest.mark.parametrize("make", [optax_ldl.clip_grad_by_global_norm, optax_ldl.clip_grad_by_norm])
def test_tiny_gradients_do_not_underflow_the_norm(make):
  g = {"w": jnp.array([3e-25, -4e-25], jnp.float32)}  # g**2 underflows float32 to 0.
  out = _apply(make(1e-25), g)
  np.testing.assert_allclose(out["w"], [0.6e-25, -0.8e-25], rtol=1e-6)


def test_complex_gradients_use_the_modulus_like_optax():
  g = {"z": jnp.array([3 + 4j, 1j], jnp.complex64), "x": jnp.array([2.0], jnp.float32)}
  # |g| = sqrt(25 + 1 + 4) = sqrt(30); Paddle's sum(g**2) would be -7+24j - 1 + 4.
  out = _apply(optax_ldl.clip_grad_by_global_norm(1.0), g)
  ref = optax.clip_by_global_norm(1.0).update(g, optax.EmptyState())[0]
  for k in g:
    np.testing.assert_allclose(out[k], ref[k], rtol=1e-6)
    assert out[k].dtype == g[k].dtype
  out = _apply(optax_ldl.clip_grad_by_norm(1.0), g)
  np.testing.assert_allclose(out["z"], np.asarray(g["z"]) / math.sqrt(26), rtol=1e-6)
  np.testing.assert_allclose(out["x"], [1.0])


@pytest.mark.parametrize("make", [
    lambda: optax_ldl.clip_grad_by_global_norm(math.inf),
    lambda: optax_ldl.clip_grad_by_norm(float("inf")),
    lambda: optax_ldl.ClipGradByGlobalNorm(np.inf),
    lambda: optax_ldl.clip_grad_by_value(math.inf),
    lambda: optax_ldl.clip_grad_by_value(math.inf, min=-math.inf),
])
def test_inf_means_no_clipping(make):
  g = {"w": jnp.array([3e30, -1.0, 0.0], jnp.float32), "z": jnp.array([1e20j], jnp.complex64)}
  if "value" in str(make.__code__.co_names):
    g = {"w": g["w"]}
  out = jax.jit(make().update)(g, optax.EmptyState())[0]
  for k in g:
    np.testing.assert_array_equal(out[k], g[k])


def test_traced_inf_clip_norm_is_no_clipping_too():
  g = {"w": jnp.array([3.0, 4.0])}
  out = jax.jit(lambda c: optax_ldl.clip_grad_by_global_norm(c).update(g, None)[0])(jnp.inf)
  np.testing.assert_array_equal(out["w"], g["w"])


def test_non_finite_gradients_give_non_finite_updates_as_in_paddle():
  # Not silently finite: optax.apply_if_finite (or a loss-scale check) sees them.
  for bad in (math.inf, math.nan):
    out = _apply(optax_ldl.clip_grad_by_global_norm(1.0), {"w": jnp.array([1.0, bad])})
    assert not np.all(np.isfinite(out["w"]))


@pytest.mark.parametrize("make, arg", [
    (lambda: optax_ldl.clip_grad_by_global_norm(math.nan), "clip_norm"),
    (lambda: optax_ldl.clip_grad_by_norm(-math.inf), "clip_norm"),
    (lambda: optax_ldl.clip_grad_by_value(math.nan), "max"),
    (lambda: optax_ldl.clip_grad_by_value(-math.inf), "max"),
    (lambda: optax_ldl.clip_grad_by_value(1.0, min=math.inf), "min"),
    (lambda: optax_ldl.clip_grad_by_value(math.inf, min=math.inf), "min"),
    (lambda: optax_ldl.clip_grad_by_value(-math.inf, min=-math.inf), "max"),
])
def test_non_finite_thresholds_that_mean_nothing_are_refused(make, arg):
  with pytest.raises(ValueError, match=rf"\b{arg} must be"):
    make()


def test_empty_and_zero_gradients():
  assert _apply(optax_ldl.clip_grad_by_global_norm(1.0), {}) == {}
  g = {"w": jnp.zeros((2, 3)), "e": jnp.zeros((0,))}
  for make in (optax_ldl.clip_grad_by_global_norm, optax_ldl.clip_grad_by_norm):
    out = _apply(make(1.0), g)
    np.testing.assert_array_equal(out["w"], g["w"])
    assert out["e"].shape == (0,)


def test_no_clipping_transformation_pickles():
  tx = optax_ldl.clip_grad_by_global_norm(math.inf)
  again = pickle.loads(pickle.dumps(tx))
  g = {"w": jnp.ones(2)}
  np.testing.assert_array_equal(again.update(g, again.init(g))[0]["w"], g["w"])
