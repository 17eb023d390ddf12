"""Layer schedules: ratios as a function of the step, checked against hand-written values.

Each schedule kind is checked eagerly, under ``jit`` and by ``describe(step=...)`` on a
tree whose ratios are powers of 1/2 (exact in float32), with
``layerwise(optax.sgd(1.0))`` and unit gradients, so each update is ``-ratio``.
"""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ldl

# embed: ratio 1/16; layers_0..2: 1/8, 1/4, 1/2; head: 1 (decay 1/2, depth 3).
PARAMS = {"embed": jnp.ones(1), "layers_0": jnp.ones(1), "layers_1": jnp.ones(1),
          "layers_2": jnp.ones(1), "head": jnp.ones(1)}
ORDER = ("embed", "layers_0", "layers_1", "layers_2", "head")


def ratios_by_step(schedule, steps, params=PARAMS, **kwargs):
  """{step: {leaf: ratio}} read from the updates, eagerly and under jit (asserted equal)."""
  tx = optax_ldl.layerwise(optax.sgd(1.0), layerwise_decay=0.5, layer_schedule=schedule,
                           **kwargs)
  jitted = jax.jit(tx.update)
  state_e = state_j = tx.init(params)
  out = {}
  for t in range(max(steps) + 1):
    eager, state_e = tx.update(params, state_e, params)
    jit, state_j = jitted(params, state_j, params)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jit)):
      assert np.array_equal(a, b)
    if t in steps:
      out[t] = jax.tree.map(lambda v: (-np.asarray(v)).tolist(), eager)
  return out


def described(schedule, step, params=PARAMS):
  d = optax_ldl.describe(params, layerwise_decay=0.5, layer_schedule=schedule, step=step)
  return {r.path: (list(r.lr_ratio) if isinstance(r.lr_ratio, tuple) else [r.lr_ratio])
          for r in d.rows}


def check_table(schedule, table, params=PARAMS, **kwargs):
  got = ratios_by_step(schedule, set(table), params, **kwargs)
  for step, want in table.items():
    assert got[step] == want, (step, got[step], want)
    assert described(schedule, step, params) == want, step


def row(*values):
  return {k: [v] for k, v in zip(ORDER, values)}


def test_gradual_unfreezing_one_group_every_two_steps():
  # head from 0, layers_2 from 2, layers_1 from 4, layers_0 from 6, embeddings from 8.
  check_table(optax_ldl.gradual_unfreezing(2), {
      0: row(0, 0, 0, 0, 1), 1: row(0, 0, 0, 0, 1), 2: row(0, 0, 0, .5, 1),
      5: row(0, 0, .25, .5, 1), 6: row(0, .125, .25, .5, 1), 8: row(.0625, .125, .25, .5, 1),
      40: row(.0625, .125, .25, .5, 1)})


def test_gradual_unfreezing_groups_of_two_layers_given_starts_embeddings_never():
  # Groups from the top: 0 head, 1 layers_2 and layers_1, 2 layers_0; embeddings never.
  sched = optax_ldl.gradual_unfreezing(starts=[0, 3, 7], layers_per_group=2,
                                       embeddings="never")
  check_table(sched, {2: row(0, 0, 0, 0, 1), 3: row(0, 0, .25, .5, 1),
                      7: row(0, .125, .25, .5, 1), 30: row(0, .125, .25, .5, 1)})


def test_gradual_unfreezing_embeddings_with_the_bottom_layers():
  sched = optax_ldl.gradual_unfreezing(1, embeddings="with_bottom")
  check_table(sched, {2: row(0, 0, .25, .5, 1), 3: row(.0625, .125, .25, .5, 1)})


