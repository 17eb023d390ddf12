"""Layer schedules with the rest of the world: any optimizer, inject_hyperparams, scanned
layers, 8 sharded devices, an Orbax restore mid-run, AdamWDL's options.

Every expected ratio is written by hand from the schedule's definition: a tree whose ratios
are powers of 1/2 (decay 1/2, 3 layers: embed 1/16, layers_0..2 1/8, 1/4, 1/2, head 1), and
optimizers whose update with unit gradients is ``-ratio`` exactly (``sgd(1.0)``, and
``lion(1.0)``, whose step is the sign of its momentum).
"""

from __future__ import annotations

import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import optax_ldl

PARAMS = {"embed": jnp.ones(1), "layers_0": jnp.ones(1), "layers_1": jnp.ones(1),
          "layers_2": jnp.ones(1), "head": jnp.ones(1)}
ORDER = ("embed", "layers_0", "layers_1", "layers_2", "head")
E, L0, L1, L2, H = 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0  # the fixed ratios.


def row(*values):
  return dict(zip(ORDER, values))


# Each kind, and the ratio of every leaf at chosen steps, by hand from its docstring.
KINDS = {
    # A group every 2 steps from the top: layers_2 at 2, layers_1 at 4, layers_0 at 6, embed 8.
    "gradual_every": (optax_ldl.gradual_unfreezing(2), {
        0: row(0, 0, 0, 0, H), 2: row(0, 0, 0, L2, H), 5: row(0, 0, L1, L2, H),
        7: row(0, L0, L1, L2, H), 8: row(E, L0, L1, L2, H)}),
    # Groups of 2 layers from the top: {layers_2, layers_1} at 1; {layers_0} and, with
    # the bottom layers, the embeddings at 3.
    "gradual_starts": (optax_ldl.gradual_unfreezing(starts=[0, 1, 3], layers_per_group=2,
                                                    embeddings="with_bottom"), {
        0: row(0, 0, 0, 0, H), 1: row(0, 0, L1, L2, H), 2: row(0, 0, L1, L2, H),
        3: row(E, L0, L1, L2, H)}),
    # Ramps over 2 steps, m(t) = clip((t - start + 1) / 2, 0, 1); starts: layers_2 1,
    # layers_1 3, layers_0 5, embed 7 (start 1, delay 2).
    "backbone_ramp": (optax_ldl.backbone_ramp(2, start=1, delay=2), {
        0: row(0, 0, 0, 0, H), 1: row(0, 0, 0, L2 / 2, H), 3: row(0, 0, L1 / 2, L2, H),
        6: row(0, L0, L1, L2, H), 7: row(E / 2, L0, L1, L2, H), 9: row(E, L0, L1, L2, H)}),
    "freeze_until": (optax_ldl.freeze(["head", 1], until=2), {
        0: row(E, L0, 0, L2, 0), 1: row(E, L0, 0, L2, 0), 2: row(E, L0, L1, L2, H)}),
    "freeze_for_good": (optax_ldl.freeze("embedding", keep_state=False), {
        0: row(0, L0, L1, L2, H), 9: row(0, L0, L1, L2, H)}),
    # gradual (every 2) times a ramp over 4 steps starting with each group (start 2, delay 2).
    "product": (optax_ldl.gradual_unfreezing(2) * optax_ldl.backbone_ramp(4, start=2, delay=2), {
        2: row(0, 0, 0, L2 / 4, H), 3: row(0, 0, 0, L2 / 2, H), 5: row(0, 0, L1 / 2, L2, H),
        6: row(0, L0 / 4, L1 * 3 / 4, L2, H)}),
}
INNERS = {"sgd": lambda lr: optax.sgd(lr), "lion": lambda lr: optax.lion(lr, weight_decay=0.0)}


