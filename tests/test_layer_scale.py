"""LayerDecay, scale_by_layer_ratio and layerwise (layer-wise decay around any optimizer)."""

import dataclasses
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fixtures import (
    DECAY,
    bert_like,
    by_name,
    flat_params,
    flat_ratio,
    grads_at,
    moments,
    names_and_leaves,
    random_grads,
)

import optax_ldl

# ---------------------------------------------------------------------- LayerDecay


def test_layer_decay_is_frozen_hashable_and_compared_by_value():
  a = optax_ldl.LayerDecay(layerwise_decay=0.5, n_layers=3, name_dict={"x": "y"})
  b = optax_ldl.LayerDecay(layerwise_decay=0.5, n_layers=3, name_dict={"x": "y"})
  assert a == b and hash(a) == hash(b)
  assert a != optax_ldl.LayerDecay(layerwise_decay=0.6, n_layers=3, name_dict={"x": "y"})
  assert a != optax_ldl.LayerDecay(layerwise_decay=0.5, n_layers=4, name_dict={"x": "y"})
  assert len({a, b, optax_ldl.LayerDecay(0.5)}) == 2
  with pytest.raises(dataclasses.FrozenInstanceError):
    a.layerwise_decay = 0.9  # pyright: ignore[reportAttributeAccessIssue]
  rule = lambda *args: 1.0  # noqa: E731
  assert optax_ldl.LayerDecay(0.5, rule=rule) == optax_ldl.LayerDecay(0.5, rule=rule)
  assert optax_ldl.LayerDecay(0.5, rule=rule) != optax_ldl.LayerDecay(0.5, rule=lambda *a: 1.0)


def test_layer_decay_plan_groups_leaves_of_equal_ratio():
  params = {"embeddings": jnp.ones(1), "layers_0": jnp.ones(1), "layers_1": jnp.ones(1),
            "head": jnp.ones(1)}
  plan = optax_ldl.LayerDecay(layerwise_decay=0.5, n_layers=2).plan(params)
  assert {k: plan.ratio(k) for k in plan.labels} == {
      "embeddings": 0.125, "layers_0": 0.25, "layers_1": 0.5, "head": 1.0}
  assert len(set(plan.labels.values())) == 4
  assert plan.placements["layers_1"] == optax_ldl.Placement("layer", layer=1)
  # n_layers defaults to the tree's depth.
  assert optax_ldl.LayerDecay(layerwise_decay=0.5).plan(params).ratios == plan.ratios
  one = optax_ldl.LayerDecay(layerwise_decay=1.0, n_layers=2).plan(params)
  assert {one.ratio(k) for k in one.labels} == {1.0}


def test_a_layer_decay_and_its_fields_give_the_same_transformation():
  params, grads = flat_params(), grads_at(0)
  decay = optax_ldl.LayerDecay(layerwise_decay=DECAY)
  for a, b in ((optax_ldl.scale_by_layer_ratio(decay),
                optax_ldl.scale_by_layer_ratio(layerwise_decay=DECAY)),
               (optax_ldl.layerwise(optax.sgd(1.0), decay),
                optax_ldl.layerwise(optax.sgd(1.0), layerwise_decay=DECAY))):
    chex.assert_trees_all_equal(a.update(grads, a.init(params), params)[0],
                                b.update(grads, b.init(params), params)[0])
  with pytest.raises(TypeError, match="pass a LayerDecay or its fields, not both"):
    optax_ldl.scale_by_layer_ratio(decay, layerwise_decay=0.9)


# -------------------------------------------------------------- scale_by_layer_ratio


def _scale_stacked(ratios, axis):
  """Slice i (along axis) of every update times ratios[i]: written out for the reference."""
  def update(updates, state, params=None):
    del params
    shape = lambda u: [-1 if j == axis else 1 for j in range(u.ndim)]  # noqa: E731
    return jax.tree.map(lambda u: u * jnp.reshape(jnp.asarray(ratios, u.dtype), shape(u)),
                        updates), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


@pytest.mark.parametrize("stacked", [False, True])
def test_scale_by_layer_ratio_is_optax_partition_over_the_layer_labels(stacked):
  params = bert_like(n_layers=3)
  if stacked:  # the three layers as one stacked subtree, plus the unrolled rest.
    layers = [params["encoder"].pop(f"layers_{i}") for i in range(3)]
    params["encoder"]["layers"] = jax.tree.map(lambda *x: jnp.stack(x), *layers)
  grads = random_grads(params, 0)
  decay = optax_ldl.LayerDecay(layerwise_decay=0.7, n_layers=3)
  groups = decay.plan(params)

  def scale(ratio):
    if hasattr(ratio, "axis"):  # one ratio per slice of a stacked leaf.
      return _scale_stacked(ratio.ratios, ratio.axis)
    return optax.scale(ratio)

  reference = optax.partition({k: scale(r) for k, r in groups.ratios.items()},
                              groups.label_tree(params))
  expected, _ = reference.update(grads, reference.init(params))
  tx = optax_ldl.scale_by_layer_ratio(decay)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params))
  chex.assert_trees_all_close(updates, expected, rtol=1e-7, atol=0)
  assert len(groups.ratios) == (3 if stacked else 5)  # (stack|layer 0-2), embedding, head


