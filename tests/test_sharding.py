"""adamwdl under jit with params sharded over a mesh of 8 (simulated) CPU devices.

For each layout (data-parallel, FSDP, tensor-parallel, stacked layers sharded
along the layer axis or a model axis): the moments are sharded like the params,
the update has no collective on them (only scalar all-reduces, for the global
norm), shardings survive the steps, and the trajectory equals one device's.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _compat import enable_x64, set_mesh
from fixtures import moments as fixture_moments
from fixtures import path_name
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import optax_ldl

L, D, F, V, B, S = 4, 16, 32, 32, 8, 4
STEPS = 8

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8,
    reason="needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8 "
    "before jax is imported (tests/conftest.py sets it)",
)


@pytest.fixture(scope="module", autouse=True)
def x64():
  """float64: sharded and single-device programs sum in different orders
  (~1e-7 apart in float32, which Adam amplifies); in float64 the 1e-6 bound
  tests the optimizer, not the rounding."""
  with enable_x64(True):
    yield


@pytest.fixture(scope="module", autouse=True)
def shardy():
  """Shardy, jax's default partitioner from 0.7 on: GSPMD (the default before) reshards
  the tensor-parallel embedding's update with all-to-alls."""
  if getattr(jax.config, "jax_use_shardy_partitioner", True):
    yield
    return
  jax.config.update("jax_use_shardy_partitioner", True)
  try:
    yield
  finally:
    jax.config.update("jax_use_shardy_partitioner", False)


