"""layer_metrics: per layer group update RMS, weight RMS, their ratio and the gradient norm.

Every value is checked against the same quantity computed by hand with numpy in float64
over the leaves (or stacked slices) written out for each group, eagerly, under jit and
on params sharded over 8 simulated devices.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fixtures import by_name
from helpers import raises_naming
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import optax_ldl
from optax_ldl._src.layer_metrics import layer_metrics


def random_tree(shapes, seed, dtype=np.float32):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), dtype), shapes,
                      is_leaf=lambda s: isinstance(s, tuple))


SHAPES = {"embeddings": {"word": {"embedding": (16, 8)}, "norm": {"scale": (8,)}},
          "encoder": {f"layers_{i}": {"kernel": (8, 8), "bias": (8,)} for i in range(3)},
          "head": {"kernel": (8, 2)}, "step": None}
# By hand: the leaves of each group.
GROUPS = {
    "embedding": ["embeddings/word/embedding", "embeddings/norm/scale"],
    **{f"layer_{i}": [f"encoder/layers_{i}/kernel", f"encoder/layers_{i}/bias"]
       for i in range(3)},
    "head": ["head/kernel"],
}


def trees(shapes=SHAPES):
  params, updates, grads = (random_tree(shapes, seed) for seed in (0, 1, 2))
  if "step" in shapes:  # an integer leaf: left out of every group
    params, updates, grads = ({**t, "step": jnp.array(7)} for t in (params, updates, grads))
  return params, updates, grads


def by_hand(params, updates, grads, groups, slices=None):
  """The four metrics of every group, in float64 numpy; ``slices``: {name: (path, j)}."""
  def parts(tree, members):
    leaves = by_name(tree)
    out = []
    for m in members:
      path, j = slices[m] if slices and m in slices else (m, None)
      x = np.asarray(leaves[path], np.float64)
      out.append(x if j is None else x[j])
    return np.concatenate([x.ravel() for x in out])

  expected = {}
  for group, members in groups.items():
    p, u, g = (parts(t, members) for t in (params, updates, grads))
    n = p.size
    expected[f"{group}/update_rms"] = np.sqrt(np.sum(u * u) / n)
    expected[f"{group}/param_rms"] = np.sqrt(np.sum(p * p) / n)
    expected[f"{group}/update_param_ratio"] = np.sqrt(np.sum(u * u) / np.sum(p * p))
    expected[f"{group}/grad_norm"] = np.sqrt(np.sum(g * g))
  return expected


def assert_close(got, expected):
  assert sorted(got) == sorted(expected)
  for key, value in expected.items():
    np.testing.assert_allclose(float(got[key]), value, rtol=2e-6, err_msg=key)


@pytest.mark.parametrize("plan", ["path_layers", "describe", "LayerPlan"])
def test_each_group_equals_numpy_by_hand_eager_and_under_jit(plan):
  params, updates, grads = trees()
  layers = {"path_layers": lambda: optax_ldl.path_layers(params),
            "describe": lambda: optax_ldl.describe(params, layerwise_decay=0.8),
            "LayerPlan": lambda: optax_ldl.LayerDecay(0.8).plan(params)}[plan]()
  expected = by_hand(params, updates, grads, GROUPS)
  eager = layer_metrics(params, updates, grads, layers)
  jitted = jax.jit(lambda p, u, g: layer_metrics(p, u, g, layers))(params, updates, grads)
  assert_close(eager, expected)
  assert_close(jitted, expected)
  assert list(eager) == sorted(expected) == list(jitted)
  assert all(v.shape == () and v.dtype == jnp.float32 for v in jitted.values())


def test_stacked_leaves_are_split_per_slice():
  shapes = {"embed": (10, 4), "layers": {"w": (3, 4, 4), "b": (3, 4)}, "head": (4, 2)}
  params, updates, grads = trees(shapes)
  slices = {f"{leaf}{j}": (f"layers/{leaf}", j) for leaf in "wb" for j in range(3)}
  groups = {"embedding": ["embed"], "head": ["head"],
            **{f"layer_{j}": [f"w{j}", f"b{j}"] for j in range(3)}}
  got = jax.jit(lambda p, u, g: layer_metrics(p, u, g, optax_ldl.path_layers(p)))(
      params, updates, grads)
  assert_close(got, by_hand(params, updates, grads, groups, slices))


def test_several_stacks_and_fixed_ratios_get_their_own_groups():
  shapes = {"enc": {"embed": (6, 4), "l0": (4, 4), "l1": (4, 4)},
            "dec": {"embed": (6, 4), "l0": (4, 4)}, "head": (4, 2), "prompt": (3, 4)}
  params, updates, grads = trees(shapes)
  place = optax_ldl.Placement
  layers = optax_ldl.LayerMap.build({
      "enc/embed": place("embedding", "enc"), "enc/l0": place("layer", "enc", 0),
      "enc/l1": place("layer", "enc", 1), "dec/embed": place("embedding", "dec"),
      "dec/l0": place("layer", "dec", 0), "head": place("head"),
      "prompt": place("ratio", ratio=0.1)})
  groups = {"enc/embedding": ["enc/embed"], "enc/layer_0": ["enc/l0"],
            "enc/layer_1": ["enc/l1"], "dec/embedding": ["dec/embed"],
            "dec/layer_0": ["dec/l0"], "head": ["head"], "ratio_0.1": ["prompt"]}
  assert_close(layer_metrics(params, updates, grads, layers),
               by_hand(params, updates, grads, groups))


def test_a_custom_rule_groups_by_the_ratio_it_gives():
  params, updates, grads = trees()

  def rule(decay, name_dict, n_layers, param):
    del name_dict, n_layers
    return decay if param.name.startswith("encoder/") else 1.0

  described = optax_ldl.describe(params, layerwise_decay=0.5, set_param_lr_fun=rule)
  groups = {"ratio_0.5": [n for m in ("layer_0", "layer_1", "layer_2") for n in GROUPS[m]],
            "ratio_1": GROUPS["embedding"] + GROUPS["head"]}
  assert_close(layer_metrics(params, updates, grads, described),
               by_hand(params, updates, grads, groups))


def test_sharded_params_give_the_single_device_values():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices (tests/conftest.py sets XLA_FLAGS for 8 CPU devices)")
  params, updates, grads = trees()
  params, updates, grads = ({k: v for k, v in t.items() if k != "step"}
                            for t in (params, updates, grads))
  mesh = jax.make_mesh((8,), ("fsdp",))

  def shard(tree):  # FSDP: the first axis divisible by 8 is split, the rest replicated.
    def spec(x):
      axes = [i for i, n in enumerate(x.shape) if n % 8 == 0][:1]
      return P(*["fsdp" if i in axes else None for i in range(x.ndim)])
    return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, spec(x))), tree)

  sharded = [shard(t) for t in (params, updates, grads)]
  assert sharded[0]["encoder"]["layers_0"]["kernel"].sharding.num_devices == 8
  layers = optax_ldl.path_layers(params)
  got = jax.jit(lambda p, u, g: layer_metrics(p, u, g, layers))(*sharded)
  assert_close(got, by_hand(params, updates, grads, GROUPS))


def test_zero_weights_give_ratio_zero_or_inf_and_grads_may_be_left_out():
  params = {"layers_0": jnp.zeros(4), "layers_1": jnp.zeros(4), "head": jnp.ones(4)}
  updates = {"layers_0": jnp.zeros(4), "layers_1": jnp.full(4, 0.5), "head": jnp.full(4, 0.5)}
  got = layer_metrics(params, updates, None, optax_ldl.path_layers(params))
  assert {k: float(v) for k, v in got.items() if k.endswith("ratio")} == {
      "head/update_param_ratio": 0.5, "layer_0/update_param_ratio": 0.0,
      "layer_1/update_param_ratio": float("inf")}
  assert not any(k.endswith("grad_norm") for k in got)


def test_half_precision_leaves_are_summed_in_float32():
  params, updates, grads = (jax.tree.map(lambda x: x.astype(jnp.bfloat16), t)
                            for t in trees({"layers_0": (64, 64), "layers_1": (64,),
                                            "head": (64, 2)}))
  got = layer_metrics(params, updates, grads, optax_ldl.path_layers(params))
  assert all(v.dtype == jnp.float32 for v in got.values())
  expected = by_hand(params, updates, grads,
                     {"layer_0": ["layers_0"], "layer_1": ["layers_1"], "head": ["head"]})
  for key, value in expected.items():  # the bf16 inputs, exactly; sums in float32
    np.testing.assert_allclose(float(got[key]), value, rtol=1e-5, err_msg=key)


def test_bad_arguments_are_named():
  params, updates, grads = trees()
  layers = optax_ldl.path_layers(params)
  raises_naming("updates", layer_metrics, params, {**updates, "head": {}}, grads, layers)
  raises_naming("grads", layer_metrics, params, updates,
                {**grads, "head": {"kernel": jnp.ones(3)}}, layers)
  raises_naming("layers", layer_metrics, params, updates, grads, {"head": 1})
  other = optax_ldl.describe({"w": jnp.ones(2)})
  raises_naming("layers", layer_metrics, params, updates, grads, other)


# ----------------------------------------------------------------------------------------------
# track_layer_metrics: the metrics of every N-th update, kept in the optimizer state
# ----------------------------------------------------------------------------------------------


def float_trees():
  """The params and grads of ``trees()`` without the integer leaf."""
  params, _, grads = ({k: v for k, v in t.items() if k != "step"} for t in trees())
  return params, grads


def run(tx, params, grads_of_step, steps, jit=True):
  """(updates, state) of every step; the grads of step t are ``grads_of_step(t)``."""
  state = tx.init(params)
  update = jax.jit(tx.update) if jit else tx.update
  out = []
  for t in range(steps):
    updates, state = update(grads_of_step(t), state, params)
    out.append((updates, state))
    params = optax.apply_updates(params, updates)
  return out


def scaled(grads):
  return lambda t: jax.tree.map(lambda g: g * (1.0 + t), grads)


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_tracked_updates_are_the_inner_updates(jit):
  """Eagerly bit for bit; under jit the two programs are compiled apart, and XLA may round
  the last bit of a moment differently (measured: 1 ulp)."""
  params, grads = float_trees()
  inner = optax_ldl.adamwdl(1e-2, layerwise_decay=0.5)
  tracked = optax_ldl.track_layer_metrics(inner, optax_ldl.path_layers(params), every=3)
  plain = run(inner, params, scaled(grads), 5, jit)
  wrapped = run(tracked, params, scaled(grads), 5, jit)
  for (u_plain, s_plain), (u_tracked, s_tracked) in zip(plain, wrapped, strict=True):
    for a, b in zip(jax.tree.leaves((u_plain, s_plain)),
                    jax.tree.leaves((u_tracked, s_tracked.inner_state)), strict=True):
      if jit:
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=0)
      else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_logging_steps_hold_the_metrics_of_their_update_and_the_others_keep_them():
  params, grads = float_trees()
  layers = optax_ldl.path_layers(params)
  inner = optax_ldl.adamwdl(1e-2, layerwise_decay=0.5)
  tracked = optax_ldl.track_layer_metrics(inner, layers, every=3)
  plain = run(inner, params, scaled(grads), 7)
  wrapped = run(tracked, params, scaled(grads), 7)
  assert [int(s.metrics_count) for _, s in wrapped] == [0, 0, 0, 3, 3, 3, 6]
  assert [int(s.count) for _, s in wrapped] == [1, 2, 3, 4, 5, 6, 7]
  # By hand: the params before step t, the plain optimizer's update of step t, its grads.
  p = params
  before = []
  for updates, _ in plain:
    before.append(p)
    p = optax.apply_updates(p, updates)
  for t, (_, state) in enumerate(wrapped):
    logged = t - t % 3
    expected = by_hand(before[logged], plain[logged][0], scaled(grads)(logged), GROUPS)
    assert_close(state.layer_metrics, expected)


def test_every_one_measures_every_step_and_fresh_state_is_nan():
  params, grads = float_trees()
  layers = optax_ldl.path_layers(params)
  inner = optax_ldl.adamwdl(1e-2, layerwise_decay=0.5)
  tracked = optax_ldl.track_layer_metrics(inner, layers, every=1)
  fresh = tracked.init(params)
  assert int(fresh.metrics_count) == -1
  assert sorted(fresh.layer_metrics) == sorted(by_hand(params, params, params, GROUPS))
  assert all(np.isnan(float(v)) for v in fresh.layer_metrics.values())
  plain = run(inner, params, scaled(grads), 2)
  wrapped = run(tracked, params, scaled(grads), 2)
  p1 = optax.apply_updates(params, plain[0][0])
  assert int(wrapped[1][1].metrics_count) == 1
  assert_close(wrapped[1][1].layer_metrics,
               by_hand(p1, plain[1][0], scaled(grads)(1), GROUPS))


def test_a_step_that_does_not_measure_copies_no_array():
  """The branch must run before the update overwrites the donated params and state.

  Without the zero that orders it, XLA copies every donated param and moment on every
  step (this machine: several times the step). The compiled step may copy scalars only.
  """
  params, grads = float_trees()
  layers = optax_ldl.path_layers(params)
  tx = optax_ldl.track_layer_metrics(optax_ldl.adamwdl(1e-2, layerwise_decay=0.5), layers,
                                     every=10)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  text = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile().as_text()
  copies = [line.split("=", 1)[1].strip() for line in text.splitlines() if " copy(" in line]
  assert copies, "expected the scalar counts to be copied; has the HLO text changed?"
  assert all(c.split("[", 1)[1].startswith("]") for c in copies), copies


def test_tracked_metrics_are_found_inside_other_wrappers_and_sharded():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices (tests/conftest.py sets XLA_FLAGS for 8 CPU devices)")
  params, grads = float_trees()
  layers = optax_ldl.path_layers(params)
  inner = optax_ldl.adamwdl(1e-2, layerwise_decay=0.5)
  tx = optax.MultiSteps(optax_ldl.track_layer_metrics(inner, layers, every=2),
                        every_k_schedule=2)
  mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
  spec = lambda x: P("fsdp") if x.shape[0] % 8 == 0 else P()  # noqa: E731
  shard = lambda t: jax.tree.map(  # noqa: E731
      lambda x: jax.device_put(x, NamedSharding(mesh, spec(x))), t)
  p_sharded, g_sharded = shard(params), shard(grads)
  state = tx.init(p_sharded)
  update = jax.jit(tx.update)
  for _ in range(2):  # two micro-batches: the wrapped optimizer's step 0
    _, state = update(g_sharded, state, p_sharded)
  mu = optax.tree_utils.tree_get(state, "mu")  # the moments stay sharded like the params
  for name in ("embeddings/word/embedding", "encoder/layers_0/kernel"):
    assert by_name(mu)[name].sharding.is_equivalent_to(by_name(p_sharded)[name].sharding, 2)
  assert by_name(p_sharded)["encoder/layers_0/kernel"].sharding.num_devices == 8
  metrics = optax.tree_utils.tree_get(state, "layer_metrics")
  plain_updates, _ = inner.update(grads, inner.init(params), params)
  assert_close(metrics, by_hand(params, plain_updates, grads, GROUPS))


def test_track_layer_metrics_names_bad_arguments():
  params, grads = float_trees()
  layers = optax_ldl.path_layers(params)
  inner = optax_ldl.adamwdl(1e-2)
  for every in (0, -3, 1.5, True, "10"):
    raises_naming("every", optax_ldl.track_layer_metrics, inner, layers, every=every)
  raises_naming("layers", optax_ldl.track_layer_metrics, inner, {"head": 1})
  tx = optax_ldl.track_layer_metrics(inner, layers)
  raises_naming("params", tx.update, grads, tx.init(params))
