"""Sweeps in one program: K (decay, lr) settings vmapped equal K separate runs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ldl
from optax_ldl._src.sweep import grid, sweep_init, sweep_member

N_LAYERS = 3
DECAYS, LRS = (1.0, 0.6), (1e-2, 3e-2)
STEPS = 4
STATIC = ("n_layers", "apply_decay_param_fun")


def _params():
  keys = jax.random.split(jax.random.key(0), 6)
  p = {"embedding": jax.random.normal(keys[0], (5, 4)),
       "head": {"kernel": jax.random.normal(keys[1], (4, 2)), "bias": jnp.zeros(2)}}
  for i in range(N_LAYERS):
    p[f"layers_{i}"] = {"kernel": jax.random.normal(keys[2 + i], (4, 4)) * 0.5,
                        "bias": jnp.zeros(4)}
  return p


def _loss(p, x, y):
  h = p["embedding"][x].mean(1)
  for i in range(N_LAYERS):
    h = jnp.tanh(h @ p[f"layers_{i}"]["kernel"] + p[f"layers_{i}"]["bias"][None])
  logits = h @ p["head"]["kernel"] + p["head"]["bias"][None]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _batches():
  rng = np.random.default_rng(1)
  return [(rng.integers(0, 5, (8, 3)).astype(np.int32), rng.integers(0, 2, 8).astype(np.int32))
          for _ in range(STEPS)]


def _no_bias(name):
  return not name.endswith("bias")


def _separate_run(decay, lr, schedule=None):
  """One setting on its own: adamwdl built with numbers (the decay static), a plain loop."""
  tx = optax_ldl.adamwdl(lr if schedule is None else (lambda c: lr * schedule(c)),
                         layerwise_decay=decay, n_layers=N_LAYERS, weight_decay=0.05,
                         apply_decay_param_fun=_no_bias)


  @jax.jit
  def step(params, state, x, y):
    loss, g = jax.value_and_grad(_loss)(params, x, y)
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state, loss

  params = _params()
  state = tx.init(params)
  losses = []
  for x, y in _batches():
    params, state, loss = step(params, state, x, y)
    losses.append(float(loss))
  return params, np.asarray(losses)


def _peak_times(schedule):
  def make(learning_rate, layerwise_decay, n_layers, apply_decay_param_fun):
    return optax_ldl.adamwdl(lambda c: learning_rate * schedule(c), layerwise_decay=layerwise_decay,
                             n_layers=n_layers, weight_decay=0.05,
                             apply_decay_param_fun=apply_decay_param_fun)
  return make


@pytest.mark.slow  # about 20 s on 2 cores: five compiles; the quick check is the next test.
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant lr", "peak x schedule"])
def test_sweep_equals_separate_runs(scheduled):
  schedule = optax.linear_schedule(0.2, 1.0, 3) if scheduled else None
  factory = _peak_times(schedule) if scheduled else optax_ldl.adamwdl
  tx = optax.inject_hyperparams(factory, static_args=STATIC)(
      learning_rate=1e-3, layerwise_decay=0.9, n_layers=N_LAYERS,
      apply_decay_param_fun=_no_bias, **({} if scheduled else {"weight_decay": 0.05}))
  values = grid(layerwise_decay=DECAYS, learning_rate=LRS)
  params_k, state_k = sweep_init(tx, _params(), **values)
  traces = []

  def step(p, s, x, y):
    traces.append(1)
    loss, g = jax.value_and_grad(_loss)(p, x, y)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  sweep_step = jax.jit(jax.vmap(step, in_axes=(0, 0, None, None)))
  losses = []
  for x, y in _batches():
    params_k, state_k, loss = sweep_step(params_k, state_k, x, y)
    losses.append(np.asarray(loss))
  assert len(traces) == 1  # one program for the K settings and every step.
  losses = np.stack(losses, 1)
  finals = []
  for k, (decay, lr) in enumerate(zip(values["layerwise_decay"], values["learning_rate"])):
    params, separate_losses = _separate_run(float(decay), float(lr), schedule)
    finals.append(params)
    np.testing.assert_allclose(losses[k], separate_losses, rtol=2e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                 sweep_member(params_k, k), params)
  # Not vacuous: the settings trained differently, most in the deepest-decayed layer.
  first = np.asarray(finals[0]["layers_0"]["kernel"])
  assert all(np.abs(np.asarray(f["layers_0"]["kernel"]) - first).max() > 1e-4
             for f in finals[1:])


def test_first_step_moves_each_layer_by_lr_times_its_power_of_the_decay():
  # Adam's first step is lr * g / (|g| + eps) per coordinate: with g = 1 everywhere and no
  # weight decay, every parameter of layer i moves by lr * decay ** (L - i) (by hand).
  tx = optax.inject_hyperparams(optax_ldl.adamwdl, static_args=("n_layers",))(
      learning_rate=1.0, layerwise_decay=1.0, n_layers=N_LAYERS, weight_decay=0.0, eps=1e-12)
  params = _params()
  params_k, state_k = sweep_init(tx, params, layerwise_decay=[0.5, 0.8], learning_rate=[0.1, 1.0])

  def step(p, s):
    u, s = tx.update(jax.tree.map(jnp.ones_like, p), s, p)
    return optax.apply_updates(p, u)

  moved = jax.tree.map(lambda a, b: np.asarray(b - a[None]), params,
                       jax.jit(jax.vmap(step))(params_k, state_k))
  expected = {  # decay ** (L - i): L = 3; the embedding decay ** 4, the head 1.
      "embedding": [0.1 * 0.5**4, 0.8**4], "layers_0": [0.1 * 0.5**3, 0.8**3],
      "layers_1": [0.1 * 0.5**2, 0.8**2], "layers_2": [0.1 * 0.5, 0.8], "head": [0.1, 1.0]}
  for name, (a, b) in expected.items():
    for leaf in jax.tree.leaves(moved[name]):
      np.testing.assert_allclose(leaf[0], -a, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(leaf[1], -b, rtol=1e-5, atol=1e-6)


def test_an_out_of_range_decay_is_nan_in_its_own_setting_only():
  tx = optax.inject_hyperparams(optax_ldl.adamwdl, static_args=("n_layers",))(
      learning_rate=0.1, layerwise_decay=1.0, n_layers=N_LAYERS)
  params_k, state_k = sweep_init(tx, _params(), layerwise_decay=[0.5, 1.5])

  def step(p, s):
    u, _ = tx.update(jax.tree.map(jnp.ones_like, p), s, p)
    return optax.apply_updates(p, u)

  out = jax.jit(jax.vmap(step))(params_k, state_k)["layers_0"]["kernel"]
  assert np.isfinite(np.asarray(out[0])).all()
  assert np.isnan(np.asarray(out[1])).all()


@pytest.mark.filterwarnings("ignore:adamwdl. the params include float16 leaves")
def test_values_keep_the_injected_dtype_and_the_rest_is_broadcast():
  # eps and b2 static: inject_hyperparams casts its numbers to the params' dtype (1e-8 and
  # 0.999 round to 0 and 1 in float16, which adamwdl refuses).
  tx = optax.inject_hyperparams(optax_ldl.adamwdl, static_args=("n_layers", "eps", "b2"))(
      learning_rate=0.1, layerwise_decay=1.0, n_layers=N_LAYERS)
  params = jax.tree.map(lambda x: x.astype(jnp.float16), _params())
  params_k, state_k = sweep_init(tx, params, layerwise_decay=[0.5, 0.9, 1.0])
  h = state_k.hyperparams
  assert h["layerwise_decay"].dtype == jnp.float16
  np.testing.assert_allclose(np.asarray(h["layerwise_decay"], np.float32),
                             [0.5, 0.89990234375, 1.0])  # 0.9 rounded to float16
  np.testing.assert_allclose(np.asarray(h["learning_rate"], np.float32), [0.1] * 3, rtol=1e-2)
  assert jax.tree.map(jnp.shape, sweep_member(params_k, 2)) == jax.tree.map(jnp.shape, params)


def test_grid_is_the_product_last_name_fastest():
  g = grid(layerwise_decay=[1.0, 0.5], learning_rate=[1e-3, 1e-2, 1e-1])
  assert g["layerwise_decay"].tolist() == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]
  assert g["learning_rate"].tolist() == [1e-3, 1e-2, 1e-1] * 2


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give the values of at least one injected hyperparameter"),
    ({"weight_decay": [0.1]}, "weight_decay=[0.1], but 'weight_decay' is not an injected"),
    ({"n_layers": [2, 3]}, "'n_layers' is not an injected hyperparameter"),
    ({"layerwise_decay": [0.5, 0.9], "learning_rate": [0.1]}, "different lengths"),
    ({"layerwise_decay": []}, "layerwise_decay=[]; give a non-empty 1-D sequence"),
    ({"layerwise_decay": [[0.5]]}, "give a non-empty 1-D sequence"),
    ({"layerwise_decay": ["a"]}, "give a non-empty 1-D sequence of numbers"),
])
def test_bad_values_are_refused_naming_them(kwargs, message):
  tx = optax.inject_hyperparams(optax_ldl.adamwdl, static_args=("n_layers", "weight_decay"))(
      learning_rate=0.1, layerwise_decay=1.0, n_layers=N_LAYERS, weight_decay=0.0)
  with pytest.raises(ValueError, match="sweep_init: ") as info:
    sweep_init(tx, _params(), **kwargs)
  assert message in str(info.value)


def test_a_schedule_or_a_plain_optimizer_is_refused():
  scheduled = optax.inject_hyperparams(optax_ldl.adamwdl, static_args=("n_layers",))(
      learning_rate=optax.linear_schedule(0.1, 0.0, 10), layerwise_decay=1.0, n_layers=N_LAYERS)
  with pytest.raises(ValueError, match="learning_rate is a schedule, recomputed from the step"):
    sweep_init(scheduled, _params(), learning_rate=[0.1, 0.2])
  plain = optax_ldl.adamwdl(0.1, layerwise_decay=0.5, n_layers=N_LAYERS)
  with pytest.raises(ValueError, match="holds 0 sets of injected hyperparameters"):
    sweep_init(plain, _params(), layerwise_decay=[0.5])


@pytest.mark.parametrize("bad", [{}, {"x": []}, {"x": [[1.0]]}])
def test_grid_refuses_empty_axes(bad):
  with pytest.raises(ValueError, match="grid: "):
    grid(**bad)