def _build(inner, schedule, injected):
  if not injected:
    return optax_ldl.layerwise(INNERS[inner](1.0), layerwise_decay=0.5, layer_schedule=schedule)
  # Both numbers become arrays in the state: the ratios are computed from a traced decay.
  return optax.inject_hyperparams(lambda learning_rate, layerwise_decay: optax_ldl.layerwise(
      INNERS[inner](learning_rate), layerwise_decay=layerwise_decay, layer_schedule=schedule))(
          learning_rate=1.0, layerwise_decay=0.5)


@pytest.mark.parametrize("injected", [False, True], ids=["plain", "inject_hyperparams"])
@pytest.mark.parametrize("inner", list(INNERS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_gives_the_hand_written_ratios_eager_jit_and_describe(kind, inner, injected):
  schedule, table = KINDS[kind]
  tx = _build(inner, schedule, injected)
  traces = []

  def update(g, s, p):
    traces.append(1)
    return tx.update(g, s, p)

  jitted = jax.jit(update)
  state_e = state_j = tx.init(PARAMS)
  for t in range(max(table) + 1):
    eager, state_e = tx.update(PARAMS, state_e, PARAMS)
    jit, state_j = jitted(PARAMS, state_j, PARAMS)
    assert jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), eager, jit) == dict.fromkeys(
        ORDER, True), t
    if t in table:
      got = {k: float(-eager[k][0]) for k in ORDER}
      assert got == table[t], (t, got)
      shown = optax_ldl.describe(PARAMS, layerwise_decay=0.5, layer_schedule=schedule, step=t)
      assert {r.path: r.lr_ratio for r in shown.rows} == table[t], t
  assert len(traces) == 1  # the step moves, the program does not.


def test_freeze_for_good_keeps_no_state_for_any_inner_optimizer():
  for inner in INNERS.values():
    tx = optax_ldl.layerwise(inner(1.0), layerwise_decay=0.5,
                             layer_schedule=optax_ldl.freeze("embedding", keep_state=False))
    state = tx.init(PARAMS)
    masked = [n for n in jax.tree.leaves(state, is_leaf=lambda x: isinstance(
        x, optax.MaskedNode)) if isinstance(n, optax.MaskedNode)]
    # sgd has no per-leaf state; lion has one moment: the embeddings' is a MaskedNode.
    assert len(masked) == (0 if inner is INNERS["sgd"] else 1)


# ----- scanned (stacked) layers: one start step per slice ---------------------------------------

class _Block(nn.Module):
  @nn.compact
  def __call__(self, x, _=None):
    return x + nn.Dense(2, name="mlp")(x), None


class _Scanned(nn.Module):
  """Embeddings, 4 layers under ``nn.scan`` (one leaf per kind, a leading axis of 4), a head."""

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(5, 2, name="embed")(tokens)
    x, _ = nn.scan(_Block, variable_axes={"params": 0}, split_rngs={"params": True},
                   length=4)(name="layers")(x, None)
    return nn.Dense(2, name="head")(x)


SCANNED = _Scanned().init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))["params"]


