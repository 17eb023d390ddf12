"""optax's own adamw contract (optax/_src/alias_test.py), run against adamwdl.

Two configurations: ``adamwdl(layerwise_decay=1)`` on the tested params, and a
decayed ``adamwdl`` on a tree holding layers and embeddings beside the tested
params, which sit under ``head/`` (ratio 1). On the tested params both must give
results *bit-identical* to ``optax.adamw`` with the same hyperparameters on the
same tree (the weight decay applies everywhere in both). The same tree, because
XLA may fuse (and so round) a program over a larger tree differently: the
decayed run and ``optax.adamw`` on the tested params alone differ by an ulp
after a step, while ``optax.adamw`` on the whole tree agrees over 10,000 steps.
optax's cases that need an argument adamwdl
does not have (``mu_dtype``: ``test_explicit_dtype``) do not apply.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _compat import enable_x64, set_mesh

import optax_ldl

# Half-precision params without multi_precision may warn (a recommendation): not under test here.
pytestmark = pytest.mark.filterwarnings("ignore:.*multi_precision:UserWarning")

HYPER = dict(learning_rate=1e-1, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4)


def _names(p: Any) -> Any:
  """A list of params as a dict of names no layer rule reads as numbered blocks."""
  if isinstance(p, (list, tuple)):
    return {"kernel": p[0], "bias": p[1]}
  return {"kernel": p}


def _unnames(p: Any, like: Any) -> Any:
  return [p["kernel"], p["bias"]] if isinstance(like, (list, tuple)) else p["kernel"]


class Config:
  """How one configuration embeds the tested params, and its adamwdl."""

  def __init__(self, name: str, kwargs: dict[str, Any], decayed: bool):
    self.name, self.kwargs, self.decayed = name, kwargs, decayed

  def __repr__(self) -> str:
    return self.name

  def embed(self, p: Any) -> Any:
    if not self.decayed:
      return p
    dtype = jax.tree.leaves(p)[0].dtype
    ones = functools.partial(jnp.ones, dtype=dtype)
    return {
        "embeddings": {"word": ones((4, 3))},
        "layers_0": {"kernel": ones((3, 3)), "bias": ones(3)},
        "layers_1": {"kernel": ones((3, 3)), "bias": ones(3)},
        "head": _names(p),
    }

  def extract(self, tree: Any, like: Any) -> Any:
    return _unnames(tree["head"], like) if self.decayed else tree

  def tx(self, factory=None, **extra) -> Any:
    factory = factory or optax_ldl.adamwdl
    return factory(**{**HYPER, **self.kwargs, **extra})


PLAIN = Config("plain", dict(layerwise_decay=1.0), decayed=False)
DECAYED = Config("decayed", dict(layerwise_decay=0.5, n_layers=2), decayed=True)
CONFIGS = [PLAIN, DECAYED]


def _adamw(**extra):
  return optax.adamw(**{**HYPER, **extra})


def _assert_bitwise(actual, expected):
  jax.tree.map(lambda a, e: np.testing.assert_array_equal(np.asarray(a), np.asarray(e)),
               actual, expected)
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert a.dtype == e.dtype


def _parabola(dtype):
  initial = jnp.array([-1.0, 10.0, 1.0], dtype=dtype)
  final = jnp.array([1.0, -1.0, 1.0], dtype=dtype)
  if jnp.iscomplexobj(initial):
    final = final * (1 + 1j)
  return initial, final, lambda p: jnp.sum(optax.tree_utils.tree_sum(jnp.abs(p - final) ** 2))


def _rosenbrock(dtype):
  a, b = 1.0, 100.0
  if jnp.issubdtype(dtype, jnp.complexfloating):
    a = a * (1 + 1j)
  initial = jnp.array([0.0, 0.0], dtype=dtype)
  final = jnp.array([a, a**2], dtype=dtype)
  return initial, final, lambda p: jnp.abs(a - p[0]) ** 2 + b * jnp.abs(p[1] - p[0] ** 2) ** 2


def _run(tx, params, objective, steps, traces):
  """``steps`` jitted optax steps (a scan), conjugating complex gradients as optax's test does."""

  def step(carry, _):
    p, s = carry
    g = jax.grad(objective)(p)
    g = jax.tree.map(jnp.conj, g)
    u, s = tx.update(g, s, p)
    return (optax.apply_updates(p, u), s), None

  @jax.jit
  def run(p, s):
    traces.append(1)
    return jax.lax.scan(step, (p, s), length=steps)[0]

  # optax's test also maps the state with tree_map_params here: test_tree_map_params does.
  return run(params, tx.init(params)), run


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
@pytest.mark.parametrize("target", [_parabola, _rosenbrock], ids=["parabola", "rosenbrock"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64], ids=["float32", "complex64"])
def test_optimization(config, target, dtype):
  initial, final, objective = target(dtype)
  embedded_objective = lambda tree: objective(config.extract(tree, initial))  # noqa: E731
  traces = []
  (params, _), run = _run(config.tx(), config.embed(initial), embedded_objective, 10_000,
                          traces)
  tested = config.extract(params, initial)
  np.testing.assert_allclose(tested, final, rtol=3e-2, atol=3e-2)
  (reference, _), _ = _run(_adamw(), config.embed(initial), embedded_objective, 10_000, [])
  _assert_bitwise(tested, config.extract(reference, initial))
  # No recompilation on the second call.
  run(params, config.tx().init(params))
  assert len(traces) == 1


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_accepts_extra_args(config):
  initial, _, objective = _rosenbrock(jnp.float32)

  def run(tx, **extra_args):  # the same program for adamwdl and the reference.
    @jax.jit
    def step(params, state):
      grads = jax.grad(lambda t: objective(config.extract(t, initial)))(params)
      updates, state = tx.update(grads, state, params, **extra_args)
      return optax.apply_updates(params, updates), state

    params = config.embed(initial)
    state = tx.init(params)
    for _ in range(2):
      params, state = step(params, state)
    return config.extract(params, initial)

  # adamwdl deliberately not wrapped in with_extra_args_support.
  params = run(config.tx(), unexpected_extra_args_your_optimizer_doesnt_expect=1)
  _assert_bitwise(params, run(_adamw()))