def test_state_is_adamw_state_plus_one_ratio_vector():
  size = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
  for n_layers in (3, 12):
    params = bert_like(n_layers=n_layers)
    ours = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=n_layers).init(params)
    reference = optax.adamw(1e-3).init(params)
    # n_layers layer groups and the embedding group; the head (ratio 1) has none.
    n_groups = n_layers + 1
    assert size(ours) == size(reference) + 4 * n_groups
    assert len(jax.tree.leaves(ours)) == len(jax.tree.leaves(reference)) + 1
    ratios = optax.tree_utils.tree_get(ours, "ratios")
    (key, vector), = ratios.items()  # one vector, keyed by the configuration.
    assert key == f"decay@0.8|n_layers@{n_layers}"
    assert vector.shape == (n_groups,) and vector.dtype == jnp.float32
    np.testing.assert_allclose(
        sorted(np.asarray(vector).tolist()),
        sorted(0.8 ** (n_layers + 1 - i) for i in range(n_layers + 1)), rtol=1e-7)


def test_state_with_decay_one_is_the_adamw_state():
  params = bert_like(n_layers=3)
  ours = optax_ldl.adamwdl(1e-3, layerwise_decay=1.0, n_layers=3).init(params)
  reference = optax.adamw(1e-3).init(params)
  chex.assert_trees_all_equal(jax.tree.leaves(ours), jax.tree.leaves(reference))


def test_state_from_another_configuration_is_refused():
  params = bert_like(n_layers=3)
  state = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3).init(params)
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3, stacked=None,
                         set_param_lr_fun=lambda d, nd, n, p: 0.5 if "layers" in p.name else 1.0)
  with pytest.raises(ValueError, match=r"state holds the ratios .*another layerwise_decay"):
    tx.update(random_grads(params, 0), state, params)
  # Another decay rate gives other ratios, also refused rather than applied: the
  # message names the ratios held (0.8**3 = 0.512) and those configured (0.9**3 = 0.729).
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.9, n_layers=3)
  with pytest.raises(ValueError, match=r"decay\^3@0\.512.*decay\^3@0\.729"):
    tx.update(random_grads(params, 0), state, params)


def test_old_moments_with_new_ratios_as_the_error_message_says():
  params, grads = bert_like(n_layers=3), random_grads(bert_like(n_layers=3), 0)
  old = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=3)
  state = old.update(grads, old.init(params), params)[1]
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.9, n_layers=3)
  state = optax.tree_utils.tree_set(
      state, ratios=optax.tree_utils.tree_get(tx.init(params), "ratios"))
  updates, _ = tx.update(grads, state, params)
  # Same as a fresh 0.9 optimizer whose Adam state is the old one.
  mu, nu = moments(state)
  fresh_state = optax.tree_utils.tree_set(
      tx.init(params), mu=mu, nu=nu, count=optax.tree_utils.tree_get(state, "count"))
  expected, _ = tx.update(grads, fresh_state, params)
  chex.assert_trees_all_equal(updates, expected)


@pytest.mark.parametrize("zeros", [optax.tree_utils.tree_zeros_like,
                                   lambda s: jax.tree.map(jnp.zeros_like, s)],
                         ids=["tree_zeros_like", "tree_map_zeros_like"])
def test_a_zeroed_state_never_freezes_a_layer_silently(zeros):
  # The library (scale._stored_ratios, as of this writing) reads a zeroed ratio
  # entry as NaN: the next update is NaN, loudly, instead of a layer frozen at ratio 0.
  # The head (ratio 1, not stored) is unaffected.
  params = flat_params()
  tx = optax_ldl.layerwise(optax.sgd(1.0), layerwise_decay=DECAY)
  state = zeros(tx.init(params))
  assert all(np.all(np.asarray(r) == 0.0)
             for r in optax.tree_utils.tree_get(state, "ratios").values())
  updates, _ = jax.jit(tx.update)(grads_at(0), state, params)
  for name, u in names_and_leaves(updates):
    if flat_ratio(name) == 1.0:
      np.testing.assert_allclose(u, -by_name(grads_at(0))[name], rtol=1e-7, err_msg=name)
    else:
      assert np.all(np.isnan(np.asarray(u))), name


def _fused_computations(hlo):
  """``{name: [instruction lines]}`` of an optimized HLO module."""
  out, name = {}, None
  for line in hlo.splitlines():
    head = line.split(" ", 2)
    if name is None and line.rstrip().endswith("{") and not line.startswith(" "):
      name = head[1] if head[0] == "ENTRY" else head[0]
      out[name] = []
    elif name is not None and line.startswith("}"):
      name = None
    elif name is not None:
      out[name].append(line.strip())
  return out


