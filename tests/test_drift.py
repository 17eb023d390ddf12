"""layer_drift: relative change per layer group, against hand-computed values."""

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest

from optax_ldl._src.drift import Drift, GroupDrift, layer_drift


def _tree(n_layers=2):
  tree = {
      "embeddings": {"embedding": jnp.ones((4, 2))},  # norm sqrt(8)
      "head": {"kernel": jnp.ones((2, 1))},  # norm sqrt(2)
  }
  for i in range(n_layers):
    tree[f"layers_{i}"] = {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}  # norm 2
  return tree


def test_hand_computed_groups():
  p0 = _tree()
  p1 = {
      **p0,
      "layers_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.array([3.0, 4.0])},  # |Δ| 5, |θ0| 2
      "layers_1": {"kernel": 1.5 * jnp.ones((2, 2)), "bias": jnp.zeros(2)},  # |Δ| 1, |θ0| 2
      "head": {"kernel": -jnp.ones((2, 1))},  # |Δ| 2 sqrt(2), |θ0| sqrt(2)
  }
  drift = layer_drift(p0, p1, layerwise_decay=0.5, n_layers=2)
  assert isinstance(drift, Drift)
  assert [g.layer for g in drift.groups] == ["embedding", 0, 1, "head"]
  assert drift.to_dict() == pytest.approx({"embedding": 0.0, 0: 2.5, 1: 0.5, "head": 2.0})
  g0 = drift[0]
  assert isinstance(g0, GroupDrift)
  assert (g0.leaves, g0.params, g0.lr_ratio) == (2, 6, 0.25)
  assert g0.norm0 == pytest.approx(2.0) and g0.delta == pytest.approx(5.0)
  assert drift["embedding"].lr_ratio == pytest.approx(0.125)
  assert drift["head"].lr_ratio == 1.0 and drift["head"].params == 2
  assert len(drift) == 4 and [g.layer for g in drift] == ["embedding", 0, 1, "head"]