@pytest.mark.parametrize("schedule, table", [
    # Slice j is layer j of 4, ratio 2^-(4-j), distance 4 - j from the top. Ramps over 2
    # steps starting at (4 - j - 1) * 1: slice 3 at 0, 2 at 1, 1 at 2, 0 at 3; embed at 4.
    (optax_ldl.backbone_ramp(2, delay=1), {
        0: ([0, 0, 0, 1 / 4], 0), 2: ([0, 1 / 16, 1 / 4, 1 / 2], 0),
        4: ([1 / 16, 1 / 8, 1 / 4, 1 / 2], 1 / 64), 5: ([1 / 16, 1 / 8, 1 / 4, 1 / 2], 1 / 32)}),
    # Two slices a group: slices 3, 2 from 3; slices 1, 0 from 6; the embeddings from 9.
    (optax_ldl.gradual_unfreezing(3, layers_per_group=2), {
        2: ([0, 0, 0, 0], 0), 3: ([0, 0, 1 / 4, 1 / 2], 0),
        6: ([1 / 16, 1 / 8, 1 / 4, 1 / 2], 0), 9: ([1 / 16, 1 / 8, 1 / 4, 1 / 2], 1 / 32)}),
    # A layer index freezes one slice of the stacked leaf.
    (optax_ldl.freeze(2, until=1), {0: ([1 / 16, 1 / 8, 0, 1 / 2], 1 / 32),
                                    1: ([1 / 16, 1 / 8, 1 / 4, 1 / 2], 1 / 32)}),
], ids=["backbone_ramp", "gradual", "freeze_slice"])
def test_scanned_layers_get_a_start_step_per_slice(schedule, table):
  tx = optax_ldl.layerwise(optax.sgd(1.0), layerwise_decay=0.5, layer_schedule=schedule)
  ones = jax.tree.map(jnp.ones_like, SCANNED)
  step = jax.jit(tx.update)
  state = tx.init(SCANNED)
  for t in range(max(table) + 1):
    updates, state = step(ones, state, SCANNED)
    if t not in table:
      continue
    slices, embed = table[t]
    kernel = -np.asarray(updates["layers"]["mlp"]["kernel"])  # (4, 2, 2)
    assert [float(x) for x in kernel[:, 0, 0]] == slices, t
    assert np.array_equal(kernel, np.broadcast_to(
        np.asarray(slices, np.float32)[:, None, None], kernel.shape)), t
    assert float(-updates["embed"]["embedding"][0, 0]) == embed, t
    assert float(-updates["head"]["kernel"][0, 0]) == 1.0
    rows = {r.path: r.lr_ratio for r in optax_ldl.describe(
        SCANNED, layerwise_decay=0.5, layer_schedule=schedule, step=t).rows}
    assert list(rows["layers/mlp/kernel"]) == slices and rows["embed/embedding"] == embed


# ----- sharded over the 8 simulated devices of conftest -----------------------------------------

