"""``floor=`` (the embeddings' ratio, the decay following per stack) and stage-wise grouping.

Ratios are powers of 1/2 (exact in float32), written by hand, read from the plan, from
``describe`` and from the updates of ``layerwise(optax.sgd(1.0))`` with unit gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fixtures import path_name

import optax_ldl

SEVEN = {"embed": jnp.ones(1), "head": jnp.ones(1),
         **{f"layers_{i}": jnp.ones(1) for i in range(7)}}


def ratios(params, **kwargs):
  """{leaf: ratio} from the plan, checked equal to describe's and to the sgd updates'."""
  plan = optax_ldl.LayerDecay(**kwargs).plan(params)
  got = {name: plan.ratio(name) for name in plan.labels}
  shown = {r.path: r.lr_ratio for r in optax_ldl.describe(params, **kwargs).rows}
  assert shown == got
  tx = optax_ldl.layerwise(optax.sgd(1.0), **kwargs)
  updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
  applied = {path_name(p): -np.ravel(u) for p, u in jax.tree_util.tree_leaves_with_path(updates)}
  for name, r in got.items():
    want = np.asarray(r if isinstance(r, tuple) else [r] * applied[name].size, np.float32)
    assert np.array_equal(applied[name], want), name
  return got


def test_floor_gives_the_embeddings_that_ratio_and_the_decay_its_root():
  # 7 layers, floor 2^-8: d = floor ** (1 / 8) = 1/2.
  assert ratios(SEVEN, floor=2.0**-8) == {
      "embed": 2.0**-8, "head": 1.0, **{f"layers_{i}": 2.0 ** (i - 7) for i in range(7)}}


@pytest.mark.parametrize("depth", [12, 24])
def test_a_floor_recipe_carries_across_depths(depth):
  params = {"embed": jnp.ones(1), "head": jnp.ones(1),
            **{f"layers_{i}": jnp.ones(1) for i in range(depth)}}
  got = optax_ldl.LayerDecay(floor=0.1).plan(params)
  assert got.ratio("embed") == pytest.approx(0.1, rel=1e-12)
  assert got.ratio(f"layers_{depth - 1}") == pytest.approx(0.1 ** (1 / (depth + 1)), rel=1e-12)


def test_floor_follows_each_stack_depth():
  # enc: 3 layers, d = (1/16) ** (1/4) = 1/2; dec: 1 layer, d = (1/16) ** (1/2) = 1/4.
  P = optax_ldl.Placement  # noqa: N806
  layers = optax_ldl.LayerMap.build({
      "enc/embed": P("embedding", "enc"), "dec/embed": P("embedding", "dec"),
      **{f"enc/l{i}": P("layer", "enc", i) for i in range(3)},
      "dec/l0": P("layer", "dec", 0), "head": P("head")}, {"enc": 3, "dec": 1})
  params = {"enc": {"embed": jnp.ones(1), **{f"l{i}": jnp.ones(1) for i in range(3)}},
            "dec": {"embed": jnp.ones(1), "l0": jnp.ones(1)}, "head": jnp.ones(1)}
  assert ratios(params, floor=1 / 16, layers=layers) == {
      "enc/embed": 1 / 16, "enc/l0": 1 / 8, "enc/l1": 1 / 4, "enc/l2": 1 / 2,
      "dec/embed": 1 / 16, "dec/l0": 1 / 4, "head": 1.0}


def test_stages_of_k_layers_from_the_bottom():
  # 7 layers in chunks of 3: (0, 1, 2), (3, 4, 5), (6): 3 stages, embeddings at depth 4.
  assert ratios(SEVEN, layerwise_decay=0.5, stages=3) == {
      "embed": 1 / 16, "head": 1.0, "layers_0": 1 / 8, "layers_1": 1 / 8, "layers_2": 1 / 8,
      "layers_3": 1 / 4, "layers_4": 1 / 4, "layers_5": 1 / 4, "layers_6": 1 / 2}


def test_stages_given_as_sizes_and_with_a_floor():
  want = {"embed": 1 / 16, "head": 1.0, "layers_0": 1 / 8, "layers_1": 1 / 8,
          "layers_2": 1 / 4, "layers_3": 1 / 4, "layers_4": 1 / 2, "layers_5": 1 / 2,
          "layers_6": 1 / 2}
  assert ratios(SEVEN, layerwise_decay=0.5, stages=(2, 2, 3)) == want
  # 3 stages: floor 1/16 gives d = (1/16) ** (1/4) = 1/2, the same ratios.
  assert ratios(SEVEN, floor=1 / 16, stages=(2, 2, 3)) == want


def test_stages_on_stacked_layers_give_each_slice_its_stage():
  params = {"embed": jnp.ones(1), "layers": {"w": jnp.ones((4, 1))}, "head": jnp.ones(1)}
  plan = optax_ldl.LayerDecay(layerwise_decay=0.5, stages=2, stacked={"layers": 0}).plan(params)
  assert plan.ratio("layers/w") == (0.25, 0.25, 0.5, 0.5)
  assert plan.ratio("embed") == 0.125


def test_the_state_key_names_floor_and_stages():
  tx = optax_ldl.adamwdl(floor=0.25, stages=2)
  (key,) = optax.tree_utils.tree_get(tx.init(SEVEN), "ratios")
  assert "floor@0.25" in key and "stages@2" in key