def _inject_case(config):
  params = [jnp.negative(jnp.ones((2, 3))), jnp.ones((2, 5, 2))]
  grads = [jnp.ones((2, 3)), jnp.negative(jnp.ones((2, 5, 2)))]
  return config.embed(params), config.embed(grads), params, grads


@pytest.mark.parametrize("config", [PLAIN, DECAYED], ids=repr)
def test_can_be_wrapped_in_inject_hyperparams(config):
  params, grads, ref_params, ref_grads = _inject_case(config)
  opt = config.tx()
  opt_inject = config.tx(optax.inject_hyperparams(optax_ldl.adamwdl, static_args=("n_layers",)))
  state = jax.jit(opt.init)(params)
  updates, _ = jax.jit(opt.update)(grads, state, params)
  state_inject = jax.jit(opt_inject.init)(params)
  updates_inject, new_state_inject = jax.jit(opt_inject.update)(grads, state_inject, params)
  # As in optax's test: injected hyperparameters are float32 arrays, so they round apart.
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-3), updates_inject, updates)
  # And both are optax.adamw's (injected), bit for bit.
  ref = optax.inject_hyperparams(optax.adamw)(**HYPER)
  ref_updates, _ = jax.jit(ref.update)(grads, jax.jit(ref.init)(params), params)
  _assert_bitwise(config.extract(updates_inject, ref_params),
                  config.extract(ref_updates, ref_params))