@pytest.mark.slow  # compiles for a mesh of 8 devices: seconds on 2 cores.
def test_sharded_over_eight_devices_equals_one_device_and_keeps_shardings():
  assert jax.device_count() >= 8, "tests/conftest.py sets 8 simulated CPU devices"
  mesh = jax.make_mesh((8,), ("model",), axis_types=(AxisType.Auto,))
  key = iter(jax.random.split(jax.random.key(1), 4))
  params = {"embed": jax.random.normal(next(key), (16, 8)),
            "layers": {"w": jax.random.normal(next(key), (4, 8, 8)),
                       "b": jax.random.normal(next(key), (4, 8))},
            "head": jax.random.normal(next(key), (8, 8))}
  shardings = {"embed": NamedSharding(mesh, P("model")),
               "layers": {"w": NamedSharding(mesh, P(None, None, "model")),
                          "b": NamedSharding(mesh, P(None, "model"))},
               "head": NamedSharding(mesh, P(None, "model"))}
  sharded = jax.device_put(params, shardings)
  schedule = (optax_ldl.freeze("embedding", keep_state=False)
              * optax_ldl.gradual_unfreezing(2, layers_per_group=2)
              * optax_ldl.backbone_ramp(3, delay=2))
  tx = optax_ldl.adamwdl(1e-2, layerwise_decay=0.5, stacked={"layers": 0},
                         layer_schedule=schedule)

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.tree.map(lambda x: jnp.sin(3 * x) + 0.2, p), s, p)
    return optax.apply_updates(p, u), s

  one, many = (params, tx.init(params)), (sharded, jax.jit(tx.init)(sharded))
  for _ in range(7):
    one, many = step(*one), step(*many)
  for a, b in zip(jax.tree.leaves(many[0]), jax.tree.leaves(sharded)):
    assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
  (adam,) = [s for s in jax.tree.leaves(many[1], is_leaf=lambda x: isinstance(
      x, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)]
  assert isinstance(adam.mu["embed"], optax.MaskedNode)  # frozen for good: no moments.
  for moment in (adam.mu, adam.nu):
    for name in ("w", "b"):
      got, want = moment["layers"][name], many[0]["layers"][name]
      assert got.sharding.is_equivalent_to(want.sharding, got.ndim), name
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
  assert np.array_equal(many[0]["embed"], params["embed"])
  w0, w = np.asarray(params["layers"]["w"]), np.asarray(many[0]["layers"]["w"])
  # Steps 0..6: slices 3, 2 from 2, slices 1, 0 from 4 with ramps starting 0, 2, 4, 6:
  # slice 0's ramp starts at 6 and its group at 4, so it moved once; all four moved.
  assert all(not np.array_equal(w[j], w0[j]) for j in range(4))


def test_sharded_slices_start_on_their_own_steps():
  assert jax.device_count() >= 8, "tests/conftest.py sets 8 simulated CPU devices"
  mesh = jax.make_mesh((8,), ("model",), axis_types=(AxisType.Auto,))
  params = {"embed": jnp.ones((8, 8)), "layers": {"w": jnp.ones((3, 8, 8))},
            "head": jnp.ones((8, 8))}
  sharded = jax.device_put(params, {
      "embed": NamedSharding(mesh, P("model")), "head": NamedSharding(mesh, P(None, "model")),
      "layers": {"w": NamedSharding(mesh, P(None, "model"))}})
  tx = optax_ldl.layerwise(optax.sgd(1.0), layerwise_decay=0.5, stacked={"layers": 0},
                           layer_schedule=optax_ldl.gradual_unfreezing(1))
  step = jax.jit(tx.update)
  state = tx.init(sharded)
  seen = []
  for _ in range(4):
    u, state = step(jax.tree.map(jnp.ones_like, sharded), state, sharded)
    assert u["layers"]["w"].sharding.is_equivalent_to(sharded["layers"]["w"].sharding, 3)
    w, embed = -np.asarray(u["layers"]["w"]), -np.asarray(u["embed"])
    seen.append([float(w[j, 0, 0]) for j in range(3)] + [float(embed[0, 0])])
  # Slice j (ratio 2^-(3-j)) starts at 3 - j; the embeddings (1/16) at 4.
  assert seen == [[0, 0, 0, 0], [0, 0, .5, 0], [0, .25, .5, 0], [.125, .25, .5, 0]]


# ----- Orbax: save in the middle of an unfreezing run, restore, resume bit-exactly --------------

def _checkpoint_run(tmp_path, make_tx, params, grads, split):
  ocp = pytest.importorskip("orbax.checkpoint")

  def run(tx, p, s, ts):
    step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
        *tx.update(g, s, p)))
    for t in ts:
      p, s = step(p, s, grads[t])
    return p, s

  tx = make_tx()
  p, s = run(tx, params, tx.init(params), range(split))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / "ckpt", {"params": p, "opt": s})
  uninterrupted = run(tx, p, s, range(split, len(grads)))
  fresh_tx = make_tx()  # as a new process would: a new optimizer, a new jit.
  target = {"params": params, "opt": fresh_tx.init(params)}
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(tmp_path / "ckpt",
                             jax.tree.map(ocp.utils.to_shape_dtype_struct, target))
  assert jax.tree.structure(restored["opt"]) == jax.tree.structure(s)
  resumed = run(fresh_tx, restored["params"], restored["opt"], range(split, len(grads)))
  for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
    assert np.array_equal(a, b)
  return uninterrupted


