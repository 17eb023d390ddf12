"""verify: the ratio a built optimizer applies to each leaf, measured and compared with the plan.

Correct wiring passes (adamwdl alone and inside MultiSteps, inject_hyperparams,
apply_if_finite, a warmup from 0, layerwise around another optimizer, stacked leaves,
bfloat16); each broken wiring is caught with exactly its leaves named: a wrapper that
hides leaves, a partition that zeroes trainable leaves, an optimizer on top, a second
layer decay, a wrong n_layers, a custom rule with a wrong ratio. The expected ratios are
written by hand from the tree (3 layers, decay 0.5: the embeddings 0.5**4, layer i
0.5**(3 - i), the head 1).
"""

import ast
import re
from typing import Any

import jax
import jax.numpy as jnp
import optax
import pytest
from helpers import raises_naming

import optax_ldl
from optax_ldl._src.tree_names import natural_key
from optax_ldl._src.verify import verify

DECAY = 0.5
CONFIG: dict[str, Any] = {"learning_rate": 1e-3, "layerwise_decay": DECAY}

# By hand: 3 layers, decay 0.5.
RATIOS = {
    "embed/embedding": 0.0625,
    "layers_0/kernel": 0.125,
    "layers_1/kernel": 0.25,
    "layers_2/kernel": 0.5,
    "layers_2/bias": 0.5,
    "head/kernel": 1.0,
}


def params(dtype=jnp.float32):
  shapes = {"embed": {"embedding": (6, 4)}, "layers_0": {"kernel": (4, 4)},
            "layers_1": {"kernel": (4, 4)}, "layers_2": {"kernel": (4, 4), "bias": (4,)},
            "head": {"kernel": (4, 2)}}
  return jax.tree.map(lambda s: jnp.full(s, 0.3, dtype), shapes,
                      is_leaf=lambda s: isinstance(s, tuple))


def measured(result):
  return {r.path: r.measured for r in result.rows}


def mismatched(tx, expected=None, **kwargs):
  """``{path: measured ratio}`` of the leaves verify finds wrong (returned, not raised)."""
  result = verify(tx, params(), expected, raise_on_mismatch=False, **kwargs)
  assert not result.ok and "NO" in str(result) and "leaves differ from the plan" in str(result)
  return {r.path: r.measured for r in result.mismatches}


def raised(tx, expected=None, **kwargs):
  """The leaves verify's error names, read from its message (and its table's rows)."""
  with pytest.raises(ValueError, match="do not receive their planned lr ratio") as info:
    verify(tx, params(), expected, **kwargs)
  found = re.search(r"ratio[^:]*: (\[.*?\])", str(info.value))
  assert found, info.value
  named = ast.literal_eval(found.group(1))
  table = [line.split()[0] for line in str(info.value).splitlines() if line.endswith(" NO")]
  assert table == named
  return named


def test_adamwdl_passes_with_the_hand_written_ratios():
  result = verify(optax_ldl.adamwdl(**CONFIG), params(), **CONFIG)
  assert result.ok and (result.steps, result.reference_steps) == (1, 1)
  assert measured(result) == pytest.approx(RATIOS, rel=1e-5)
  assert [r.planned for r in result.rows] == [RATIOS[r.path] for r in result.rows]
  assert verify(optax_ldl.adamwdl(**CONFIG), params(), RATIOS, learning_rate=1e-3).ok
  assert "all 6 leaves receive their planned ratio" in str(result)


@pytest.mark.slow  # a few seconds: two compiled updates on 2 cores
@pytest.mark.parametrize("wrap, steps", [
    (lambda tx: optax.MultiSteps(tx, every_k_schedule=3), 3),
    (lambda tx: optax.apply_if_finite(tx, max_consecutive_errors=2), 1),
    (lambda tx: optax.chain(optax.identity(), tx), 1),
])
def test_wrappers_that_keep_the_ratios_pass(wrap, steps):
  result = verify(wrap(optax_ldl.adamwdl(**CONFIG)), params(), **CONFIG)
  assert result.ok and result.steps == steps and result.reference_steps == 1
  assert measured(result) == pytest.approx(RATIOS, rel=1e-5)


