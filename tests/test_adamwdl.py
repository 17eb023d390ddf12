"""adamwdl: the optax contract, layer ratios, masks, lazy rows, master weights, errors."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fixtures import bert_like, path_name, random_grads, run

import optax_ldl

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
  params = bert_like()
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3)
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(1)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for t in range(3):
    params, state = step(params, state, random_grads(params, t))
  assert len(traces) == 1


def test_extra_keyword_arguments_are_accepted():
  params = bert_like()
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3)
  state = tx.init(params)
  updates, _ = tx.update(random_grads(params, 0), state, params, value=jnp.array(1.0), extra="x")
  chex.assert_trees_all_equal_structs(updates, params)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gradient_dtype_is_preserved(dtype):
  params = bert_like(dtype=dtype)
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3)
  if dtype == jnp.bfloat16:  # half precision without master weights warns once, at init.
    with pytest.warns(UserWarning, match="multi_precision is False"):
      state = tx.init(params)
  else:
    state = tx.init(params)
  updates, state = tx.update(random_grads(params, 0), state, params)
  chex.assert_trees_all_equal_dtypes(updates, params)
  count = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
  adam = [s for s in count if isinstance(s, optax.ScaleByAdamState)][0]
  assert adam.count.dtype == jnp.int32


def test_state_is_stable_under_lax_cond():
  params = bert_like()
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3)
  state = tx.init(params)
  grads = random_grads(params, 0)

  @jax.jit
  def maybe_update(pred, state):
    return jax.lax.cond(pred, lambda s: tx.update(grads, s, params)[1], lambda s: s, state)

  chex.assert_trees_all_equal_shapes_and_dtypes(maybe_update(True, state), state)


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


# One layout per tree: the path rule refuses a tree mixing two layer families.
JAX_LAYOUTS = {
    "hf_bert": {"bert/embeddings/word_embeddings/embedding": 0.5**3,
                "bert/encoder/layer/0/dense/kernel": 0.5**2,
                "bert/encoder/layer/1/dense/bias": 0.5,
                "classifier/kernel": 1.0},
    "gpt2": {"transformer/wte/embedding": 0.5**3, "transformer/h/0/mlp/bias": 0.5**2,
             "transformer/h/1/attn/kernel": 0.5, "lm_head/kernel": 1.0},
}


@pytest.mark.parametrize("layout", list(JAX_LAYOUTS))
def test_matches_a_float64_rederivation_on_jax_paths(layout):
  expected_ratio = JAX_LAYOUTS[layout]
  names = list(expected_ratio)
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
  params = bert_like()
  is_bias = lambda name: name.endswith("bias")  # noqa: E731
  tree = jax.tree_util.tree_map_with_path(
      lambda p, _: not is_bias(path_name(p)), params)
  kw = dict(learning_rate=1e-2, weight_decay=0.3, layerwise_decay=0.8, n_layers=3)
  by_name, _ = run(optax_ldl.adamwdl(**kw, apply_decay_param_fun=lambda n: not is_bias(n)),
                    params)
  by_tree, _ = run(optax_ldl.adamwdl(**kw, mask=tree), params)
  by_fn, _ = run(optax_ldl.adamwdl(**kw, mask=lambda p: tree), params)
  all_decayed, _ = run(optax_ldl.adamwdl(**kw), params)
  chex.assert_trees_all_close(by_name, by_tree)
  chex.assert_trees_all_close(by_name, by_fn)
  assert not np.allclose(by_name["classifier"]["bias"], all_decayed["classifier"]["bias"])


def test_custom_rules_returning_or_scaling_optimize_attr():
  params = bert_like()

  def returning(decay, name_dict, n_layers, param):
    return decay if "classifier" in param.name else 1.0

  def paddle_style(decay, name_dict, n_layers, param):  # older PaddleNLP rules mutate.
    if "classifier" in param.name:
      param.optimize_attr["learning_rate"] *= decay

  a, _ = run(optax_ldl.adamwdl(1e-2, layerwise_decay=0.5, set_param_lr_fun=returning), params)
  b, _ = run(optax_ldl.adamwdl(1e-2, layerwise_decay=0.5, set_param_lr_fun=paddle_style),
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


def test_decay_one_is_plain_adamw():
  params = bert_like()
  ours, _ = run(optax_ldl.adamwdl(1e-2, weight_decay=0.1), params)
  reference, _ = run(optax.adamw(1e-2, weight_decay=0.1), params)
  chex.assert_trees_all_close(ours, reference, atol=1e-7)


@pytest.mark.parametrize("clip", [
    optax_ldl.clip_grad_by_global_norm(0.5), optax.clip_by_global_norm(0.5)])
def test_any_optax_transform_clips(clip):
  params = bert_like()
  ours, _ = run(optax_ldl.adamwdl(1e-2, grad_clip=clip), params)
  reference_tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adamw(1e-2, weight_decay=0.01))
  reference, _ = run(reference_tx, params)
  chex.assert_trees_all_close(ours, reference, atol=1e-6)


# --------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(layerwise_decay=0.0), r"layerwise_decay must be a number in \(0, 1\], got 0.0"),
    (dict(layerwise_decay=1.5), r"layerwise_decay .* got 1.5"),
    # n_layers may now also be None (read from the tree) or a dict per stack.
    (dict(n_layers=0), r"n_layers must be an int >= 1.*got 0"),
    (dict(n_layers=2.5), r"n_layers must be an int >= 1.*got 2.5"),
    (dict(learning_rate=-1e-3), r"learning_rate must be a number >= 0 or a schedule"),
    (dict(weight_decay=-0.1), r"weight_decay must be a number >= 0, got -0.1"),
    (dict(b1=1.0), r"b1 must be a number in \[0, 1\), got 1.0"),
    (dict(b2=-0.1), r"b2 must be a number in \[0, 1\), got -0.1"),
    (dict(eps=0.0), r"eps must be a number > 0, got 0.0"),
    (dict(grad_clip=1.0), r"grad_clip must be an optax transformation"),
    (dict(set_param_lr_fun=3), r"set_param_lr_fun .*must be a function"),
    (dict(lazy_mode="yes"), r"lazy_mode must be True or False"),
    (dict(apply_decay_param_fun=lambda n: True, mask=lambda p: p),
     r"apply_decay_param_fun .* or mask .* not both"),
])
def test_bad_arguments_are_named(kwargs, match):
  with pytest.raises((ValueError, TypeError), match=match):
    optax_ldl.adamwdl(**kwargs)


def test_paddle_names_in_errors():
  with pytest.raises(ValueError, match=r"AdamWDL: beta1 must be .* got 1.2"):
    optax_ldl.AdamWDL(beta1=1.2)
  with pytest.raises(ValueError, match="warmup_steps must be an int >= 1, got 0"):
    optax_ldl.InverseSquareRootSchedule(0)


def test_n_layers_smaller_than_a_layer_index_names_the_path():
  params = bert_like(n_layers=5)
  with pytest.raises(ValueError, match=r"'encoder/layers_4/attention/bias' is in layer 4, but "
                                       r"n_layers=3"):
    optax_ldl.adamwdl(layerwise_decay=0.9, n_layers=3).init(params)


def test_n_layers_smaller_than_a_layer_index_is_harmless_with_decay_one():
  # With decay 1 every ratio is 1: a mismatched count is harmless, as in Paddle.
  params = bert_like(n_layers=5)
  tx = optax_ldl.adamwdl(layerwise_decay=1.0, n_layers=3)
  updates, _ = tx.update(random_grads(params, 0), tx.init(params), params)
  reference = optax.adamw(1e-3, weight_decay=0.01)
  expected, _ = reference.update(random_grads(params, 0), reference.init(params), params)
  chex.assert_trees_all_close(updates, expected)


def test_decay_without_any_layer_match_is_an_error():
  params = {"dense_0": {"kernel": jnp.ones((2, 2))}, "dense_1": {"kernel": jnp.ones((2, 2))}}
  with pytest.raises(ValueError, match=r"layerwise_decay=0.9 but no parameter is in a layer.*"
                                       r"'dense_0/kernel'"):
    optax_ldl.adamwdl(layerwise_decay=0.9).init(params)
  with pytest.raises(ValueError, match="set_param_lr_fun gave ratio 1.0 to every parameter"):
    optax_ldl.adamwdl(layerwise_decay=0.9, set_param_lr_fun=lambda *a: 1.0).init(params)


def test_bad_ratio_from_a_custom_rule():
  with pytest.raises(ValueError, match=r"returned -1.0 for parameter 'w'"):
    optax_ldl.adamwdl(set_param_lr_fun=lambda *a: -1.0).init({"w": jnp.ones(1)})


def test_mask_tree_that_does_not_match():
  params = bert_like()
  with pytest.raises(ValueError, match="weight-decay mask does not match the params"):
    optax_ldl.adamwdl(mask={"pooler": True}).init(params)
  with pytest.raises(ValueError, match="weight-decay mask does not match the params"):
    optax_ldl.adamwdl(apply_decay_param_fun={"x": True}, parameters=params)


def test_name_dict_missing_a_parameter():
  params = {"a": jnp.ones(2), "b": jnp.ones(2)}
  with pytest.raises(ValueError,
                     match=r"name_dict has no entry for 1 of the 2 float parameters: \['b'\]"):
    optax_ldl.adamwdl(name_dict={"a": "encoder.layers.0.w"}).init(params)


def test_parameters_are_checked_at_construction():
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), bert_like(5))
  with pytest.raises(ValueError, match="is in layer 4"):
    optax_ldl.adamwdl(layerwise_decay=0.9, n_layers=3, parameters=params)


@pytest.mark.parametrize(("name", "decays"), [
    ("params/encoder/layers_0/MlpBlock_0/Dense_0/kernel", True),  # linen
    ("params/encoder/layers_0/MlpBlock_0/Dense_0/bias", False),
    ("params/encoder/layers_0/LayerNorm_0/scale", False),
    ("layers/0/attn/query/kernel/value", True),  # NNX
    ("layers/0/norm/scale/value", False),
    ("layers/0/mlp/bias/value", False),
    ("bert/encoder/layer/3/output/LayerNorm/bias", False),  # Hugging Face Flax
    ("bert/encoder/layer/3/output/dense/kernel", True),
    ("bert/embeddings/word_embeddings/embedding", True),
    ("transformer/ln_f/scale", False),  # GPT-2
    ("encoder.layers.3.norm1.weight", False),  # Paddle
    ("encoder.layers.3.linear1.weight", True),
    ("blocks.0.attn.qkv.bias", False),  # timm
])
def test_weight_decay_filter_reads_every_layout(name, decays):
  assert optax_ldl.weight_decay_filter(name) is decays


def test_weight_decay_filter_can_exempt_embeddings_and_names_bad_input():
  assert not optax_ldl.weight_decay_filter("embed/embedding", embeddings=False)
  assert not optax_ldl.weight_decay_filter("transformer/wte/embedding", embeddings=False)
  with pytest.raises(TypeError, match="weight_decay_filter: name"):
    optax_ldl.weight_decay_filter(("layers_0", "kernel"))