@pytest.mark.slow  # Orbax and two compilations: seconds on 2 cores.
def test_orbax_mid_ramp_with_stateless_frozen_leaves_and_stacked_slices(tmp_path):
  params = {"embed": jnp.linspace(-1, 1, 12).reshape(4, 3),
            "layers": {"w": jnp.linspace(0, 1, 27).reshape(3, 3, 3)},
            "head": jnp.linspace(1, 2, 9).reshape(3, 3)}
  grads = [jax.tree.map(lambda x, t=t: jnp.cos(x * (t + 1)), params) for t in range(10)]
  make_tx = lambda: optax_ldl.adamwdl(  # noqa: E731
      1e-2, layerwise_decay=0.5, stacked={"layers": 0},
      layer_schedule=optax_ldl.freeze("embedding", keep_state=False)
      * optax_ldl.backbone_ramp(4, delay=2))
  # Saved at step 4: slice 2 fully ramped, slice 1 mid-ramp, slice 0 not started (at 4).
  end_p, _ = _checkpoint_run(tmp_path, make_tx, params, grads, split=4)
  assert np.array_equal(end_p["embed"], params["embed"])


@pytest.mark.slow  # Orbax and two compilations: seconds on 2 cores.
def test_orbax_paddle_adamwdl_with_options_mid_unfreezing(tmp_path):
  params = {"embeddings": {"word_embeddings": jnp.linspace(-1, 1, 8).reshape(4, 2)},
            "encoder": {f"layers_{i}": {"w": jnp.linspace(0, 1, 4).reshape(2, 2) + i}
                        for i in range(3)}}
  grads = [jax.tree.map(lambda x, t=t: jnp.sin(x + t), params) for t in range(8)]
  make_tx = lambda: optax_ldl.AdamWDL(  # noqa: E731
      learning_rate=1e-2, n_layers=3).with_options(
          floor=1 / 16, weight_decay_mults=[("embedding", 0.0)],
          layer_schedule=optax_ldl.gradual_unfreezing(2))
  _checkpoint_run(tmp_path, make_tx, params, grads, split=3)


# ----- no bias-correction spike when a layer starts: against a hand-written AdamW --------------

def numpy_adamw(grads, p0, lr, ratio, mults, wd, b1=0.9, b2=0.999, eps=1e-8):
  """AdamW by hand, float64: moments track every gradient; the step (decay included) is
  scaled by ``ratio * m_t``."""
  m = v = np.zeros_like(p0)
  p, steps = p0.copy(), []
  for t, (g, mult) in enumerate(zip(grads, mults), start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    step = -lr * ratio * mult * (m / (1 - b1**t) / (np.sqrt(v / (1 - b2**t)) + eps) + wd * p)
    steps.append(step)
    p = p + step
  return np.asarray(steps)


def test_layers_starting_late_take_steady_state_steps_not_a_bias_correction_spike():
  rng = np.random.default_rng(0)
  n = 20
  # Noisy gradients around a mean: Adam's steady-state step is well below lr * ratio.
  grads = [{k: jnp.asarray(0.3 + rng.normal(size=3), jnp.float32) for k in PARAMS}
           for _ in range(n)]
  params = {k: jnp.asarray(0.1 * rng.normal(size=3), jnp.float32) for k in PARAMS}
  lr, wd = 1e-2, 0.1
  schedule = optax_ldl.gradual_unfreezing(3) * optax_ldl.backbone_ramp(2, start=3, delay=3)
  tx = optax_ldl.adamwdl(lr, weight_decay=wd, layerwise_decay=0.5, layer_schedule=schedule,
                         mask=lambda p: jax.tree.map(lambda _: True, p))
  step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s, u))(
      *tx.update(g, s, p)))
  p, s, got = params, tx.init(params), []
  for g in grads:
    p, s, u = step(p, s, g)
    got.append(u)
  # layers_2 starts at 3 (ramp 3..4), layers_1 at 6 (ramp 6..7), layers_0 at 9 (9..10).
  for name, ratio, start in (("layers_2", L2, 3), ("layers_1", L1, 6), ("layers_0", L0, 9)):
    mults = [min(max((t - start + 1) / 2, 0.0), 1.0) for t in range(n)]
    g64 = [np.asarray(g[name], np.float64) for g in grads]
    want = numpy_adamw(g64, np.asarray(params[name], np.float64), lr, ratio, mults, wd)
    mine = np.asarray([np.asarray(u[name]) for u in got])
    np.testing.assert_allclose(mine, want, rtol=2e-5, atol=1e-9)
    assert not mine[:start].any(), name
    warm = np.abs(mine[start:]).max(axis=1)
    # The steady state: a run that trained the layer from step 0, over the same steps. Its
    # moments are the warm ones (they never depended on the multiplier); only the decay
    # term differs, by the little the parameters moved.
    never_frozen = numpy_adamw(g64, np.asarray(params[name], np.float64), lr, ratio,
                               [1.0] * n, wd)
    scaled = never_frozen * np.asarray(mults)[:, None]
    np.testing.assert_allclose(mine[start:], scaled[start:], rtol=2e-2, atol=1e-2 * lr * ratio)
    steady = np.abs(never_frozen[start:]).max()
    assert warm.max() <= steady * 1.02, name
    # What is avoided: a fresh Adam at the start (moments from zero) steps by lr * ratio in
    # every coordinate, above anything the steady state reaches.
    cold = numpy_adamw(g64[start:], np.asarray(params[name], np.float64), lr, ratio,
                       [1.0] * (n - start), 0.0)
    np.testing.assert_allclose(np.abs(cold[0]), lr * ratio, rtol=1e-6)
    assert np.abs(cold[0]).min() > steady, name