def test_backbone_ramp_with_a_per_layer_delay():
  # Start of the ramp: layers_2 at 2, layers_1 at 3, layers_0 at 4, embed at 5; span 4:
  # the multiplier at step t is clip((t - start + 1) / 4, 0, 1); the head is never ramped.
  sched = optax_ldl.backbone_ramp(4, start=2, delay=1)
  check_table(sched, {
      1: row(0, 0, 0, 0, 1),
      2: row(0, 0, 0, .5 * .25, 1),
      4: row(0, .125 * .25, .25 * .5, .5 * .75, 1),
      6: row(.0625 * .5, .125 * .75, .25, .5, 1),
      8: row(.0625, .125, .25, .5, 1)})


def test_freeze_for_good_and_until_a_step():
  check_table(optax_ldl.freeze(["embedding", 0]), {0: row(0, 0, .25, .5, 1),
                                                   50: row(0, 0, .25, .5, 1)})
  # "Train the head, then everything": all but the head frozen until step 3.
  check_table(optax_ldl.freeze(lambda p: p.kind != "head", until=3),
              {2: row(0, 0, 0, 0, 1), 3: row(.0625, .125, .25, .5, 1)})


def test_a_product_of_schedules_multiplies_their_multipliers():
  sched = optax_ldl.gradual_unfreezing(2) * optax_ldl.backbone_ramp(4)
  # at step 5: layers_2 (from 2) ramps 6/4 -> 1; layers_1 (from 4): ramp 6/4 -> 1.
  check_table(sched, {5: row(0, 0, .25, .5, 1), 9: row(.0625, .125, .25, .5, 1)})


STACKED = {"embed": jnp.ones(1), "layers": {"w": jnp.ones((4, 1))}, "head": jnp.ones(1)}


def test_stacked_layers_get_one_start_step_per_slice():
  # Slice j is layer j of 4: ratio 2^-(4-j); gradual unfreezing starts it at step 4 - j.
  sched = optax_ldl.gradual_unfreezing(1)
  table = {0: {"embed": [0], "layers": {"w": [[0], [0], [0], [0]]}, "head": [1]},
           2: {"embed": [0], "layers": {"w": [[0], [0], [.25], [.5]]}, "head": [1]},
           5: {"embed": [.03125], "layers": {"w": [[.0625], [.125], [.25], [.5]]}, "head": [1]}}
  got = ratios_by_step(sched, set(table), STACKED, stacked={"layers": 0})
  for step, want in table.items():
    assert got[step] == want, step
    d = optax_ldl.describe(STACKED, layerwise_decay=0.5, stacked={"layers": 0},
                           layer_schedule=sched, step=step)
    by_path = {r.path: r.lr_ratio for r in d.rows}
    assert list(by_path["layers/w"]) == [x[0] for x in want["layers"]["w"]]
    assert d.layer_schedule["layers/w"] == "[from 4, from 3, from 2, from 1]"


def test_describe_shows_when_each_group_starts():
  sched = optax_ldl.gradual_unfreezing(2) * optax_ldl.backbone_ramp(4)
  d = optax_ldl.describe(PARAMS, layerwise_decay=0.5, step=3, layer_schedule=sched)
  assert d.layer_schedule == {"embed": "from 8 x ramp 0..3", "layers_0": "from 6 x ramp 0..3",
                              "layers_1": "from 4 x ramp 0..3",
                              "layers_2": "from 2 x ramp 0..3", "head": "always"}
  summary = d.summary()
  assert "lr ratio@3" in summary and "schedule" in summary
  assert "never" in str(optax_ldl.describe(PARAMS, layerwise_decay=0.5,
                                           layer_schedule=optax_ldl.freeze("embedding")))


def test_without_a_schedule_the_state_and_program_are_the_fixed_ratio_ones():
  tx = optax_ldl.layerwise(optax.sgd(1.0), layerwise_decay=0.5)
  assert isinstance(tx.init(PARAMS)[0][1], optax_ldl.ScaleByLayerRatioState)
  with_none = optax_ldl.layerwise(optax.sgd(1.0), layerwise_decay=0.5, layer_schedule=None)
  jaxpr = lambda t: str(jax.make_jaxpr(t.update)(PARAMS, t.init(PARAMS)))  # noqa: E731
  assert jaxpr(tx) == jaxpr(with_none)