def init_params(stacked):
  keys = iter(jax.random.split(jax.random.key(0), 4 * L + 2))
  normal = lambda shape: jax.random.normal(next(keys), shape, jnp.float64) / 4  # noqa: E731
  layers = [{"w1": normal((D, F)), "b1": normal((F,)), "w2": normal((F, D)),
             "scale": 1.0 + normal((D,))} for _ in range(L)]
  params = {"embed": {"embedding": normal((V, D))}, "head": {"kernel": normal((D, V))}}
  if stacked:
    params["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  else:
    params.update({f"layers_{i}": layer for i, layer in enumerate(layers)})
  return params


def loss_fn(params, tokens, targets):
  x = params["embed"]["embedding"][tokens]
  if "layers" in params:
    layers = [jax.tree.map(lambda a, i=i: a[i], params["layers"]) for i in range(L)]
  else:
    layers = [params[f"layers_{i}"] for i in range(L)]
  for p in layers:
    h = x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * p["scale"][None, None]
    x = x + jax.nn.gelu(h @ p["w1"] + p["b1"][None, None]) @ p["w2"]
  logits = x @ params["head"]["kernel"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def data(step):
  tokens = jax.random.randint(jax.random.fold_in(jax.random.key(1), step), (B, S + 1), 0, V)
  return tokens[:, :-1], tokens[:, 1:]


def make_tx():
  return optax_ldl.adamwdl(
      3e-2, weight_decay=0.1, layerwise_decay=0.7, n_layers=L,
      apply_decay_param_fun=lambda name: not name.endswith(("b1", "scale")),
      grad_clip=optax_ldl.clip_grad_by_global_norm(0.5))


def step(params, state, tokens, targets):
  grads = jax.grad(loss_fn)(params, tokens, targets)
  updates, state = make_tx().update(grads, state, params)
  return optax.apply_updates(params, updates), state


def train(params, mesh=None):
  state = make_tx().init(params)
  if mesh is not None:  # the step count is a scalar on one device: replicate it.
    state = jax.tree.map(
        lambda x: x if x.sharding.num_devices > 1 else jax.device_put(x, NamedSharding(mesh, P())),
        state)
  # Pin the outputs to the inputs' shardings, as a training loop does (in Auto
  # mode GSPMD may otherwise pick another layout for a replicated output).
  out_shardings = jax.tree.map(lambda x: x.sharding, (params, state))
  batch = NamedSharding(mesh, P("data")) if mesh is not None else None
  shard_batch = (lambda x: x) if mesh is None else (lambda x: jax.device_put(x, batch))
  jitted = jax.jit(step, out_shardings=out_shardings)
  for t in range(STEPS):
    params, state = jitted(params, state, *map(shard_batch, data(t)))
  return params, state


def stack(params):
  out = {k: v for k, v in params.items() if not k.startswith("layers_")}
  layers = [params[f"layers_{i}"] for i in range(L)]
  out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  return out


@pytest.fixture(scope="module")
def reference():
  """One device. The stacked run equals the unrolled one stacked (test_stacked.py)."""
  unrolled = train(init_params(False))[0]
  return {False: unrolled, True: stack(unrolled)}


def fsdp_spec(x):
  """Split on the largest axis divisible by 8."""
  axes = [a for a in range(x.ndim) if x.shape[a] % 8 == 0]
  if not axes:
    return P()
  a = max(axes, key=lambda a: x.shape[a])
  return P(*[("data" if i == a else None) for i in range(x.ndim)])


def tp_spec(name, x):
  """Megatron-style: columns of w1/b1/embed/head, rows of w2."""
  last = name.split("/")[-1]
  lead = [None] * (x.ndim - {"w1": 2, "b1": 1, "w2": 2, "embedding": 2,
                              "kernel": 2, "scale": 1}[last])
  return {"w1": P(*lead, None, "model"), "b1": P(*lead, "model"),
          "w2": P(*lead, "model", None), "embedding": P(None, "model"),
          "kernel": P(None, "model"), "scale": P()}[last]


LAYOUTS = {
    # name: (stacked, mesh shape, spec of (path name, leaf))
    "data_parallel": (False, (8,), lambda n, x: P()),
    "fsdp": (False, (8,), lambda n, x: fsdp_spec(x)),
    "tensor_parallel": (False, (2, 4), tp_spec),
    "stacked_layer_axis": (True, (2, 4),
                           lambda n, x: P("model") if n.startswith("layers/") else P()),
    "stacked_model_axis": (True, (2, 4), tp_spec),
}


def make_mesh(shape, axis_type=AxisType.Auto):
  names = ("data",) if len(shape) == 1 else ("data", "model")
  return jax.make_mesh(shape, names, axis_types=(axis_type,) * len(shape))


def shardings_for(layout, params, mesh):
  spec = LAYOUTS[layout][2]
  return jax.tree_util.tree_map_with_path(
      lambda p, x: NamedSharding(mesh, spec(path_name(p), x)), params)


def assert_like_params(state, params):
  for moments in fixture_moments(state):
    jax.tree.map(lambda m, p: _assert_same_sharding(m, p), moments, params)


def _assert_same_sharding(a, b):
  assert a.sharding.is_equivalent_to(b.sharding, b.ndim), (a.sharding, b.sharding)


def assert_no_moment_collectives(params, state):
  grads = jax.tree.map(jnp.ones_like, params)
  hlo = jax.jit(make_tx().update).lower(grads, state, params).compile().as_text()
  assert not re.search(r"all-gather|all-to-all|collective-permute|reduce-scatter", hlo), hlo
  n_all_reduce = 0
  for line in hlo.splitlines():
    if re.search(r"(= \S+|\)) all-reduce(-start)?\(", line):
      n_all_reduce += 1
      shapes = re.findall(r"[a-z]+\d*\[([\d,]*)\]", line.split(" all-reduce")[0])
      assert all(s == "" for s in shapes), f"non-scalar all-reduce: {line}"
  return n_all_reduce


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_sharded_training(layout, reference):
  stacked, mesh_shape, _ = LAYOUTS[layout]
  mesh = make_mesh(mesh_shape)
  params = init_params(stacked)
  shardings = shardings_for(layout, params, mesh)
  params = jax.device_put(params, shardings)
  if layout != "data_parallel":  # the layout really splits something.
    assert any(not s.is_fully_replicated for s in jax.tree.leaves(shardings))

  state = make_tx().init(params)
  assert_like_params(state, params)
  n_all_reduce = assert_no_moment_collectives(params, state)
  if layout != "data_parallel":  # the global-norm clip sums over shards.
    assert n_all_reduce >= 1

  out, state = train(params, mesh)
  jax.tree.map(_assert_same_sharding, out, params)
  assert_like_params(state, params)
  err = max(jax.tree.leaves(jax.tree.map(
      lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), out, reference[stacked])))
  assert err <= 1e-6


def test_explicit_mesh_jit_init_follows_params():
  """With explicit mesh axes (jax.make_mesh's default), even jit(init) follows."""
  mesh = make_mesh((2, 4), AxisType.Explicit)
  params = init_params(True)
  params = jax.device_put(params, shardings_for("stacked_layer_axis", params, mesh))
  tx = make_tx()
  with set_mesh(mesh):
    state = jax.jit(tx.init)(params)
    assert_like_params(state, params)
    updates, new_state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
  jax.tree.map(_assert_same_sharding, updates, params)
  assert_like_params(new_state, params)
  np.testing.assert_allclose(
      np.asarray(jnp.abs(updates["layers"]["b1"][:, 0])) / 3e-2,
      [0.7 ** 4, 0.7 ** 3, 0.7 ** 2, 0.7], rtol=1e-5)  # eps=1e-8 vs clipped grads