# ----- AdamWDL: the options Paddle lacks, checked as Paddle's own arguments ---------------------

BERT = {"embeddings": {"word_embeddings": jnp.ones(1)},
        "encoder": {f"layers_{i}": {"w": jnp.ones(1)} for i in range(3)},
        "classifier": jnp.ones(1)}


def paddle_steps(opt, grads=None, steps=1):
  """-updates / lr of ``opt`` (lr 1, b1 = b2 = 0, a huge eps: the step is the decay term)."""
  state = opt.init(BERT)
  for _ in range(steps):
    u, state = jax.jit(opt.update)(grads or jax.tree.map(jnp.zeros_like, BERT), state, BERT)
  return {k: float(-x[0]) for k, x in zip(
      ["classifier", "embed", "l0", "l1", "l2"], jax.tree.leaves(u))}


def paddle(**kwargs):
  return optax_ldl.AdamWDL(learning_rate=1.0, beta1=0.0, beta2=0.0, epsilon=1e30,
                           weight_decay=0.1, n_layers=3, **kwargs)


def test_paddle_floor_follows_paddles_depth_rule():
  # Paddle's rule with n_layers = 3: layer i gets d^(3 - i), the embeddings d^4, the
  # classifier 1; floor 1/16 gives d = (1/16) ** (1/4) = 1/2. The decay term shows it.
  got = paddle_steps(paddle().with_options(floor=1 / 16))
  assert got == paddle_steps(paddle(layerwise_decay=0.5))
  assert got == pytest.approx({"classifier": 0.1, "embed": 0.1 / 16, "l0": 0.1 / 8,
                               "l1": 0.1 / 4, "l2": 0.1 / 2}, rel=1e-6)


def test_paddle_stages_and_weight_decay_policy():
  # stages=2 on 3 layers: (0, 1) and (2); stage ratios d^2 and d, the embeddings d^3.
  got = paddle_steps(paddle(layerwise_decay=0.5).with_options(stages=2))
  assert got == pytest.approx({"classifier": 0.1, "embed": 0.1 / 8, "l0": 0.1 / 4,
                               "l1": 0.1 / 4, "l2": 0.1 / 2}, rel=1e-6)
  # Multipliers (first match wins), and the decay at the base rate: not scaled by the ratio.
  opt = paddle(layerwise_decay=0.5).with_options(
      weight_decay_mults=[("embedding", 0.0), (2, 3.0)], weight_decay_at_base_rate=True)
  assert paddle_steps(opt) == pytest.approx(
      {"classifier": 0.1, "embed": 0.0, "l0": 0.1, "l1": 0.1, "l2": 0.3}, rel=1e-6)