def _kernels_with_literals(hlo, ratios):
  """Computations holding one of ``ratios`` as a literal and computing on arrays."""
  import re

  found = []
  for name, body in _fused_computations(hlo).items():
    literal = any(re.search(rf"constant\({r!r}\)", line) for line in body for r in ratios)
    if literal and any(re.search(r"\[\d", line) for line in body):
      found.append(name)
  return found


def test_layer_ratios_are_operands_of_the_compiled_update_not_constants():
  # Constants would give every layer kernels of its own (compile time grows
  # with depth, see benchmarks/); operands keep the layers' kernels identical.
  # The configured ratios may appear in the program (a zeroed state entry means
  # "the configured ratio"), but only in scalar code, never in a kernel over a leaf.
  params = bert_like(n_layers=4)
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.5, n_layers=4)
  hlo = jax.jit(tx.update).lower(random_grads(params, 0), tx.init(params), params)
  ratios = [0.5 ** k for k in range(1, 6)]
  assert _kernels_with_literals(hlo.compile().as_text(), ratios) == []
  # The check can fail: with the ratios as literals they are in the leaves' kernels.
  literal = optax.partition({"all": optax.scale(0.125)}, jax.tree.map(lambda _: "all", params))
  compiled = jax.jit(literal.update).lower(params, literal.init(params)).compile().as_text()
  assert _kernels_with_literals(compiled, [0.125])


# ------------------------------------------------------------ layerwise(any optimizer)

OPTIMIZERS = {
    "lion": lambda: optax.lion(1e-2, weight_decay=1e-2),
    "adafactor": lambda: optax.adafactor(1e-2),
    "sgd_momentum": lambda: optax.sgd(1e-2, momentum=0.9),
    "lamb": lambda: optax.lamb(1e-2, weight_decay=1e-2),
    "prodigy": lambda: optax.contrib.prodigy(1.0),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_layerwise_update_is_the_inner_update_times_the_layer_ratio(name):
  params = flat_params()
  inner = OPTIMIZERS[name]()
  tx = optax_ldl.layerwise(OPTIMIZERS[name](), layerwise_decay=DECAY)
  inner_state, state = inner.init(params), tx.init(params)
  for step in range(3):  # the inner state advances as the inner optimizer's own.
    expected, inner_state = jax.jit(inner.update)(grads_at(step), inner_state, params)
    updates, state = jax.jit(tx.update)(grads_at(step), state, params)
    seen = set()
    for leaf, u in names_and_leaves(updates):
      ratio = flat_ratio(leaf)  # d**(3 - i) in layer i, d**4 embeddings, 1 the head.
      seen.add(ratio)
      want = ratio * np.asarray(by_name(expected)[leaf])
      # rtol, and an atol at float32 rounding of the leaf's largest entry (momentum
      # cancels to near zero in a few entries, where two programs round differently).
      np.testing.assert_allclose(u, want, rtol=2e-6, atol=1e-6 * np.abs(want).max(),
                                 err_msg=f"{name} step {step} {leaf}")
    assert seen == {DECAY ** 4, DECAY ** 3, DECAY ** 2, DECAY, 1.0}
    assert any(np.any(np.asarray(u) != 0) for u in jax.tree.leaves(updates))


def test_layerwise_makes_the_checks_of_adamwdl():
  params = {"dense_0": {"kernel": jnp.ones((2, 2))}, "dense_1": {"kernel": jnp.ones((2, 2))}}
  with pytest.raises(ValueError, match="no parameter is in a layer"):
    optax_ldl.layerwise(optax.lion(1e-3), layerwise_decay=0.9).init(params)
  with pytest.raises(TypeError, match="inner must be an optax transformation"):
    optax_ldl.layerwise(0.1, layerwise_decay=0.9)  # pyright: ignore[reportArgumentType]


def _array_kernels(hlo):
  """The distinct bodies of the fused computations whose result is an array (not one number)."""
  bodies = re.findall(r"\n(%?fused_computation[^\n]*\{.*?\n\})", hlo, flags=re.S)
  arrays = [b for b in bodies if not re.search(r"ROOT \S+ = \w+\[1?\]", b)]
  return {re.sub(r"[\w.]*\.\d+", "x", b.split("\n", 1)[1]) for b in arrays}


def _depth_kernels(tx, n_layers):
  params = bert_like(n_layers=n_layers)
  opt = tx(n_layers)
  lowered = jax.jit(opt.update).lower(random_grads(params, 0), opt.init(params), params)
  return _array_kernels(lowered.compile().as_text())


def test_every_layer_runs_the_same_kernels():
  # Kernels of their own per layer make compile time grow with depth (benchmarks/): the
  # distinct array kernels of the compiled update must not depend on the number of layers.
  for tx in (lambda n: optax_ldl.adamwdl(1e-3, layerwise_decay=0.5, n_layers=n),
             lambda n: optax_ldl.layerwise(optax.sgd(1e-2, momentum=0.9), layerwise_decay=0.5)):
    assert len(_depth_kernels(tx, 8)) == len(_depth_kernels(tx, 3))
