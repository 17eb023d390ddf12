"""lazy_rows, master_weights and float_leaves_only, through adamwdl and around any optimizer."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fixtures import bert_like, moments, random_grads, run

import optax_ldl

# ------------------------------------------------------------------------ lazy_rows


def test_lazy_rows_keep_params_and_moments():
  params = {"embeddings": {"table": jnp.ones((5, 3))}, "layers_0": {"bias": jnp.ones(3)}}
  tx = optax_ldl.adamwdl(0.1, weight_decay=0.5, layerwise_decay=0.9, n_layers=1,
                         lazy_mode=True)
  state = tx.init(params)
  g1 = {"embeddings": {"table": jnp.ones((5, 3))}, "layers_0": {"bias": jnp.ones(3)}}
  updates, state = tx.update(g1, state, params)
  params = optax.apply_updates(params, updates)
  before = (params, *moments(state))
  g2 = {"embeddings": {"table": jnp.zeros((5, 3)).at[1].set(2.0)},
        "layers_0": {"bias": jnp.zeros(3)}}
  updates, state = jax.jit(tx.update)(g2, state, params)
  new = optax.apply_updates(params, updates)
  mu, nu = moments(state)
  rows = np.array([False, True, False, False, False])
  table = lambda t: np.asarray(t["embeddings"]["table"])  # noqa: E731
  np.testing.assert_array_equal(table(new)[~rows], table(before[0])[~rows])
  np.testing.assert_array_equal(table(mu)[~rows], table(before[1])[~rows])
  np.testing.assert_array_equal(table(nu)[~rows], table(before[2])[~rows])
  assert not np.allclose(table(new)[rows], table(before[0])[rows])
  # 1-D leaves are dense, as in Paddle: a zero gradient still moves them.
  assert not np.allclose(new["layers_0"]["bias"], before[0]["layers_0"]["bias"])


def test_lazy_equals_dense_when_every_row_has_a_gradient():
  params = bert_like()
  kw = dict(learning_rate=1e-2, layerwise_decay=0.8, n_layers=3)
  lazy, _ = run(optax_ldl.adamwdl(**kw, lazy_mode=True), params)
  dense, _ = run(optax_ldl.adamwdl(**kw), params)
  chex.assert_trees_all_close(lazy, dense)


@pytest.mark.parametrize("make, name", [(lambda: optax.lion(0.1), "mu"),
                                        (lambda: optax.sgd(0.1, momentum=0.9), "trace")],
                         ids=["lion_mu", "sgd_trace"])
def test_lazy_rows_finds_the_moments_of_any_optimizer_by_name(make, name):
  params = {"table": jnp.ones((4, 2))}
  tx = optax_ldl.lazy_rows(make())
  state = tx.init(params)
  _, state = tx.update({"table": jnp.ones((4, 2))}, state, params)
  before = optax.tree_utils.tree_get(state, name)["table"]
  g = {"table": jnp.zeros((4, 2)).at[2].set(1.0)}
  u, state = tx.update(g, state, params)
  after = optax.tree_utils.tree_get(state, name)["table"]
  np.testing.assert_array_equal(np.asarray(u["table"])[[0, 1, 3]], 0.0)
  np.testing.assert_array_equal(np.asarray(after)[[0, 1, 3]], np.asarray(before)[[0, 1, 3]])
  assert not np.array_equal(np.asarray(after)[2], np.asarray(before)[2])


def test_lazy_rows_refuses_an_optimizer_without_moments():
  with pytest.raises(ValueError, match="no per-parameter moments"):
    optax_ldl.lazy_rows(optax.sgd(0.1)).init({"w": jnp.ones((2, 2))})


# ----------------------------------------------------------------- master_weights


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_master_weights_follow_the_float32_run(dtype):
  params32 = bert_like()
  params = jax.tree.map(lambda x: x.astype(dtype), params32)
  kw = dict(learning_rate=3e-2, weight_decay=0.1, layerwise_decay=0.8, n_layers=3)
  tx = optax_ldl.adamwdl(**kw, multi_precision=True)
  ref = optax_ldl.adamwdl(**kw)
  state = tx.init(params)
  ref_params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
  ref_state = ref.init(ref_params)
  # Eager, op by op: a compiled program may fuse the two runs' arithmetic differently.
  update = tx.update

  def ref_step(grads, state, params):
    updates, state = ref.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for t in range(20):
    grads = jax.tree.map(lambda x: x.astype(dtype), random_grads(params32, t))
    before = params
    updates, state = update(grads, state, params)
    chex.assert_trees_all_equal_dtypes(updates, grads)  # the update has the grads' dtype.
    params = optax.apply_updates(params, updates)
    grads32 = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
    ref_params, ref_state = ref_step(grads32, ref_state, ref_params)
    master = optax.tree_utils.tree_get(state, "master")
    chex.assert_trees_all_equal_dtypes(params, jax.tree.map(lambda x: x.astype(dtype), params32))
    # The master is the float32 run, exactly; the params are the master rounded to
    # their dtype, within one unit in the last place of the largest of the old
    # value, the step and the new value (a step that moves a value across more than
    # its own magnitude is rounded at the step's precision).
    chex.assert_trees_all_equal(master, ref_params)
    exact = []
    for old, u, p, m in zip(jax.tree.leaves(before), jax.tree.leaves(updates),
                            jax.tree.leaves(params), jax.tree.leaves(master)):
      rounded = m.astype(dtype)
      exact.append(np.asarray(p) == np.asarray(rounded))
      scale = jnp.maximum(jnp.maximum(jnp.abs(old), jnp.abs(u)), jnp.abs(rounded))
      ulp = np.asarray(jnp.nextafter(scale, jnp.asarray(np.inf, dtype)) - scale, np.float64)
      assert np.all(np.abs(np.asarray(p, np.float64) - np.asarray(rounded, np.float64)) <= ulp)
    # Most entries are the rounded master exactly.
    assert np.concatenate([e.ravel() for e in exact]).mean() > 0.9
  mu, nu = moments(state)
  assert {x.dtype for x in jax.tree.leaves(mu) + jax.tree.leaves(nu)} == {
      jnp.dtype(jnp.float32)}


def test_multi_precision_leaves_float32_params_alone():
  params = bert_like()
  a, _ = run(optax_ldl.adamwdl(1e-2, multi_precision=True), params)
  b, _ = run(optax_ldl.adamwdl(1e-2), params)
  chex.assert_trees_all_equal(a, b)


def test_multi_precision_update_needs_params():
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), bert_like())
  tx = optax_ldl.adamwdl(multi_precision=True)
  with pytest.raises(ValueError, match=r"multi_precision=True needs the params"):
    tx.update(params, tx.init(params))


def test_master_weights_around_any_optimizer():
  p = jnp.ones(3, jnp.bfloat16)
  tx = optax_ldl.master_weights(optax.sgd(1e-3))
  u, state = tx.update(jnp.ones(3, jnp.bfloat16), tx.init(p), p)
  assert u.dtype == jnp.bfloat16
  np.testing.assert_array_equal(state.master, np.full(3, np.float32(1.0) - np.float32(1e-3)))


def test_half_precision_without_master_weights_warns_once_at_init():
  params = bert_like(dtype=jnp.bfloat16)
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3)
  with pytest.warns(UserWarning, match="bfloat16 leaves and multi_precision is False") as w:
    state = tx.init(params)
  assert len(w) == 1
  tx.update(random_grads(params, 0), state, params)  # no warning at update (filterwarnings=error)


# -------------------------------------------------------------- float_leaves_only


def test_integer_leaves_pass_through_unchanged():
  params = {"layers_0": {"w": jnp.ones(3)}, "step": jnp.array(7, jnp.int32)}
  grads = jax.grad(lambda p: jnp.sum(p["layers_0"]["w"] ** 2), allow_int=True)(params)
  tx = optax_ldl.adamwdl(0.1, layerwise_decay=0.5, n_layers=1)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  assert new["step"].dtype == jnp.int32 and int(new["step"]) == 7
  assert not np.allclose(new["layers_0"]["w"], 1.0)


def test_float_leaves_only_around_any_optimizer():
  params = {"w": jnp.ones(2), "ids": jnp.array([3, 4], jnp.int32)}
  tx = optax_ldl.float_leaves_only(optax.adam(0.1))
  grads = {"w": jnp.ones(2), "ids": jnp.zeros(2, jnp.int32)}
  u, _ = tx.update(grads, tx.init(params), params)
  assert u["ids"].dtype == jnp.int32 and not np.any(u["ids"])
  np.testing.assert_allclose(u["w"], -0.1, rtol=1e-5)
