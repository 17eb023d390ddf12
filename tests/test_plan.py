"""The layer plan: computed once from the whole model, applied to any part of it.

Each test of a defect below failed before the plan was the one currency (issue 15); the
expected ratios are written by hand from the tree: layer ``i`` of ``L`` gets ``d**(L - i)``,
the embeddings ``d**(L + 1)``, the head 1.
"""

from __future__ import annotations

import pickle
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fixtures import bert_like, bert_ratio, by_name

import optax_ldl
from optax_ldl import Param, Placement

D = 0.5


def sgd_layerwise(**kw):
  return optax_ldl.layerwise(optax.sgd(1.0), **kw)


def ratios_of(tx, params, grads=None):
  """``{path: -update / grad}`` after one SGD step (lr 1): the ratio each leaf received."""
  grads = jax.tree.map(jnp.ones_like, params) if grads is None else grads
  updates, _ = tx.update(grads, tx.init(params), params)
  return {k: float(-np.asarray(v).reshape(-1)[0]) for k, v in by_name(updates).items()}


# ---- Defects named in the issue, each failing before the redesign. ----------------------------

@pytest.mark.parametrize("make, owner", [
    (lambda: optax_ldl.adamwdl(layerwise_decay=2.0), "adamwdl"),
    (lambda: optax_ldl.AdamWDL(layerwise_decay=2.0), "AdamWDL"),
    (lambda: optax_ldl.layerwise(optax.sgd(1.0), layerwise_decay=2.0), "layerwise"),
    (lambda: optax_ldl.describe({"w": jnp.ones(1)}, layerwise_decay=2.0), "describe"),
])
def test_errors_name_the_function_the_user_called(make, owner):
  with pytest.raises(ValueError) as e:
    make()
  assert str(e.value).startswith(f"{owner}: layerwise_decay"), str(e.value)
  assert "2.0" in str(e.value) and "(0, 1]" in str(e.value)


def test_custom_rule_with_default_n_layers_says_what_to_pass():
  def rule(decay, name_dict, n_layers, param):
    return decay ** (n_layers + 1) if "embed" in param.name else 1.0

  tx = optax_ldl.adamwdl(layerwise_decay=0.5, set_param_lr_fun=rule)
  with pytest.raises(ValueError,
                     match=r"adamwdl: set_param_lr_fun failed .*n_layers=None.*pass n_layers="):
    tx.init({"embed": jnp.ones(2), "head": jnp.ones(2)})


def test_tree_map_params_after_init_on_a_second_tree():
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.5)
  a = bert_like(3)
  b = bert_like(2)
  state_a = tx.init(a)
  tx.init(b)  # a second tree: the state of the first must still map.
  mapped = optax.tree_utils.tree_map_params(tx, lambda p: p * 0, state_a)
  assert jax.tree.structure(mapped) == jax.tree.structure(state_a)
  mu = optax.tree_utils.tree_get(mapped, "mu")
  assert jax.tree.structure(mu) == jax.tree.structure(a)


def test_none_gradient_for_a_leaf_names_updates():
  params = bert_like(2)
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.5)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  grads["pooler"]["kernel"] = None
  with pytest.raises(ValueError, match=r"adamwdl: updates .*params' tree structure.*pooler/kernel"):
    tx.update(grads, state, params)


def test_adamwdl_parameters_list_of_param_says_what_it_accepts():
  with pytest.raises(TypeError,
                     match=r"AdamWDL: parameters must be the parameter tree.*Param objects"):
    optax_ldl.AdamWDL(parameters=[Param("encoder.layers.0.w", shape=(2,))], n_layers=1)


def test_placement_accepts_numpy_scalars():
  assert Placement("ratio", ratio=np.float32(0.5)).ratio == 0.5
  assert Placement("layer", layer=np.int64(1)).layer == 1
  assert Placement("layer", layer=jnp.int32(2), axis=np.int64(0)).axis == 0
  assert isinstance(Placement("layer", layer=np.int64(1)).layer, int)
  with pytest.raises(ValueError, match=r"got -1"):
    Placement("layer", layer=np.int64(-1))


@pytest.mark.parametrize("arg, value", [("layerwise_decay", 1.5), ("n_layers", 0)])
def test_injected_out_of_range_hyperparameter_is_loud(arg, value):
  params = bert_like(3)
  tx = optax.inject_hyperparams(optax_ldl.adamwdl)(
      learning_rate=1e-3, layerwise_decay=0.5, n_layers=3)
  state = tx.init(params)
  state.hyperparams[arg] = jnp.asarray(value, state.hyperparams[arg].dtype)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = jax.jit(tx.update)(grads, state, params)
  bad = [k for k, u in by_name(updates).items() if not np.all(np.isfinite(u))]
  # Every decayed leaf is NaN (loud, like a zeroed state), never trained with a ratio above 1.
  assert set(bad) == {k for k in by_name(params) if bert_ratio(k) != 1.0}, bad