@pytest.mark.slow  # a few seconds: two compiled updates on 2 cores
def test_injected_hyperparameters_pass():
  tx = optax.inject_hyperparams(optax_ldl.adamwdl)(learning_rate=1e-3, layerwise_decay=DECAY)
  assert measured(verify(tx, params(), **CONFIG)) == pytest.approx(RATIOS, rel=1e-5)


@pytest.mark.slow  # a few seconds: two compiled updates on 2 cores
def test_a_warmup_from_zero_is_probed_where_the_learning_rate_is_not_zero():
  config = {**CONFIG, "learning_rate": optax.linear_schedule(0.0, 1e-3, 100)}
  result = verify(optax_ldl.adamwdl(**config), params(), **config)
  assert (result.steps, result.reference_steps) == (2, 2)  # lr(0) = 0, lr(1) > 0
  assert measured(result) == pytest.approx(RATIOS, rel=1e-5)


@pytest.mark.slow  # a few seconds: two compiled updates on 2 cores
def test_layerwise_around_another_optimizer_against_its_inner_optimizer():
  tx = optax_ldl.layerwise(optax.lion(1e-4), layerwise_decay=DECAY)
  result = verify(tx, params(), optax_ldl.LayerDecay(DECAY), reference=optax.lion(1e-4))
  assert measured(result) == pytest.approx(RATIOS, rel=1e-5)


@pytest.mark.slow  # a few seconds: two compiled updates on 2 cores
def test_stacked_leaves_are_measured_per_slice():
  p = {"embed": jnp.ones((5, 4)), "layers": {"w": jnp.ones((3, 4, 4))},
       "head": jnp.ones((4, 2)), "step": jnp.array(3)}
  result = verify(optax_ldl.adamwdl(**CONFIG), p, **CONFIG)
  assert measured(result) == {"embed": pytest.approx(0.0625), "head": pytest.approx(1.0),
                              "layers/w": pytest.approx((0.125, 0.25, 0.5))}
  hand = {"embed": 0.0625, "layers/w": (0.125, 0.25, 0.25), "head": 1.0}  # slice 2 wrong
  with pytest.raises(ValueError, match=r"\['layers/w'\]"):
    verify(optax_ldl.adamwdl(**CONFIG), p, hand, learning_rate=1e-3)


@pytest.mark.slow  # a few seconds: two compiled updates on 2 cores
def test_bfloat16_params_pass_with_a_looser_tolerance():
  config = {**CONFIG, "multi_precision": True}
  result = verify(optax_ldl.adamwdl(**config), params(jnp.bfloat16), **config)
  assert result.ok and result.rtol == 2e-2


@pytest.mark.slow  # a few seconds: two compiled updates on 2 cores
def test_the_update_is_traced_once_and_called_until_it_arrives():
  config = {**CONFIG, "learning_rate": optax.linear_schedule(0.0, 1e-3, 100)}
  inner, traces = optax_ldl.adamwdl(**config), []

  def update(updates, state, p=None, **extra):
    del extra
    traces.append(1)
    return inner.update(updates, state, p)

  tx = optax.GradientTransformation(inner.init, update)
  assert verify(tx, params(), **config).steps == 2
  assert len(traces) == 1


def test_a_mask_that_passes_the_frozen_head_its_raw_gradient_is_caught():
  # optax.masked leaves the masked-out updates as they came: the gradient, not zero. The
  # probe's gradient is +-1 and the reference's update -lr * sign: the ratio reads -1 / lr.
  trainable = {**jax.tree.map(lambda _: True, params()), "head": {"kernel": False}}
  tx = optax.masked(optax_ldl.adamwdl(**CONFIG, layers=optax_ldl.path_layers(params())),
                    trainable)
  frozen_head = {**RATIOS, "head/kernel": 0.0}
  assert raised(tx, frozen_head, learning_rate=1e-3) == ["head/kernel"]
  got = mismatched(tx, frozen_head, learning_rate=1e-3)
  assert list(got) == ["head/kernel"] and got["head/kernel"] == pytest.approx(-1000, rel=1e-3)