def test_table():
  p0 = _tree()
  p1 = {**p0, "layers_1": {"kernel": 1.5 * jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
  lines = str(layer_drift(p0, p1, layerwise_decay=0.5, n_layers=2)).splitlines()
  assert lines[0].split() == ["group", "leaves", "params", "lr", "ratio", "relative", "drift"]
  assert lines[1].startswith("-----")
  assert lines[2].split() == ["embedding", "1", "8", "0.125", "0"]
  assert lines[4].split() == ["1", "2", "6", "0.5", "0.5"]
  assert lines[5].split() == ["head", "1", "2", "1", "0"]


def test_natural_order_of_layers():
  p0 = _tree(n_layers=12)  # the tree's own order is layers_0, layers_1, layers_10, layers_11, ...
  # layer i's kernel (norm 2) moves by (i + 1) / 10 in every entry: |Δ| = 2 (i + 1) / 10.
  p1 = {**p0, **{f"layers_{i}": {"kernel": jnp.full((2, 2), 1 + (i + 1) / 10),
                                 "bias": jnp.zeros(2)} for i in range(12)}}
  drift = layer_drift(p0, p1, layerwise_decay=0.9, n_layers=12)
  assert [g.layer for g in drift.groups] == ["embedding", *range(12), "head"]
  np.testing.assert_allclose([drift[i].drift for i in range(12)],
                             [(i + 1) / 10 for i in range(12)], rtol=1e-6)
  assert drift["embedding"].drift == 0.0 and drift["head"].drift == 0.0
  # lr ratios follow decay ** (L - i), bottom to top.
  ratios = [drift[i].lr_ratio for i in range(12)]
  np.testing.assert_allclose(ratios, [0.9 ** (12 - i) for i in range(12)], rtol=1e-6)


@pytest.mark.parametrize("axis", [0, 1])
def test_stacked_leaf_drift_per_slice(axis):
  # A scanned stack of 3 layers: slice j of every leaf is layer j.
  kernel = jnp.ones((3, 2, 2)) if axis == 0 else jnp.ones((2, 3, 2))
  scale = jnp.array([1.0, 2.0, 4.0])
  scale = scale[:, None, None] if axis == 0 else scale[None, :, None]
  p0 = {"embeddings": {"embedding": jnp.ones((4, 2))}, "layers": {"kernel": kernel},
        "head": {"kernel": jnp.ones((2, 1))}}
  p1 = {**p0, "layers": {"kernel": kernel * scale}}
  drift = layer_drift(p0, p1, layerwise_decay=0.5, n_layers=3, stacked={"layers": axis})
  assert [g.layer for g in drift.groups] == ["embedding", 0, 1, 2, "head"]
  assert drift.to_dict() == pytest.approx(
      {"embedding": 0.0, 0: 0.0, 1: 1.0, 2: 3.0, "head": 0.0})
  assert [drift[j].lr_ratio for j in range(3)] == pytest.approx([0.125, 0.25, 0.5])
  assert all(drift[j].params == 4 and drift[j].leaves == 1 for j in range(3))


def test_integer_leaves_are_left_out_and_bfloat16_is_measured_in_float32():
  p0 = {"layers_0": {"kernel": jnp.ones((2, 2), jnp.bfloat16)},
        "step": jnp.zeros((), jnp.int32)}
  p1 = {"layers_0": {"kernel": jnp.full((2, 2), 1.25, jnp.bfloat16)},
        "step": jnp.ones((), jnp.int32)}
  drift = layer_drift(p0, p1, layerwise_decay=0.5, n_layers=1, multi_precision=True)
  assert [g.layer for g in drift.groups] == [0]
  assert drift[0].drift == pytest.approx(0.25)


def test_zero_starting_norm():
  p0 = {"layers_0": {"bias": jnp.zeros(2)}, "layers_1": {"bias": jnp.zeros(2)}}
  p1 = {"layers_0": {"bias": jnp.zeros(2)}, "layers_1": {"bias": jnp.ones(2)}}
  drift = layer_drift(p0, p1, n_layers=2)
  assert drift[0].drift == 0.0 and math.isinf(drift[1].drift)


def test_result_is_frozen_and_lookup_errors_name_the_groups():
  drift = layer_drift(_tree(), _tree(), n_layers=2)
  with pytest.raises(dataclasses.FrozenInstanceError):
    drift.groups = ()  # type: ignore[misc]
  with pytest.raises(KeyError, match="no layer group 7.*'embedding', 0, 1, 'head'"):
    drift[7]


def test_mismatched_structure():
  p0 = _tree()
  p1 = {k: v for k, v in p0.items() if k != "head"}
  with pytest.raises(ValueError, match=r"same tree structure.*only in params0: \['head/kernel'\]"):
    layer_drift(p0, p1, n_layers=2)


def test_mismatched_shape():
  p0 = _tree()
  p1 = {**p0, "head": {"kernel": jnp.ones((2, 3))}}
  with pytest.raises(ValueError, match=r"'head/kernel' has shape \(2, 1\) in params0 but \(2, 3\)"):
    layer_drift(p0, p1, n_layers=2)


def test_mismatched_dtype_kind():
  p0 = _tree()
  p1 = {**p0, "head": {"kernel": jnp.ones((2, 1), jnp.int32)}}
  with pytest.raises(ValueError, match="'head/kernel' is float32 in params0 but int32"):
    layer_drift(p0, p1, n_layers=2)


def test_describe_arguments_are_checked():
  with pytest.raises(TypeError, match="n_layer"):
    layer_drift(_tree(), _tree(), n_layer=2)


def test_two_stacks_are_grouped_per_stack():
  p0 = {"encoder": {"embed": jnp.ones(2), **{f"layers_{i}": {"w": jnp.ones(2)} for i in range(2)}},
        "decoder": {"embed": jnp.ones(2), **{f"layers_{i}": {"w": jnp.ones(2)} for i in range(3)}},
        "head": jnp.ones(2)}
  p1 = {**p0, "head": 2 * p0["head"]}
  drift = layer_drift(p0, p1, layerwise_decay=0.5)
  # Each stack's embedding, then its layers, named "<stack>:<group>"; the head moved by 1.
  assert [g.layer for g in drift] == [
      "decoder/layers:embedding", "decoder/layers:0", "decoder/layers:1", "decoder/layers:2",
      "encoder/layers:embedding", "encoder/layers:0", "encoder/layers:1", "head"]
  assert drift["head"].drift == 1.0 and drift["encoder/layers:1"].drift == 0.0