def test_once_everything_trains_the_updates_equal_the_fixed_ratio_ones_bit_exactly():
  grads = [jax.tree.map(lambda x, i=i: x * (1 + i) * 0.37, PARAMS) for i in range(6)]
  fixed = optax_ldl.adamwdl(1e-2, layerwise_decay=0.5)
  sched = optax_ldl.adamwdl(1e-2, layerwise_decay=0.5,
                            layer_schedule=optax_ldl.gradual_unfreezing(1))
  sf, ss = fixed.init(PARAMS), sched.init(PARAMS)
  for t, g in enumerate(grads):
    uf, sf = fixed.update(g, sf, PARAMS)
    us, ss = sched.update(g, ss, PARAMS)
    if t >= 4:  # the embeddings (group 4) start at step 4.
      for a, b in zip(jax.tree.leaves(uf), jax.tree.leaves(us)):
        assert np.array_equal(a, b)


def numpy_adam(grads, lr, ratio, multipliers, b1=0.9, b2=0.999, eps=1e-8):
  """Hand-written Adam: the moments track every gradient, the step is scaled by ratio * m_t."""
  m = v = np.zeros_like(grads[0], np.float64)
  steps = []
  for t, (g, mult) in enumerate(zip(grads, multipliers), start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    steps.append(-lr * ratio * mult * m_hat / (np.sqrt(v_hat) + eps))
  return steps


def test_a_layer_unfrozen_late_takes_warm_adam_steps_no_bias_correction_spike():
  # layers_0 (ratio 1/8) frozen until step 5. Its moments track the gradients all along,
  # so its first steps equal a never-frozen run's (and the numpy reference): no spike.
  rng = np.random.default_rng(0)
  grads = [{k: jnp.asarray(rng.normal(size=1) * 0.1 + 1.0, jnp.float32) for k in PARAMS}
           for _ in range(10)]
  lr, until = 1e-2, 5
  tx = optax_ldl.adamwdl(lr, weight_decay=0.0, layerwise_decay=0.5,
                         layer_schedule=optax_ldl.freeze(0, until=until))
  ref_tx = optax_ldl.adamwdl(lr, weight_decay=0.0, layerwise_decay=0.5)
  state, ref_state = tx.init(PARAMS), ref_tx.init(PARAMS)
  got, never_frozen = [], []
  for g in grads:
    u, state = jax.jit(tx.update)(g, state, PARAMS)
    r, ref_state = jax.jit(ref_tx.update)(g, ref_state, PARAMS)
    got.append(float(u["layers_0"][0]))
    never_frozen.append(float(r["layers_0"][0]))
  want = numpy_adam([np.float64(g["layers_0"][0]) for g in grads], lr, 0.125,
                    [0.0] * until + [1.0] * (len(grads) - until))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert got[:until] == [0.0] * until
  assert got[until:] == never_frozen[until:]
  steady = max(abs(x) for x in never_frozen[until:])
  assert abs(got[until]) <= steady * (1 + 1e-6)
  # What it avoids: a fresh Adam's first step at unfreezing is +-lr * ratio (its full size).
  fresh = numpy_adam([np.float64(g["layers_0"][0]) for g in grads[until:]], lr, 0.125,
                     [1.0] * (len(grads) - until))
  assert abs(fresh[0]) == pytest.approx(lr * 0.125, rel=1e-6)


@pytest.mark.parametrize("inner", [optax.lion(1e-2), optax.sgd(1e-1, momentum=0.9)],
                         ids=["lion", "sgd_momentum"])
def test_any_optax_optimizer_under_jit_frozen_leaves_never_move(inner):
  tx = optax_ldl.layerwise(inner, layerwise_decay=0.5,
                           layer_schedule=optax_ldl.gradual_unfreezing(3))
  step = jax.jit(lambda p, s: (lambda u, s: (optax.apply_updates(p, u), s))(
      *tx.update(jax.tree.map(jnp.ones_like, p), s, p)))
  params, state = PARAMS, tx.init(PARAMS)
  moved = {}
  for t in range(7):
    new, state = step(params, state)
    moved[t] = {k: bool(new[k][0] != params[k][0]) for k in ORDER}
    params = new
  assert moved[0] == {"embed": False, "layers_0": False, "layers_1": False, "layers_2": False,
                      "head": True}
  assert moved[3]["layers_2"] and not moved[3]["layers_1"]
  assert moved[6]["layers_1"] and not moved[6]["layers_0"]


def test_inject_hyperparams_with_an_optax_lr_schedule_equals_the_plain_optimizer():
  lr = optax.linear_schedule(1e-2, 1e-3, 8)
  sched = optax_ldl.gradual_unfreezing(2)
  plain = optax_ldl.adamwdl(lr, layerwise_decay=0.5, layer_schedule=sched)
  injected = optax.inject_hyperparams(optax_ldl.adamwdl, static_args=("layer_schedule",))(
      learning_rate=lr, layerwise_decay=0.5, layer_schedule=sched)
  traces = []

  @jax.jit
  def step(state, grads):
    traces.append(1)
    return injected.update(grads, state, PARAMS)

  sp, si = plain.init(PARAMS), injected.init(PARAMS)
  for t in range(9):
    g = jax.tree.map(lambda x, t=t: x * (t + 1.0), PARAMS)
    up, sp = plain.update(g, sp, PARAMS)
    ui, si = step(si, g)
    for a, b in zip(jax.tree.leaves(up), jax.tree.leaves(ui)):
      np.testing.assert_allclose(a, b, rtol=2e-5)  # b2 a float32 array: 1 - b2**t rounds.
    if t < 2:
      assert float(ui["layers_2"][0]) == 0.0
  assert len(traces) == 1  # the step count changes, the program does not.


def test_paddle_adamwdl_takes_a_layer_schedule_keeping_paddles_signature():
  params = {f"layers_{i}": jnp.ones(2) for i in range(2)}
  opt = optax_ldl.AdamWDL(learning_rate=1e-2, layerwise_decay=0.5, n_layers=2
                          ).with_layer_schedule(optax_ldl.freeze(0))
  u, _ = opt.update(params, opt.init(params), params)
  assert float(u["layers_0"][0]) == 0.0 and float(u["layers_1"][0]) != 0.0
  assert opt.layer_schedule == optax_ldl.freeze(0)
  again = pickle.loads(pickle.dumps(opt))  # rebuilt from its arguments and its schedule.
  assert float(again.update(params, again.init(params), params)[0]["layers_0"][0]) == 0.0


def model(d=8, n=4):
  """embed (d, d), n layers of w (d, d) + b (d,), head (d, d): the bottom half is embed and
  layers 0..n/2-1: 64 + 2 * 72 = 208 of the 416 parameters (d = 8, n = 4)."""
  return {"embed": jnp.ones((d, d)), "head": jnp.ones((d, d)),
          **{f"layers_{i}": {"w": jnp.ones((d, d)), "b": jnp.ones(d)} for i in range(n)}}


def state_bytes(state):
  return sum(np.asarray(x).nbytes for x in jax.tree.leaves(state))


def test_no_optimizer_state_for_leaves_frozen_for_good():
  params = model()
  bottom = ["embedding", 0, 1]
  kept = optax_ldl.adamwdl(1e-2, layerwise_decay=0.5,
                           layer_schedule=optax_ldl.freeze(bottom))
  dropped = optax_ldl.adamwdl(1e-2, layerwise_decay=0.5,
                              layer_schedule=optax_ldl.freeze(bottom, keep_state=False))
  # Adam: mu and nu, float32, per parameter (416 or 208); plus Adam's count (4 bytes),
  # 5 stored ratios (embeddings and 4 layers: 20 bytes) and the schedule's count (4).
  assert state_bytes(kept.init(params)) == 2 * 4 * 416 + 4 + 20 + 4
  assert state_bytes(dropped.init(params)) == 2 * 4 * 208 + 4 + 20 + 4
  # The trajectories are the same, bit for bit; the frozen leaves never move.
  pk, pd = params, params
  sk, sd = kept.init(params), dropped.init(params)
  for t in range(3):
    g = jax.tree.map(lambda x, t=t: x * (0.3 + t), params)
    uk, sk = jax.jit(kept.update)(g, sk, pk)
    ud, sd = jax.jit(dropped.update)(g, sd, pd)
    pk, pd = optax.apply_updates(pk, uk), optax.apply_updates(pd, ud)
  for a, b in zip(jax.tree.leaves(pk), jax.tree.leaves(pd)):
    assert np.array_equal(a, b)
  assert np.array_equal(pd["embed"], params["embed"])
  assert np.array_equal(pd["layers_1"]["w"], params["layers_1"]["w"])
  assert not np.array_equal(pd["layers_2"]["w"], params["layers_2"]["w"])


def test_orbax_restore_in_the_middle_of_an_unfreezing_run_resumes_bit_exactly(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  params = model()
  tx = optax_ldl.adamwdl(1e-2, layerwise_decay=0.5,
                         layer_schedule=optax_ldl.gradual_unfreezing(2))
  step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
      *tx.update(g, s, p)))
  grads = [jax.tree.map(lambda x, t=t: x * (0.1 + t), params) for t in range(10)]

  def run(p, s, ts):
    for t in ts:
      p, s = step(p, s, grads[t])
    return p, s

  p, s = run(params, tx.init(params), range(5))  # layers_3 and layers_2 train, the rest not.
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / "ckpt", {"params": p, "opt": s})
  end = run(p, s, range(5, 10))
  fresh = {"params": params, "opt": tx.init(params)}
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(tmp_path / "ckpt",
                             jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh))
  is_sched = lambda n: isinstance(n, optax_ldl.ScaleByLayerScheduleState)  # noqa: E731
  (sched_state,) = [n for n in jax.tree.leaves(restored["opt"], is_leaf=is_sched)
                    if is_sched(n)]
  assert int(sched_state.count) == 5
  resumed = run(restored["params"], restored["opt"], range(5, 10))
  for a, b in zip(jax.tree.leaves(end), jax.tree.leaves(resumed)):
    assert np.array_equal(a, b)