@pytest.mark.slow  # a few seconds: two compiled updates on 2 cores
def test_a_partition_that_zeroes_trainable_leaves_is_caught():
  plan = optax_ldl.path_layers(params())
  labels = {**jax.tree.map(lambda _: "train", params()), "layers_2": {"kernel": "train",
                                                                      "bias": "frozen"}}
  tx = optax.partition({"train": optax_ldl.adamwdl(**CONFIG, layers=plan),
                        "frozen": optax.set_to_zero()}, labels)
  assert mismatched(tx, **CONFIG) == {"layers_2/bias": 0.0}


def test_an_optimizer_applied_on_top_is_caught():
  assert raised(optax.chain(optax_ldl.adamwdl(**CONFIG), optax.scale(2.0)), **CONFIG) == sorted(
      RATIOS, key=natural_key)
  got = mismatched(optax.chain(optax_ldl.adamwdl(**CONFIG), optax.scale(2.0)), **CONFIG)
  assert got == pytest.approx({k: 2 * v for k, v in RATIOS.items()}, rel=1e-5)


@pytest.mark.slow  # a few seconds: two compiled updates on 2 cores
def test_a_second_layer_decay_is_caught():
  tx = optax_ldl.layerwise(optax_ldl.adamwdl(**CONFIG), layerwise_decay=DECAY)
  got = mismatched(tx, **CONFIG)
  assert got == pytest.approx({k: v * v for k, v in RATIOS.items() if v != 1.0}, rel=1e-5)


def test_a_wrong_n_layers_is_caught():
  with pytest.warns(UserWarning, match="n_layers=4"):
    got = mismatched(optax_ldl.adamwdl(**CONFIG, n_layers=4), RATIOS, learning_rate=1e-3)
  assert got == pytest.approx({k: v / 2 for k, v in RATIOS.items() if v != 1.0}, rel=1e-5)


@pytest.mark.slow  # a few seconds: two compiled updates on 2 cores
def test_a_custom_rule_with_a_wrong_ratio_is_caught():
  exponents = {"embed": 4, "layers_0": 3, "layers_1": 3, "layers_2": 1}  # layer 1: 3, not 2

  def rule(decay, name_dict, n_layers, param):
    del name_dict, n_layers
    return decay ** exponents.get(param.name.split("/")[0], 0)

  tx = optax_ldl.adamwdl(**CONFIG, set_param_lr_fun=rule, n_layers=3)
  assert mismatched(tx, RATIOS, learning_rate=1e-3) == {"layers_1/kernel": 0.125}


def test_a_learning_rate_of_zero_cannot_be_measured():
  with pytest.raises(ValueError, match="reference cannot measure 6 leaves.*max_steps=4"):
    verify(optax_ldl.adamwdl(0.0), params(), learning_rate=0.0, max_steps=4)


def test_bad_arguments_are_named():
  tx = optax_ldl.adamwdl(**CONFIG)
  raises_naming("expected", verify, tx, params(), {**RATIOS, "nope": 1.0}, **CONFIG)
  raises_naming("expected", verify, tx, params(), {k: v for k, v in RATIOS.items()
                                                   if k != "head/kernel"}, **CONFIG)
  raises_naming("expected", verify, tx, params(), {**RATIOS, "head/kernel": -1.0}, **CONFIG)
  raises_naming("expected", verify, tx, params(), "plan", **CONFIG)
  raises_naming("reference", verify, tx, params(), RATIOS)
  raises_naming("reference", verify, tx, params(), reference="adam")
  raises_naming("rtol", verify, tx, params(), rtol=2.0, **CONFIG)
  raises_naming("max_steps", verify, tx, params(), max_steps=0, **CONFIG)
  raises_naming("raise_on_mismatch", verify, tx, params(), raise_on_mismatch="no", **CONFIG)
  raises_naming("tx", verify, "adam", params(), **CONFIG)
  with pytest.raises(TypeError, match="layerwise_decay"):
    verify(tx, params(), RATIOS, **CONFIG)  # the plan given twice