def test_inject_hyperparams_changes_the_learning_rate_like_adamw():
  params, grads, ref_params, ref_grads = _inject_case(DECAYED)
  opt = DECAYED.tx(optax.inject_hyperparams(optax_ldl.adamwdl, static_args=("n_layers",)))
  ref = optax.inject_hyperparams(optax.adamw)(**HYPER)
  state, ref_state = opt.init(params), ref.init(params)
  update, ref_update = jax.jit(opt.update), jax.jit(ref.update)
  for lr in (1e-1, 3e-2, 0.0):
    state.hyperparams["learning_rate"] = jnp.asarray(lr)
    ref_state.hyperparams["learning_rate"] = jnp.asarray(lr)
    updates, state = update(grads, state, params)
    ref_updates, ref_state = ref_update(grads, ref_state, params)
    _assert_bitwise(DECAYED.extract(updates, ref_params), DECAYED.extract(ref_updates, ref_params))


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_preserve_dtype(config, dtype):
  dtype = jnp.dtype(dtype)
  opt = config.tx()
  fun = lambda x: jnp.sum(x**2)  # noqa: E731
  initial = jnp.array([1.0, 2.0], dtype=dtype)
  params = config.embed(initial)
  grads = jax.grad(lambda t: fun(config.extract(t, initial)))(params)
  state = jax.jit(opt.init)(params)
  updates, _ = jax.jit(opt.update)(grads, state, params)
  jax.tree.map(lambda u, g: (u.dtype == g.dtype) or pytest.fail(f"{u.dtype} != {g.dtype}"),
               updates, grads)
  ref = _adamw()
  ref_updates, _ = jax.jit(ref.update)(grads, jax.jit(ref.init)(params), params)
  _assert_bitwise(config.extract(updates, initial), config.extract(ref_updates, initial))


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64", "complex64",
                                   "complex128"])
def test_state_shape_dtype_stability(config, dtype):
  with enable_x64(dtype in ("float64", "complex128")):
    dtype = jnp.dtype(dtype)
    opt = config.tx()
    initial, _, objective = _parabola(dtype)

    def run(tx, params, obj):
      @jax.jit
      def step(params, state):
        grads = jax.tree.map(jnp.conj, jax.grad(obj)(params))
        cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
        updates, state = jax.lax.cond(
            cond, lambda: tx.update(grads, state, params),
            lambda: (jax.tree.map(jnp.zeros_like, params), state))
        return optax.apply_updates(params, updates), state

      state = tx.init(params)
      for _ in range(2):
        params, new_state = step(params, state)
        assert jax.tree.structure(new_state) == jax.tree.structure(state)
        jax.tree.map(lambda a, b: (a.shape, a.dtype) == (b.shape, b.dtype) or pytest.fail(
            f"state leaf changed: {a.shape} {a.dtype} -> {b.shape} {b.dtype}"), state, new_state)
        state = new_state
      return params

    embedded_objective = lambda t: objective(config.extract(t, initial))  # noqa: E731
    params = run(opt, config.embed(initial), embedded_objective)
    assert all(x.dtype == dtype for x in jax.tree.leaves(params))
    reference = run(_adamw(), config.embed(initial), embedded_objective)
    _assert_bitwise(config.extract(params, initial), config.extract(reference, initial))


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_gradient_accumulation(config, dtype):
  dtype = jnp.dtype(dtype)
  opt = optax.MultiSteps(config.tx(), every_k_schedule=4)
  fun = lambda x: jnp.sum(x**2)  # noqa: E731
  initial = jnp.array([1.0, 2.0], dtype=dtype)
  params = config.embed(initial)
  grads = jax.grad(lambda t: fun(config.extract(t, initial)))(params)
  state = jax.jit(opt.init)(params)
  update = jax.jit(opt.update)
  updates, state = update(grads, state, params)
  _assert_bitwise(updates, jax.tree.map(jnp.zeros_like, grads))
  # The 4th call applies the mean gradient, exactly as MultiSteps(adamw).
  ref = optax.MultiSteps(_adamw(), every_k_schedule=4)
  ref_state, ref_update = ref.init(params), jax.jit(ref.update)
  ref_updates, ref_state = ref_update(grads, ref_state, params)
  for _ in range(3):
    updates, state = update(grads, state, params)
    ref_updates, ref_state = ref_update(grads, ref_state, params)
  _assert_bitwise(config.extract(updates, initial), config.extract(ref_updates, initial))