@pytest.mark.parametrize("inner", [optax.lion(1e-2), optax.sgd(1e-1, momentum=0.9)],
                         ids=["lion", "sgd_momentum"])
def test_sharded_over_eight_devices_equals_one_device(inner):
  assert jax.device_count() >= 8, "tests/conftest.py sets 8 simulated CPU devices"
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  mesh = jax.make_mesh((8,), ("model",))
  params = {"embed": jnp.arange(64.0).reshape(8, 8) / 64, "head": jnp.ones((8, 8)),
            "layers": {"w": jnp.ones((3, 8, 8))}}  # 3 stacked layers, sharded on 'model'.
  sharded = jax.device_put(params, {
      "embed": NamedSharding(mesh, P("model")), "head": NamedSharding(mesh, P(None, "model")),
      "layers": {"w": NamedSharding(mesh, P(None, "model"))}})
  tx = optax_ldl.layerwise(inner, layerwise_decay=0.5, stacked={"layers": 0},
                           layer_schedule=optax_ldl.gradual_unfreezing(2))

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.tree.map(lambda x: jnp.cos(x) + 0.5, p), s, p)
    return optax.apply_updates(p, u), s

  one, many = (params, tx.init(params)), (sharded, tx.init(sharded))
  for _ in range(8):
    one, many = step(*one), step(*many)
  for a, b in zip(jax.tree.leaves(many[0]), jax.tree.leaves(sharded)):
    assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  # Steps 0..7 with a group every 2 steps: the embeddings (group 4, step 8) never moved.
  assert np.array_equal(many[0]["embed"], params["embed"])
  assert not np.array_equal(many[0]["layers"]["w"][0], params["layers"]["w"][0])