def test_apply_if_finite_multi_precision_bf16_params_float32_grads():
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), bert_like(2))
  tx = optax.apply_if_finite(
      optax_ldl.AdamWDL(learning_rate=1e-2, layerwise_decay=0.5, n_layers=2,
                        multi_precision=True), max_consecutive_errors=3)
  state = tx.init(params)
  grads = jax.tree.map(lambda p: jnp.ones(p.shape, jnp.float32), params)
  updates, state = jax.jit(tx.update)(grads, state, params)
  # optax's convention: the updates have the gradients' dtype; applied, the params keep theirs.
  assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(updates))
  assert int(state.notfinite_count) == 0
  new = optax.apply_updates(params, updates)
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(new))
  bad = jax.tree.map(lambda g: g * jnp.nan, grads)  # a non-finite step is skipped.
  _, state = jax.jit(tx.update)(bad, state, params)
  assert int(state.notfinite_count) == 1


def test_custom_rule_delegating_to_layerwise_lr_decay_decays_a_stacked_leaf():
  params = {"embed": jnp.ones((3, 2)), "blocks": {"w": jnp.ones((4, 2, 2))}, "head": jnp.ones(2)}

  def rule(decay, name_dict, n_layers, param):
    return optax_ldl.layerwise_lr_decay(decay, name_dict, n_layers, param)

  grads = jax.tree.map(jnp.ones_like, params)
  expected = np.array([D**4, D**3, D**2, D**1])  # slice j is layer j of 4.
  for kw in ({}, {"rule": rule}):
    tx = sgd_layerwise(layerwise_decay=D, n_layers=4, **kw)
    u, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(-u["blocks"]["w"][:, 0, 0], expected, rtol=1e-6, err_msg=str(kw))
    np.testing.assert_allclose(-u["embed"][0, 0], D**5, rtol=1e-6)


# ---- The plan belongs to the model. -------------------------------------------------------------

def bert6():
  return bert_like(6)


def expected6(name):
  return bert_ratio(name, n_layers=6, decay=D)


def frozen_top_labels(params):
  """'frozen' for encoder layer 5 (the top layer) and the classifier, 'train' elsewhere."""
  def label(path, _):
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    return "frozen" if name.startswith(("encoder/layers_5", "classifier")) else "train"
  return jax.tree_util.tree_map_with_path(label, params)


def test_partition_freezing_the_top_layer_with_a_plan_keeps_full_model_ratios():
  params = bert6()
  plan = optax_ldl.path_layers(params)
  tx = optax.partition({"train": sgd_layerwise(layerwise_decay=D, layers=plan),
                        "frozen": optax.set_to_zero()}, frozen_top_labels(params))
  got = ratios_of(tx, params)
  for name, r in got.items():
    want = 0.0 if name.startswith(("encoder/layers_5", "classifier")) else expected6(name)
    assert r == pytest.approx(want, rel=1e-6), name
  # by hand: the top trained layer is layer 4 of 6, at d**2; the embeddings at d**7.
  assert got["encoder/layers_4/attention/kernel"] == pytest.approx(D**2)
  assert got["embeddings/word_embeddings/embedding"] == pytest.approx(D**7)


def test_masked_freezing_the_top_layer_with_a_plan_keeps_full_model_ratios():
  params = bert6()
  mask = jax.tree.map(lambda lab: lab == "train", frozen_top_labels(params))
  tx = optax.masked(sgd_layerwise(layerwise_decay=D, layers=optax_ldl.path_layers(params)), mask)
  got = ratios_of(tx, params)
  for name, r in got.items():
    if not name.startswith(("encoder/layers_5", "classifier")):
      assert r == pytest.approx(expected6(name), rel=1e-6), name


@pytest.mark.parametrize("wrap", ["partition", "masked"])
def test_a_partial_tree_without_a_plan_is_refused_with_the_fix(wrap):
  params = bert6()
  inner = sgd_layerwise(layerwise_decay=D)
  if wrap == "partition":
    tx = optax.partition({"train": inner, "frozen": optax.set_to_zero()},
                         frozen_top_labels(params))
  else:
    tx = optax.masked(inner, jax.tree.map(lambda lab: lab == "train", frozen_top_labels(params)))
  with pytest.raises(ValueError) as e:
    tx.init(params)
  text = str(e.value)
  assert "layers=optax_ldl.path_layers(params)" in text
  assert "encoder/layers_5" in text  # a leaf it cannot see is named.
  assert "n_layers=5" not in text  # never advise the visible depth.


def test_adapters_on_some_layers_get_their_base_layer_ratio():
  params = bert6()
  for i in (1, 4):  # LoRA adapters on two layers only.
    params["encoder"][f"layers_{i}"]["attention"]["lora_a"] = jnp.ones((4, 2))
    params["encoder"][f"layers_{i}"]["attention"]["lora_b"] = jnp.ones((2, 4))
  plan = optax_ldl.path_layers(params)
  adapters = {"encoder": {f"layers_{i}": {"attention": {
      "lora_a": params["encoder"][f"layers_{i}"]["attention"]["lora_a"],
      "lora_b": params["encoder"][f"layers_{i}"]["attention"]["lora_b"]}} for i in (1, 4)}}
  got = ratios_of(sgd_layerwise(layerwise_decay=D, layers=plan), adapters)
  # by hand: layer 1 of 6 -> d**5, layer 4 of 6 -> d**2 (not the depth 2 the adapters show).
  assert got == pytest.approx({
      "encoder/layers_1/attention/lora_a": D**5, "encoder/layers_1/attention/lora_b": D**5,
      "encoder/layers_4/attention/lora_a": D**2, "encoder/layers_4/attention/lora_b": D**2})