def test_paddle_layer_schedule_and_options_survive_copies():
  opt = paddle(layerwise_decay=0.5).with_options(stages=2).with_layer_schedule(
      optax_ldl.freeze(2, until=2))
  assert opt.options["stages"] == 2 and opt.layer_schedule == optax_ldl.freeze(2, until=2)
  got = paddle_steps(opt)
  assert got["l2"] == 0.0 and got["l1"] == pytest.approx(0.1 / 4, rel=1e-6)
  assert paddle_steps(opt, steps=3)["l2"] == pytest.approx(0.1 / 2, rel=1e-6)
  again = pickle.loads(pickle.dumps(opt))
  assert again.options == opt.options and again.arguments == opt.arguments
  assert paddle_steps(again) == got
  assert opt._replace(update=opt.update).layer_schedule == opt.layer_schedule  # noqa: SLF001
  # The defaults change nothing: the same program as the plain constructor's.
  jaxpr = lambda o: str(jax.make_jaxpr(o.update)(BERT, o.init(BERT), BERT))  # noqa: E731
  assert jaxpr(paddle(layerwise_decay=0.5).with_options()) == jaxpr(paddle(layerwise_decay=0.5))


def _custom_rule(decay, name_dict, n_layers, param):
  del name_dict, n_layers, param
  return decay


@pytest.mark.parametrize("options, arg", [
    (dict(floor=1.5), "floor"), (dict(floor="0.1"), "floor"), (dict(stages=0), "stages"),
    (dict(stages=[1, "x"]), "stages"), (dict(weight_decay_mults=[("bias", -1.0)]),
                                        "weight_decay_mults"),
    (dict(weight_decay_mults="bias"), "weight_decay_mults"),
    (dict(weight_decay_at_base_rate="yes"), "weight_decay_at_base_rate"),
    (dict(layer_schedule=optax.constant_schedule(0.0)), "layer_schedule"),
    (dict(tie_embeddings=True), "tie_embeddings"),
])
def test_paddle_options_are_refused_naming_the_option(options, arg):
  with pytest.raises((TypeError, ValueError), match=rf"^AdamWDL.*{arg}"):
    optax_ldl.AdamWDL(n_layers=3).with_options(**options)


def test_paddle_options_that_need_the_plan_are_refused_with_a_custom_rule_or_a_decay():
  with pytest.raises(ValueError, match=r"^AdamWDL: floor=0.1 sets the decay.*layerwise_decay"):
    optax_ldl.AdamWDL(layerwise_decay=0.8).with_options(floor=0.1)
  for option in (dict(floor=0.1), dict(stages=2)):
    with pytest.raises(ValueError, match=rf"^AdamWDL: {next(iter(option))} reads the layer plan"):
      optax_ldl.AdamWDL(layerwise_decay=1.0, set_param_lr_fun=_custom_rule).with_options(
          **option)


def test_too_few_start_steps_are_refused_naming_the_group_at_init_and_in_describe():
  # Groups from the top: head 0, layers_2 1, layers_1 2, layers_0 3, embeddings 4; the
  # first leaf without a start (in tree order) is named.
  schedule = optax_ldl.gradual_unfreezing(starts=[0, 5, 10])
  want = (r"^gradual_unfreezing: starts has 3 start steps but group 4 \(from the top, the "
          r"head being group 0; embedding, 4 from the top of a stack of 3 layers")
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=0.5, layer_schedule=schedule)
  with pytest.raises(ValueError, match=want):
    tx.init(PARAMS)
  with pytest.raises(ValueError, match=want):
    optax_ldl.describe(PARAMS, layerwise_decay=0.5, layer_schedule=schedule)
