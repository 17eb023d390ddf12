"""adamwdl: the optax contract, layer ratios, masks, lazy rows, master weights, errors."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ldl


def _bert_like(n_layers=3, dtype=jnp.float32):
  key = iter(jax.random.split(jax.random.key(0), 64))
  normal = lambda *shape: jax.random.normal(next(key), shape, dtype)  # noqa: E731
  return {
      "embeddings": {"word_embeddings": {"embedding": normal(11, 4)},
                     "LayerNorm": {"scale": normal(4), "bias": normal(4)}},
      "encoder": {f"layers_{i}": {"attention": {"kernel": normal(4, 4), "bias": normal(4)}}
                  for i in range(n_layers)},
      "pooler": {"kernel": normal(4, 4)},
      "classifier": {"kernel": normal(4, 2), "bias": normal(2)},
  }


def _grads(params, seed):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(
      treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def _run(tx, params, steps=5, seed=0):
  state = tx.init(params)
  for t in range(steps):
    updates, state = tx.update(_grads(params, seed + t), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


# ---------------------------------------------------------------- the optax contract


def test_converges_on_a_quadratic():
  target = jnp.array([1.0, -1.0, 2.0])
  loss = lambda p: jnp.sum((p["layers_0"]["w"] - target) ** 2)  # noqa: E731
  params = {"layers_0": {"w": jnp.zeros(3)}}
  tx = optax_ldl.adamwdl(0.1, weight_decay=0.0, layerwise_decay=0.9, n_layers=1)
  state = tx.init(params)
  for _ in range(300):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(params["layers_0"]["w"], target, atol=1e-2)


def test_jit_without_recompiling_on_the_second_update():
  params = _bert_like()
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3)
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(1)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for t in range(3):
    params, state = step(params, state, _grads(params, t))
  assert len(traces) == 1


def test_extra_keyword_arguments_are_accepted():
  params = _bert_like()
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3)
  state = tx.init(params)
  updates, _ = tx.update(_grads(params, 0), state, params, value=jnp.array(1.0), extra="x")
  chex.assert_trees_all_equal_structs(updates, params)


def test_equal_under_inject_hyperparams():
  params = _bert_like()
  kwargs = dict(learning_rate=1e-2, weight_decay=0.05, layerwise_decay=0.8, n_layers=3)
  plain, _ = _run(optax_ldl.adamwdl(**kwargs), params)
  injected, _ = _run(optax.inject_hyperparams(optax_ldl.adamwdl)(**kwargs), params)
  # Injected hyperparameters are float32 arrays, not Python floats: rounding differs.
  chex.assert_trees_all_close(plain, injected, rtol=1e-5, atol=1e-6)


def test_injected_decay_can_start_at_one_and_change_without_recompiling():
  params = _bert_like()
  tx = optax.inject_hyperparams(optax_ldl.adamwdl)(learning_rate=1e-2, weight_decay=0.0,
                                                   layerwise_decay=1.0, n_layers=3)
  traces = []

  @jax.jit
  def update(grads, state):
    traces.append(1)
    return tx.update(grads, state, params)

  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  first, state = update(grads, state)
  state.hyperparams["layerwise_decay"] = jnp.asarray(0.5, jnp.float32)  # same aval: no retrace
  second, state = update(grads, state)
  assert len(traces) == 1
  # Decay 1: every leaf moves alike; decay 0.5: layer 0 moves at 0.5**3 of the head's rate.
  head = lambda u: float(u["classifier"]["kernel"][0, 0])  # noqa: E731
  layer0 = lambda u: float(u["encoder"]["layers_0"]["attention"]["kernel"][0, 0])  # noqa: E731
  assert layer0(first) == pytest.approx(head(first), rel=1e-5)
  assert layer0(second) == pytest.approx(0.125 * head(second), rel=1e-4)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gradient_dtype_is_preserved(dtype):
  params = _bert_like(dtype=dtype)
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3)
  updates, state = tx.update(_grads(params, 0), tx.init(params), params)
  chex.assert_trees_all_equal_dtypes(updates, params)
  count = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
  adam = [s for s in count if isinstance(s, optax.ScaleByAdamState)][0]
  assert adam.count.dtype == jnp.int32


def test_state_is_stable_under_lax_cond():
  params = _bert_like()
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3)
  state = tx.init(params)
  grads = _grads(params, 0)

  @jax.jit
  def maybe_update(pred, state):
    return jax.lax.cond(pred, lambda s: tx.update(grads, s, params)[1], lambda s: s, state)

  chex.assert_trees_all_equal_shapes_and_dtypes(maybe_update(True, state), state)


def test_state_is_adamw_state_plus_one_scalar_per_ratio_group():
  size = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
  for n_layers in (3, 12):
    params = _bert_like(n_layers=n_layers)
    ours = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=n_layers).init(params)
    reference = optax.adamw(1e-3).init(params)
    # n_layers layer groups and the embedding group; "other" (ratio 1) has none.
    n_groups = n_layers + 1
    assert size(ours) == size(reference) + 4 * n_groups
    assert len(jax.tree.leaves(ours)) == len(jax.tree.leaves(reference)) + n_groups
    ratios = optax.tree_utils.tree_get(ours, "ratios")
    assert all(r.shape == () and r.dtype == jnp.float32 for r in ratios.values())
    np.testing.assert_allclose(
        sorted(float(r) for r in ratios.values()),
        sorted(0.8 ** (n_layers + 1 - i) for i in range(n_layers + 1)), rtol=1e-7)


def test_state_with_decay_one_is_the_adamw_state():
  params = _bert_like(n_layers=3)
  ours = optax_ldl.adamwdl(1e-3, layerwise_decay=1.0, n_layers=3).init(params)
  reference = optax.adamw(1e-3).init(params)
  chex.assert_trees_all_equal(jax.tree.leaves(ours), jax.tree.leaves(reference))


def test_state_from_another_configuration_is_refused():
  params = _bert_like(n_layers=3)
  state = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3).init(params)
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3, stacked=None,
                         set_param_lr_fun=lambda d, nd, n, p: 0.5 if "layers" in p.name else 1.0)
  with pytest.raises(ValueError, match=r"state holds the ratios .*another layerwise_decay"):
    tx.update(_grads(params, 0), state, params)
  # Another decay rate gives other ratios, also refused rather than applied.
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.9, n_layers=3)
  with pytest.raises(ValueError, match=r"layer_0@0.512.*layer_0@0.729"):
    tx.update(_grads(params, 0), state, params)


def test_old_moments_with_new_ratios_as_the_error_message_says():
  params, grads = _bert_like(n_layers=3), _grads(_bert_like(n_layers=3), 0)
  old = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3)
  state = old.update(grads, old.init(params), params)[1]
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.9, n_layers=3)
  state = optax.tree_utils.tree_set(
      state, ratios=optax.tree_utils.tree_get(tx.init(params), "ratios"))
  updates, new_state = tx.update(grads, state, params)
  # Same as a fresh 0.9 optimizer whose Adam state is the old one.
  fresh_state = optax.tree_utils.tree_set(
      tx.init(params), mu=optax.tree_utils.tree_get(state, "mu"),
      nu=optax.tree_utils.tree_get(state, "nu"),
      count=optax.tree_utils.tree_get(state, "count"))
  expected, _ = tx.update(grads, fresh_state, params)
  chex.assert_trees_all_equal(updates, expected)


def test_works_in_a_flax_train_state():
  from flax.training import train_state

  params = _bert_like()
  state = train_state.TrainState.create(
      apply_fn=None, params=params,
      tx=optax_ldl.adamwdl(1e-2, layerwise_decay=0.8, n_layers=3))
  state = jax.jit(lambda s, g: s.apply_gradients(grads=g))(state, _grads(params, 0))
  assert int(state.step) == 1
  expected, _ = _run(optax_ldl.adamwdl(1e-2, layerwise_decay=0.8, n_layers=3), params, steps=1)
  chex.assert_trees_all_close(state.params, expected)


# ---------------------------------------------------------- the math, re-derived


def _f64_adamwdl(params, grads_seq, lr, b1, b2, eps, wd, ratio, decay):
  """The documented AdamWDL formula in float64 NumPy, leaf by leaf."""
  out = {}
  for name, p in params.items():
    p = np.asarray(p, np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, grads in enumerate(grads_seq, start=1):
      g = np.asarray(grads[name], np.float64)
      m = b1 * m + (1 - b1) * g
      v = b2 * v + (1 - b2) * g * g
      adam = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
      p = p - lr * ratio[name] * (adam + wd * decay[name] * p)
    out[name] = p
  return out


def test_matches_a_float64_rederivation_on_jax_paths():
  names = ["bert/embeddings/word_embeddings/embedding", "bert/encoder/layer/0/dense/kernel",
           "bert/encoder/layer/1/dense/bias", "transformer/h/1/attn/kernel", "classifier/kernel"]
  expected_ratio = {names[0]: 0.5**3, names[1]: 0.5**2, names[2]: 0.5, names[3]: 0.5,
                    names[4]: 1.0}
  rng = np.random.default_rng(0)
  params = {n: jnp.asarray(rng.normal(size=(3, 2)), jnp.float32) for n in names}
  grads_seq = [{n: rng.normal(size=(3, 2)).astype(np.float32) for n in names} for _ in range(20)]
  decay = {n: not n.endswith("bias") for n in names}
  tx = optax_ldl.adamwdl(0.05, 0.8, 0.99, 1e-6, 0.1, layerwise_decay=0.5, n_layers=2,
                         apply_decay_param_fun=decay.__getitem__)
  state, ours = tx.init(params), params
  for grads in grads_seq:
    updates, state = tx.update(grads, state, ours)
    ours = optax.apply_updates(ours, updates)
  reference = _f64_adamwdl(params, grads_seq, 0.05, 0.8, 0.99, 1e-6, 0.1, expected_ratio, decay)
  for n in names:
    np.testing.assert_allclose(ours[n], reference[n], atol=2e-6, err_msg=n)


def test_optax_style_mask_tree_and_callable_equal_the_paddle_filter():
  params = _bert_like()
  is_bias = lambda name: name.endswith("bias")  # noqa: E731
  tree = jax.tree_util.tree_map_with_path(
      lambda p, _: not is_bias(optax_ldl.path_name(p)), params)
  kw = dict(learning_rate=1e-2, weight_decay=0.3, layerwise_decay=0.8, n_layers=3)
  by_name, _ = _run(optax_ldl.adamwdl(**kw, apply_decay_param_fun=lambda n: not is_bias(n)),
                    params)
  by_tree, _ = _run(optax_ldl.adamwdl(**kw, mask=tree), params)
  by_fn, _ = _run(optax_ldl.adamwdl(**kw, mask=lambda p: tree), params)
  all_decayed, _ = _run(optax_ldl.adamwdl(**kw), params)
  chex.assert_trees_all_close(by_name, by_tree)
  chex.assert_trees_all_close(by_name, by_fn)
  assert not np.allclose(by_name["classifier"]["bias"], all_decayed["classifier"]["bias"])


def test_custom_rules_returning_or_scaling_optimize_attr():
  params = _bert_like()

  def returning(decay, name_dict, n_layers, param):
    return decay if "classifier" in param.name else 1.0

  def paddle_style(decay, name_dict, n_layers, param):  # older PaddleNLP rules mutate.
    if "classifier" in param.name:
      param.optimize_attr["learning_rate"] *= decay

  a, _ = _run(optax_ldl.adamwdl(1e-2, layerwise_decay=0.5, set_param_lr_fun=returning), params)
  b, _ = _run(optax_ldl.adamwdl(1e-2, layerwise_decay=0.5, set_param_lr_fun=paddle_style),
              params)
  chex.assert_trees_all_close(a, b)
  rows = {r.path: r.lr_ratio for r in optax_ldl.describe(
      params, layerwise_decay=0.5, set_param_lr_fun=returning).rows}
  assert rows["classifier/kernel"] == 0.5 and rows["pooler/kernel"] == 1.0


def test_name_dict_renames_what_the_rule_sees():
  params = {"a": jnp.ones(2), "b": jnp.ones(2), "c": jnp.ones(2)}
  names = {"a": "encoder.layers.0.w", "b": "encoder.layers.1.w", "c": "embeddings.word.w"}
  rows = optax_ldl.describe(params, layerwise_decay=0.5, n_layers=2, name_dict=names).rows
  assert [r.lr_ratio for r in rows] == [0.25, 0.5, 0.125]


def test_integer_leaves_pass_through_unchanged():
  params = {"layers_0": {"w": jnp.ones(3)}, "step": jnp.array(7, jnp.int32)}
  grads = jax.grad(lambda p: jnp.sum(p["layers_0"]["w"] ** 2), allow_int=True)(params)
  tx = optax_ldl.adamwdl(0.1, layerwise_decay=0.5, n_layers=1)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  assert new["step"].dtype == jnp.int32 and int(new["step"]) == 7
  assert not np.allclose(new["layers_0"]["w"], 1.0)


def test_decay_one_is_plain_adamw():
  params = _bert_like()
  ours, _ = _run(optax_ldl.adamwdl(1e-2, weight_decay=0.1), params)
  reference, _ = _run(optax.adamw(1e-2, weight_decay=0.1), params)
  chex.assert_trees_all_close(ours, reference, atol=1e-7)


@pytest.mark.parametrize("clip", [
    optax_ldl.clip_grad_by_global_norm(0.5), optax.clip_by_global_norm(0.5)])
def test_any_optax_transform_clips(clip):
  params = _bert_like()
  ours, _ = _run(optax_ldl.adamwdl(1e-2, grad_clip=clip), params)
  reference_tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adamw(1e-2, weight_decay=0.01))
  reference, _ = _run(reference_tx, params)
  chex.assert_trees_all_close(ours, reference, atol=1e-6)


# ------------------------------------------------------------------------ lazy_mode


def test_lazy_rows_keep_params_and_moments():
  params = {"embeddings": {"table": jnp.ones((5, 3))}, "layers_0": {"bias": jnp.ones(3)}}
  tx = optax_ldl.adamwdl(0.1, weight_decay=0.5, layerwise_decay=0.9, n_layers=1,
                         lazy_mode=True)
  state = tx.init(params)
  g1 = {"embeddings": {"table": jnp.ones((5, 3))}, "layers_0": {"bias": jnp.ones(3)}}
  updates, state = tx.update(g1, state, params)
  params = optax.apply_updates(params, updates)
  adam = state.inner_state.inner_state[0]
  before = (params, adam.mu, adam.nu)
  g2 = {"embeddings": {"table": jnp.zeros((5, 3)).at[1].set(2.0)},
        "layers_0": {"bias": jnp.zeros(3)}}
  updates, state = jax.jit(tx.update)(g2, state, params)
  new = optax.apply_updates(params, updates)
  adam = state.inner_state.inner_state[0]
  rows = np.array([False, True, False, False, False])
  table = lambda t: np.asarray(t["embeddings"]["table"])  # noqa: E731
  np.testing.assert_array_equal(table(new)[~rows], table(before[0])[~rows])
  np.testing.assert_array_equal(table(adam.mu)[~rows], table(before[1])[~rows])
  np.testing.assert_array_equal(table(adam.nu)[~rows], table(before[2])[~rows])
  assert not np.allclose(table(new)[rows], table(before[0])[rows])
  # 1-D leaves are dense, as in Paddle: a zero gradient still moves them.
  assert not np.allclose(new["layers_0"]["bias"], before[0]["layers_0"]["bias"])


def test_lazy_equals_dense_when_every_row_has_a_gradient():
  params = _bert_like()
  kw = dict(learning_rate=1e-2, layerwise_decay=0.8, n_layers=3)
  lazy, _ = _run(optax_ldl.adamwdl(**kw, lazy_mode=True), params)
  dense, _ = _run(optax_ldl.adamwdl(**kw), params)
  chex.assert_trees_all_close(lazy, dense)


# ----------------------------------------------------------------- multi_precision


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_master_weights_follow_the_float32_run(dtype):
  params32 = _bert_like()
  params = jax.tree.map(lambda x: x.astype(dtype), params32)
  kw = dict(learning_rate=3e-2, weight_decay=0.1, layerwise_decay=0.8, n_layers=3)
  tx = optax_ldl.adamwdl(**kw, multi_precision=True)
  ref = optax_ldl.adamwdl(**kw)
  state = tx.init(params)
  master = state.inner_state.master
  ref_params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
  ref_state = ref.init(ref_params)
  update, ref_update = jax.jit(tx.update), jax.jit(ref.update)
  for t in range(20):
    grads = jax.tree.map(lambda x: x.astype(dtype), _grads(params32, t))
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    grads32 = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
    ref_updates, ref_state = ref_update(grads32, ref_state, ref_params)
    ref_params = optax.apply_updates(ref_params, ref_updates)
    master = state.inner_state.master
    chex.assert_trees_all_equal_dtypes(params, jax.tree.map(lambda x: x.astype(dtype), params32))
    chex.assert_trees_all_equal(params, jax.tree.map(lambda m: m.astype(dtype), master))
    chex.assert_trees_all_close(master, ref_params, atol=1e-6)
  adam = state.inner_state.inner_state[0]
  assert {x.dtype for x in jax.tree.leaves(adam.mu) + jax.tree.leaves(adam.nu)} == {
      jnp.dtype(jnp.float32)}


def test_multi_precision_leaves_float32_params_alone():
  params = _bert_like()
  a, _ = _run(optax_ldl.adamwdl(1e-2, multi_precision=True), params)
  b, _ = _run(optax_ldl.adamwdl(1e-2), params)
  chex.assert_trees_all_equal(a, b)


# --------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(layerwise_decay=0.0), r"layerwise_decay must be a number in \(0, 1\], got 0.0"),
    (dict(layerwise_decay=1.5), r"layerwise_decay .* got 1.5"),
    (dict(n_layers=0), r"n_layers must be an int >= 1, got 0"),
    (dict(n_layers=2.5), r"n_layers must be an int >= 1, got 2.5"),
    (dict(learning_rate=-1e-3), r"learning_rate must be a number >= 0 or a schedule"),
    (dict(weight_decay=-0.1), r"weight_decay must be a number >= 0, got -0.1"),
    (dict(b1=1.0), r"b1 must be a number in \[0, 1\), got 1.0"),
    (dict(b2=-0.1), r"b2 must be a number in \[0, 1\), got -0.1"),
    (dict(eps=0.0), r"eps must be a number > 0, got 0.0"),
    (dict(grad_clip=1.0), r"grad_clip must be an optax transformation"),
    (dict(set_param_lr_fun=3), r"set_param_lr_fun must be a function"),
    (dict(lazy_mode="yes"), r"lazy_mode must be True or False"),
    (dict(apply_decay_param_fun=lambda n: True, mask=lambda p: p),
     r"apply_decay_param_fun .* or mask .* not both"),
])
def test_bad_arguments_are_named(kwargs, match):
  with pytest.raises((ValueError, TypeError), match=match):
    optax_ldl.adamwdl(**kwargs)


def test_paddle_names_in_errors():
  with pytest.raises(ValueError, match=r"adamwdl: b1 must be .* got 1.2"):
    optax_ldl.AdamWDL(beta1=1.2)
  with pytest.raises(ValueError, match="warmup_steps must be an int >= 1, got 0"):
    optax_ldl.InverseSquareRootSchedule(0)


def test_n_layers_smaller_than_a_layer_index_names_the_path():
  params = _bert_like(n_layers=5)
  with pytest.raises(ValueError, match=r"'encoder/layers_4/attention/bias' is in layer 4, but "
                                       r"n_layers=3"):
    optax_ldl.adamwdl(layerwise_decay=0.9, n_layers=3).init(params)
  # With decay 1 every ratio is 1: a mismatched count is harmless, as in Paddle.
  optax_ldl.adamwdl(layerwise_decay=1.0, n_layers=3).init(params)


def test_decay_without_any_layer_match_is_an_error():
  params = {"dense_0": {"kernel": jnp.ones((2, 2))}, "dense_1": {"kernel": jnp.ones((2, 2))}}
  with pytest.raises(ValueError, match=r"layerwise_decay=0.9 but no parameter matched a layer "
                                       r"rule.*'dense_0/kernel'"):
    optax_ldl.adamwdl(layerwise_decay=0.9).init(params)
  with pytest.raises(ValueError, match="set_param_lr_fun gave ratio 1.0 to every parameter"):
    optax_ldl.adamwdl(layerwise_decay=0.9, set_param_lr_fun=lambda *a: 1.0).init(params)


def test_bad_ratio_from_a_custom_rule():
  with pytest.raises(ValueError, match=r"returned -1.0 for parameter 'w'"):
    optax_ldl.adamwdl(set_param_lr_fun=lambda *a: -1.0).init({"w": jnp.ones(1)})


def test_mask_tree_that_does_not_match():
  params = _bert_like()
  with pytest.raises(ValueError, match="mask tree does not match the params"):
    optax_ldl.adamwdl(mask={"pooler": True}).init(params)
  with pytest.raises(ValueError, match="mask tree does not match the params"):
    optax_ldl.adamwdl(apply_decay_param_fun={"x": True}, parameters=params)


def test_name_dict_missing_a_parameter():
  params = {"a": jnp.ones(2), "b": jnp.ones(2)}
  with pytest.raises(ValueError, match=r"name_dict has no entry for parameter 'b'"):
    optax_ldl.adamwdl(name_dict={"a": "encoder.layers.0.w"}).init(params)


def test_parameters_are_checked_at_construction():
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _bert_like(5))
  with pytest.raises(ValueError, match="is in layer 4"):
    optax_ldl.adamwdl(layerwise_decay=0.9, n_layers=3, parameters=params)


def test_multi_precision_update_needs_params():
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _bert_like())
  tx = optax_ldl.adamwdl(multi_precision=True)
  with pytest.raises(ValueError, match=r"multi_precision=True\) needs the params"):
    tx.update(params, tx.init(params))




@pytest.mark.parametrize("stacked", [False, True])
def test_scale_by_layer_ratio_is_optax_partition_over_the_layer_labels(stacked):
  params = _bert_like(n_layers=3)
  if stacked:  # the three layers as one stacked subtree, plus the unrolled rest.
    layers = [params["encoder"].pop(f"layers_{i}") for i in range(3)]
    params["encoder"]["layers"] = jax.tree.map(lambda *x: jnp.stack(x), *layers)
  grads = _grads(params, 0)
  kw = dict(layerwise_decay=0.7, n_layers=3, set_param_lr_fun=None, name_dict=None)
  groups = optax_ldl.layer_groups(params, **kw)

  def scale(ratio):
    if isinstance(ratio, optax_ldl.StackedRatio):
      return optax_ldl.scale_by_stacked_ratio(ratio.ratios, ratio.axis)
    return optax.scale(ratio)

  reference = optax.partition({k: scale(r) for k, r in groups.ratios.items()}, groups.labels)
  expected, _ = reference.update(grads, reference.init(params))
  tx = optax_ldl.scale_by_layer_ratio(**kw)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params))
  chex.assert_trees_all_close(updates, expected, rtol=1e-7, atol=0)
  assert len(groups.ratios) == (3 if stacked else 5)  # (layers|layer_0-2), embedding, other


def test_layer_ratios_are_operands_of_the_compiled_update_not_constants():
  # Constants would give every layer kernels of its own (compile time grows
  # with depth, see benchmarks/); operands keep the layers' kernels identical.
  params = _bert_like(n_layers=4)
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.5, n_layers=4)
  hlo = jax.jit(tx.update).lower(_grads(params, 0), tx.init(params), params).as_text()
  ratios = [0.5 ** k for k in range(1, 6)]
  assert not [r for r in ratios if f"{r:.6e}" in hlo]
  # The check can fail: with the ratios as literals they are in the program.
  literal = optax.partition({"all": optax.scale(0.125)}, jax.tree.map(lambda _: "all", params))
  assert f"{0.125:.6e}" in jax.jit(literal.update).lower(params, literal.init(params)).as_text()