def test_nnx_optimizer_wrt_filter_with_the_model_plan():
  nnx = pytest.importorskip("flax.nnx")

  class Block(nnx.Module):
    def __init__(self, rngs):
      self.linear = nnx.Linear(4, 4, rngs=rngs)

  class Model(nnx.Module):
    def __init__(self, rngs):
      self.embed = nnx.Embed(10, 4, rngs=rngs)
      self.layers = nnx.List([Block(rngs) for _ in range(4)])
      self.head = nnx.Linear(4, 2, rngs=rngs)

  model = Model(nnx.Rngs(0))
  plan = optax_ldl.path_layers(nnx.state(model, nnx.Param))
  # Train layers 2 and 3 only (the bottom is frozen): the top trained layer is layer 3 of 4.
  wrt = nnx.All(nnx.Param, nnx.PathContains("layers"),
                nnx.Any(nnx.PathContains(2), nnx.PathContains(3)))
  tx = sgd_layerwise(layerwise_decay=D, layers=plan)
  opt = nnx.Optimizer(model, tx, wrt=wrt)
  before = {k: np.array(v) for k, v in by_name(nnx.state(model, nnx.Param)).items()}
  grads = jax.tree.map(jnp.ones_like, nnx.state(model, wrt))
  opt.update(model, grads)
  after = nnx.state(model, nnx.Param)
  moved = {k: float(before[k].reshape(-1)[0] - np.asarray(v).reshape(-1)[0])
           for k, v in by_name(after).items()}
  for k, v in moved.items():
    want = D ** (4 - 2) if "layers/2/" in k else D ** (4 - 3) if "layers/3/" in k else 0.0
    assert v == pytest.approx(want, rel=1e-6), k


# ---- One plan, computed once. -------------------------------------------------------------------

def test_describe_and_layer_drift_compute_the_plan_once(monkeypatch):
  from optax_ldl._src import layer_decay

  calls = []
  real = layer_decay.LayerDecay._compute_layer_map

  def counting(self, tree, owner):
    calls.append(1)
    return real(self, tree, owner)

  monkeypatch.setattr(layer_decay.LayerDecay, "_compute_layer_map", counting)
  params = bert_like(3)
  optax_ldl.describe(params, layerwise_decay=D)
  assert len(calls) == 1
  calls.clear()
  optax_ldl.layer_drift(params, params, layerwise_decay=D)
  assert len(calls) == 1


def test_describe_rows_carry_the_placement_not_a_label():
  rows = {r.path: r for r in optax_ldl.describe(bert_like(3), layerwise_decay=D).rows}
  assert rows["encoder/layers_1/attention/kernel"].placement == Placement("layer", layer=1)
  assert rows["embeddings/word_embeddings/embedding"].placement == Placement("embedding")
  assert rows["classifier/bias"].placement == Placement("head")
  assert all(isinstance(r.layer, str) for r in rows.values())


def test_plan_pickles_and_applies_to_a_subtree():
  params = bert6()
  plan = pickle.loads(pickle.dumps(optax_ldl.path_layers(params)))
  sub = {"encoder": {"layers_2": params["encoder"]["layers_2"]}}
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    got = ratios_of(sgd_layerwise(layerwise_decay=D, layers=plan), sub)
  assert got == pytest.approx({"encoder/layers_2/attention/kernel": D**4,
                               "encoder/layers_2/attention/bias": D**4})


def test_integer_leaves_are_not_taken_for_a_hidden_part_of_the_model():
  params = {**bert_like(3), "step": jnp.zeros((), jnp.int32)}
  tx = sgd_layerwise(layerwise_decay=D)
  got = ratios_of(tx, {k: v for k, v in params.items() if k != "step"})
  state = tx.init(params)  # no "part of the model" error: the int leaf is just not trained.
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
  assert int(updates["step"]) == 0
  assert -float(updates["encoder"]["layers_0"]["attention"]["kernel"][0, 0]) == pytest.approx(
      got["encoder/layers_0/attention/kernel"]) == pytest.approx(D**3)


def test_describe_names_itself_when_the_path_rule_refuses():
  # A tree the rule cannot place: the error names the function the user called.
  params = {"layers_0": {"w": jnp.ones(2)}, "layers_1": {"w": jnp.ones(2)},
            "out": {"w": jnp.ones(2)}}
  with pytest.raises(optax_ldl.LayerRuleError, match=r"^describe: "):
    optax_ldl.describe(params, layerwise_decay=0.5)
  with pytest.raises(optax_ldl.LayerRuleError, match=r"^adamwdl: "):
    optax_ldl.adamwdl(1e-3, layerwise_decay=0.5).init(params)
