"""Weight decay per group: multipliers as data, and decay scaled by the layer ratio or not.

With ``b1 = b2 = 0`` and a huge ``eps`` Adam's step is 0, so each update is the weight
decay term alone: ``-lr * wd * c * p`` times the layer ratio (Paddle's semantics) or not
(the base rate, big_vision's). Ratios are powers of 1/2; values written by hand.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import optax_ldl

PARAMS = {"embed": jnp.ones(1), "head": jnp.ones(1), "layers_1": {"w": jnp.ones(1)},
          "layers_0": {"w": jnp.ones(1), "bias": jnp.ones(1),
                       "LayerNorm_0": {"scale": jnp.ones(1)}}}
MULTS = [("bias", 0.0), ("norm", 0.5), ("embedding", 2.0), (1, 3.0)]


def decay_terms(params=PARAMS, **kwargs):
  tx = optax_ldl.adamwdl(1.0, b1=0.0, b2=0.0, eps=1e30, weight_decay=0.1, layerwise_decay=0.5,
                         **kwargs)
  zeros = jax.tree.map(jnp.zeros_like, params)
  eager, _ = tx.update(zeros, tx.init(params), params)
  jitted, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), eager, jitted))
  return jax.tree.map(lambda x: (-np.asarray(x, np.float64)).round(6).tolist(), eager)


def test_multipliers_scaled_by_the_layer_ratio_paddles_semantics():
  # embed 0.1*2*(1/8); layers_0/w 0.1*(1/4), bias 0, norm 0.1*0.5*(1/4); layers_1 0.1*3*(1/2).
  assert decay_terms(weight_decay_mults=MULTS) == {
      "embed": [0.025], "head": [0.1], "layers_1": {"w": [0.15]},
      "layers_0": {"w": [0.025], "bias": [0.0], "LayerNorm_0": {"scale": [0.0125]}}}


def test_multipliers_at_the_base_rate_big_visions_semantics():
  assert decay_terms(weight_decay_mults=MULTS, weight_decay_at_base_rate=True) == {
      "embed": [0.2], "head": [0.1], "layers_1": {"w": [0.3]},
      "layers_0": {"w": [0.1], "bias": [0.0], "LayerNorm_0": {"scale": [0.05]}}}


def test_without_multipliers_the_default_is_optaxs_add_decayed_weights():
  assert decay_terms() == decay_terms(weight_decay_mults=[])
  assert decay_terms()["layers_0"]["w"] == [0.025]


def test_the_base_rate_still_stops_at_a_frozen_layer():
  got = decay_terms(weight_decay_at_base_rate=True, layer_schedule=optax_ldl.freeze(0))
  assert got["layers_0"] == {"w": [0.0], "bias": [0.0], "LayerNorm_0": {"scale": [0.0]}}
  assert got["layers_1"] == {"w": [0.1]}


def test_stacked_layers_get_a_multiplier_per_slice():
  params = {"embed": jnp.ones(1), "layers": {"w": jnp.ones((2, 1))}, "head": jnp.ones(1)}
  tx_kwargs = dict(stacked={"layers": 0}, weight_decay_mults=[(0, 0.0)])
  assert decay_terms(params, **tx_kwargs)["layers"]["w"] == [[0.0], [0.05]]
  assert decay_terms(params, weight_decay_at_base_rate=True, **tx_kwargs)["layers"]["w"] == [
      [0.0], [0.1]]