@pytest.mark.parametrize("config", [PLAIN, DECAYED], ids=repr)
def test_tree_map_params(config):
  initial = jnp.arange(6.0).reshape(2, 3)
  params = config.embed(initial)
  opt = config.tx()
  state = opt.init(params)
  same = optax.tree_utils.tree_map_params(opt, lambda v: v, state)
  _assert_bitwise(same, state)
  # The usual use: the state's shardings (or shapes) derived from the params'.
  shapes = optax.tree_utils.tree_map_params(
      opt, lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), state,
      transform_non_params=lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)),
  )
  assert jax.tree.structure(shapes) == jax.tree.structure(
      jax.tree.map(lambda x: 0, state))
  doubled = optax.tree_utils.tree_map_params(opt, lambda p: 2 * p, state)
  mu = optax.tree_utils.tree_get(doubled, "mu")
  _assert_bitwise(mu, jax.tree.map(lambda m: 2 * m, optax.tree_utils.tree_get(state, "mu")))


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_state_is_sharded_like_the_params(config):
  mesh = jax.make_mesh((8,), ("x",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  initial = jnp.arange(32.0).reshape(8, 4) / 10
  with set_mesh(mesh):
    params = jax.device_put(config.embed(initial), replicated)
    tested = jax.device_put(initial, sharding)
    params = config.embed(tested) if not config.decayed else {**params, "head": _names(tested)}
    grads = jax.tree.map(lambda p: p * 0.5 + 0.1, params)
    opt = config.tx()
    state = jax.jit(opt.init)(params)
    mu = config.extract(optax.tree_utils.tree_get(state, "mu"), initial)
    assert mu.sharding.is_equivalent_to(sharding, 2)
    updates, new_state = jax.jit(opt.update)(grads, state, params)
    assert config.extract(updates, initial).sharding.is_equivalent_to(sharding, 2)
    new_mu = config.extract(optax.tree_utils.tree_get(new_state, "mu"), initial)
    assert new_mu.sharding.is_equivalent_to(sharding, 2)
    ref = _adamw()
    ref_updates, _ = jax.jit(ref.update)(grads, jax.jit(ref.init)(params), params)
  _assert_bitwise(config.extract(updates, initial), config.extract(ref_updates, initial))


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_apply_if_finite(config):
  initial = jnp.array([1.0, -2.0, 3.0])
  params = config.embed(initial)
  opt = optax.apply_if_finite(config.tx(), max_consecutive_errors=2)
  ref = optax.apply_if_finite(_adamw(), max_consecutive_errors=2)
  state, ref_state = opt.init(params), ref.init(params)
  ref_params = params
  update, ref_update = jax.jit(opt.update), jax.jit(ref.update)
  for k, bad in enumerate([False, True, False, True, True, False]):
    g = jnp.array([0.5, jnp.inf if bad else -0.25, 1.0 * k])
    grads = config.embed(g) if not config.decayed else {
        **jax.tree.map(jnp.zeros_like, params), "head": _names(g)}
    updates, state = update(grads, state, params)
    ref_updates, ref_state = ref_update(grads, ref_state, ref_params)
    params = optax.apply_updates(params, updates)
    ref_params = optax.apply_updates(ref_params, ref_updates)
    _assert_bitwise(config.extract(params, initial), config.extract(ref_params, initial))
    assert int(state.notfinite_count) == int(ref_state.notfinite_count)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("wrapper", ["apply_if_finite", "MultiSteps", "chain"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_multi_precision_updates_compose_with_optax_wrappers(wrapper, dtype):
  params = {"layers_0": {"w": jnp.ones((2, 3), dtype)}, "head": {"w": jnp.ones(3, dtype)}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  inner = optax_ldl.adamwdl(1e-2, layerwise_decay=0.5, n_layers=1, multi_precision=True)
  opt = {
      "apply_if_finite": lambda: optax.apply_if_finite(inner, max_consecutive_errors=2),
      "MultiSteps": lambda: optax.MultiSteps(inner, every_k_schedule=2),
      "chain": lambda: optax.chain(optax.clip_by_global_norm(1.0), inner),
  }[wrapper]()
  state = opt.init(params)
  for _ in range(2):
    updates, state = jax.jit(opt.update)(grads, state, params)
    assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(lambda p: p.dtype, params)
    params = optax.apply_updates(params, updates)
  assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree.leaves(params))
