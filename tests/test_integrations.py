"""Integrations: Flax linen TrainState, Flax NNX, Orbax, inject_hyperparams, apply_if_finite.

Every model here is tiny: the tests check wiring (labels, state, trajectories),
not learning. The Orbax test restores in a fresh Python process.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fixtures import (
  assert_trees_equal,
  bert_like,
  flat_params,
  flat_ratio,
  grads_at,
  names_and_leaves,
  path_name,
  run,
)

import optax_ldl

flax = pytest.importorskip("flax")
from flax import linen as nn  # noqa: E402
from flax import nnx  # noqa: E402
from flax.training import train_state  # noqa: E402

N_LAYERS = 3
DECAY = 0.5
D = 8
VOCAB = 16
# Everything in adamwdl that is not a number: it must stay static under
# optax.inject_hyperparams (a callable or a tree cannot become a jnp array).
STATIC_ARGS = (
    "set_param_lr_fun",
    "name_dict",
    "apply_decay_param_fun",
    "mask",
    "grad_clip",
    "lazy_mode",
    "multi_precision",
    "parameters",
)


def expected_ratio(name: str, n_layers: int = N_LAYERS, decay: float = DECAY) -> float:
  """PaddleNLP's rule for the tiny models here, written out by hand."""
  keys = name.split("/")
  for i, key in enumerate(keys):
    if key.startswith("layers_") and key[len("layers_"):].isdigit():
      return decay ** (n_layers - int(key[len("layers_"):]))
    if key == "layers" and i + 1 < len(keys) and keys[i + 1].isdigit():
      return decay ** (n_layers - int(keys[i + 1]))
  if any("embed" in key for key in keys):
    return decay ** (n_layers + 1)
  return 1.0


def tokens(seed: int = 0, batch: int = 4, length: int = 5):
  return jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 0, VOCAB)


def lm_loss(logits, toks):
  return optax.softmax_cross_entropy_with_integer_labels(logits, toks).mean()


# ---------------------------------------------------------------- Flax linen


class LinenBlock(nn.Module):
  # No attention biases: the key bias has a zero gradient in exact arithmetic,
  # and Adam would blow its rounding noise up to a full lr-sized step.
  d: int

  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm()(x)
    h = nn.MultiHeadDotProductAttention(
        num_heads=2, qkv_features=self.d, deterministic=True, use_bias=False
    )(h)
    x = x + h
    return x + nn.Dense(self.d)(nn.gelu(nn.Dense(2 * self.d)(nn.LayerNorm()(x))))


class LinenTiny(nn.Module):
  n_layers: int = N_LAYERS
  d: int = D
  vocab: int = VOCAB
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, toks):
    x = nn.Embed(self.vocab, self.d, name="embeddings", param_dtype=self.dtype)(toks)
    for i in range(self.n_layers):
      x = LinenBlock(self.d, name=f"layers_{i}")(x)
    return nn.Dense(self.vocab, name="head")(nn.LayerNorm(name="final_norm")(x))


def linen_params(dtype=jnp.float32):
  return jax.jit(LinenTiny(dtype=dtype).init)(jax.random.PRNGKey(0), tokens())["params"]


class LinenMLP(nn.Module):
  """A smaller model for the Orbax runs: the state is what matters there."""

  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, toks):
    x = nn.Embed(VOCAB, D, name="embeddings", param_dtype=self.dtype)(toks)
    for i in range(N_LAYERS):
      x = x + nn.Dense(D, name=f"layers_{i}", param_dtype=self.dtype)(nn.tanh(x))
    return nn.Dense(VOCAB, name="head")(nn.LayerNorm(name="final_norm")(x))


def make_linen_step():
  model = LinenMLP()

  @jax.jit
  def train_step(state, toks):
    def loss_fn(params):
      return lm_loss(state.apply_fn({"params": params}, toks), toks)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  return model, train_step


def test_linen_train_state_layer_ratios_match_paddle_rule():
  # With weight_decay=0, lr=1 and gradients of ones, Adam's first update is
  # -1/(1+eps) on every entry, so each param moves by exactly -ratio.
  params = linen_params()
  tx = optax_ldl.adamwdl(1.0, weight_decay=0.0, layerwise_decay=DECAY, n_layers=N_LAYERS)
  state = train_state.TrainState.create(apply_fn=LinenTiny().apply, params=params, tx=tx)
  grads = jax.tree.map(jnp.ones_like, params)
  new = jax.jit(lambda s, g: s.apply_gradients(grads=g))(state, grads)
  seen = set()
  for (name, before), (_, after) in zip(names_and_leaves(params), names_and_leaves(new.params)):
    ratio = expected_ratio(name)
    seen.add(ratio)
    np.testing.assert_allclose(before - after, ratio, rtol=2e-5, err_msg=name)
  assert seen == {DECAY**4, DECAY**3, DECAY**2, DECAY, 1.0}


def test_linen_train_state_jitted_steps_equal_a_manual_optax_loop():
  model, train_step = make_linen_step()
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens())["params"]
  tx = optax_ldl.adamwdl(
      optax_ldl.inverse_sqrt_schedule(2, 3e-2), weight_decay=0.01, layerwise_decay=0.8,
      n_layers=N_LAYERS, apply_decay_param_fun=lambda n: "bias" not in n and "scale" not in n,
  )
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  losses = []
  for i in range(4):
    state, loss = train_step(state, tokens(i))
    losses.append(float(loss))
  # The same steps through tx.init / tx.update directly.
  grad_fn = jax.jit(jax.grad(lambda q, t: lm_loss(model.apply({"params": q}, t), t)))
  update = jax.jit(tx.update)
  p, s = params, tx.init(params)
  for i in range(4):
    u, s = update(grad_fn(p, tokens(i)), s, p)
    p = optax.apply_updates(p, u)
  assert int(state.step) == 4
  assert all(np.isfinite(losses))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), state.params, p)


# ---------------------------------------------------------------- Flax NNX


class NNXBlock(nnx.Module):
  def __init__(self, d, rngs):
    self.attn_norm = nnx.LayerNorm(d, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
        num_heads=2, in_features=d, qkv_features=d, decode=False, use_bias=False, rngs=rngs
    )
    self.mlp_norm = nnx.LayerNorm(d, rngs=rngs)
    self.mlp_in = nnx.Linear(d, 2 * d, rngs=rngs)
    self.mlp_out = nnx.Linear(2 * d, d, rngs=rngs)

  def __call__(self, x):
    x = x + self.attn(self.attn_norm(x))
    return x + self.mlp_out(nnx.gelu(self.mlp_in(self.mlp_norm(x))))


class Counter(nnx.Variable):
  pass


def var_value(v):
  return v.get_value() if hasattr(v, "get_value") else v.value


class NNXTiny(nnx.Module):
  """Layers in an ``nnx.List`` (paths ``layers/0/...``) or as ``layers_0`` attributes."""

  def __init__(self, rngs, *, as_list=True, n_layers=N_LAYERS, d=D, vocab=VOCAB):
    self.embed = nnx.Embed(vocab, d, rngs=rngs)
    blocks = [NNXBlock(d, rngs) for _ in range(n_layers)]
    self.as_list = as_list
    if as_list:
      self.layers = getattr(nnx, "List", list)(blocks)
    else:
      for i, block in enumerate(blocks):
        setattr(self, f"layers_{i}", block)
    self.n_layers = n_layers
    self.final_norm = nnx.LayerNorm(d, rngs=rngs)
    self.head = nnx.Linear(d, vocab, rngs=rngs)
    self.calls = Counter(jnp.zeros((), jnp.int32))  # not a Param: never optimized.

  def __call__(self, toks):
    x = self.embed(toks)
    for i in range(self.n_layers):
      x = (self.layers[i] if self.as_list else getattr(self, f"layers_{i}"))(x)
    return self.head(self.final_norm(x))


def nnx_optimizer(model, tx):
  if "wrt" in inspect.signature(nnx.Optimizer.__init__).parameters:
    return nnx.Optimizer(model, tx, wrt=nnx.Param)
  return nnx.Optimizer(model, tx)  # pragma: no cover - old Flax


def nnx_update(optimizer, model, grads):
  if "model" in inspect.signature(optimizer.update).parameters:
    optimizer.update(model, grads)
  else:  # pragma: no cover - Flax < 0.11
    optimizer.update(grads)


@pytest.mark.parametrize("as_list", [True, False], ids=["nnx_List", "layers_N_attributes"])
def test_nnx_state_paths_get_the_paddle_layer_labels(as_list):
  model = NNXTiny(nnx.Rngs(0), as_list=as_list)
  description = optax_ldl.describe(
      nnx.state(model, nnx.Param), layerwise_decay=DECAY, n_layers=N_LAYERS
  )
  layers = {}
  for row in description.rows:
    assert row.lr_ratio == pytest.approx(expected_ratio(row.path), rel=1e-6), row.path
    layers.setdefault(row.layer, []).append(row.path)
  assert set(layers) == {"0", "1", "2", "embedding", "head"}
  prefix = "layers/1/" if as_list else "layers_1/"
  assert all(path.startswith(prefix) for path in layers["1"])
  assert len(layers["0"]) == len(layers["1"]) == len(layers["2"]) > 0


@pytest.mark.parametrize("as_list", [True, False], ids=["nnx_List", "layers_N_attributes"])
def test_nnx_optimizer_moves_each_param_by_its_layer_ratio(as_list):
  # What nnx.Optimizer hands to tx.init/update is an nnx.State of Params; the
  # first step with grads of ones, lr=1, no weight decay moves each entry by -ratio.
  model = NNXTiny(nnx.Rngs(0), as_list=as_list)
  before = nnx.state(model, nnx.Param)
  before = jax.tree.map(np.array, before)
  optimizer = nnx_optimizer(
      model, optax_ldl.adamwdl(1.0, weight_decay=0.0, layerwise_decay=DECAY, n_layers=N_LAYERS)
  )
  grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
  nnx_update(optimizer, model, grads)
  after = nnx.state(model, nnx.Param)
  for (name, b), (_, a) in zip(names_and_leaves(before), names_and_leaves(after)):
    np.testing.assert_allclose(b - a, expected_ratio(name), rtol=2e-5, err_msg=name)
  assert int(var_value(model.calls)) == 0


def test_nnx_optimizer_trains_a_transformer_in_nnx_jit():
  model = NNXTiny(nnx.Rngs(1))
  decay_names = lambda name: "bias" not in name and "norm" not in name  # noqa: E731
  optimizer = nnx_optimizer(
      model,
      optax_ldl.adamwdl(
          3e-2, weight_decay=0.01, layerwise_decay=0.8, n_layers=N_LAYERS,
          apply_decay_param_fun=decay_names,
          grad_clip=optax_ldl.clip_grad_by_global_norm(1.0),
      ),
  )

  @nnx.jit
  def train_step(model, optimizer, toks):
    def loss_fn(model):
      return lm_loss(model(toks), toks)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    nnx_update(optimizer, model, grads)
    return loss

  toks = tokens(3)
  losses = [float(train_step(model, optimizer, toks)) for _ in range(6)]
  assert losses[-1] < losses[0]
  assert int(var_value(model.calls)) == 0
  assert int(var_value(optimizer.step)) == 6


def test_nnx_param_names_end_in_value_so_suffix_filters_need_care():
  # Flax NNX state paths end with the Variable's ``value`` attribute:
  # ``layers/0/mlp_in/bias/value``. A filter written as ``name.endswith("bias")``
  # therefore decays every bias; a token test works for linen and NNX alike.
  names = [name for name, _ in names_and_leaves(nnx.state(NNXTiny(nnx.Rngs(0)), nnx.Param))]
  biases = [n for n in names if "bias" in n.split("/")]
  assert biases and all(n.endswith("/bias/value") for n in biases)
  rows = optax_ldl.describe(
      nnx.state(NNXTiny(nnx.Rngs(0)), nnx.Param), layerwise_decay=DECAY, n_layers=N_LAYERS,
      apply_decay_param_fun=lambda n: "bias" not in n.split("/"),
  ).rows
  assert {r.path for r in rows if not r.weight_decay} == set(biases)


# ---------------------------------------------------------------- Orbax

ORBAX_STEPS, ORBAX_SAVE_AT = 6, 3


def orbax_setup(multi_precision: bool):
  """The jitted train step and the initial TrainState of the Orbax runs."""
  model = LinenMLP(dtype=jnp.bfloat16 if multi_precision else jnp.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens())["params"]
  tx = optax_ldl.AdamWDL(
      learning_rate=optax_ldl.InverseSquareRootSchedule(2, 1e-2),
      weight_decay=0.01, layerwise_decay=0.8, n_layers=N_LAYERS,
      apply_decay_param_fun=lambda n: "bias" not in n,
      grad_clip=optax_ldl.ClipGradByGlobalNorm(1.0), multi_precision=multi_precision,
  )
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  @jax.jit
  def train_step(state, toks):
    def loss_fn(params):
      logits = state.apply_fn({"params": params}, toks).astype(jnp.float32)
      return lm_loss(logits, toks)

    return state.apply_gradients(grads=jax.grad(loss_fn)(state.params))

  return state, train_step


ORBAX_VARIANTS = {"float32": False, "multi_precision": True}


def orbax_resume(ckpt_dir: str, out: str) -> None:
  """Runs in a fresh process: restore each variant, finish its run, pickle every leaf."""
  import pickle

  import orbax.checkpoint as ocp

  results = {}
  for variant, multi_precision in ORBAX_VARIANTS.items():
    fresh, train_step = orbax_setup(multi_precision)
    with ocp.StandardCheckpointer() as ckptr:
      state = ckptr.restore(
          os.path.join(ckpt_dir, variant), jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh)
      )
    assert int(state.step) == ORBAX_SAVE_AT
    for i in range(ORBAX_SAVE_AT, ORBAX_STEPS):
      state = train_step(state, tokens(i))
    results[variant] = {name: np.asarray(x) for name, x in names_and_leaves(state)}
  with open(out, "wb") as f:
    pickle.dump(results, f)


@pytest.fixture(scope="module")
def orbax_runs(tmp_path_factory):
  """Uninterrupted runs (checkpointed mid-run) here; the resumed ones in a fresh process."""
  ocp = pytest.importorskip("orbax.checkpoint")
  import pickle

  ckpt_dir = str(tmp_path_factory.mktemp("orbax"))
  uninterrupted = {}
  for variant, multi_precision in ORBAX_VARIANTS.items():
    state, train_step = orbax_setup(multi_precision)
    for i in range(ORBAX_STEPS):
      if i == ORBAX_SAVE_AT:  # mid-run: moments, step counts and masters are non-trivial.
        with ocp.StandardCheckpointer() as ckptr:
          ckptr.save(os.path.join(ckpt_dir, variant), state)
      state = train_step(state, tokens(i))
    uninterrupted[variant] = state

  out = os.path.join(ckpt_dir, "resumed.pkl")
  here = os.path.dirname(os.path.abspath(__file__))
  code = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {here!r})
      import test_integrations as t
      t.orbax_resume({ckpt_dir!r}, {out!r})
  """)
  env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
  proc = subprocess.run(
      [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(out, "rb") as f:
    return uninterrupted, pickle.load(f)


def test_orbax_restore_with_another_decay_fails_instead_of_using_old_ratios(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  params = {"embed": jnp.ones((4, 2)), "head": jnp.ones((2, 1)),
            **{f"layers_{i}": {"w": jnp.ones((2, 2))} for i in range(2)}}
  saved = optax_ldl.adamwdl(1e-3, layerwise_decay=0.8, n_layers=2).init(params)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / "ckpt", saved)
  for decay, fails in ((0.9, True), (0.8, False)):
    target = optax_ldl.adamwdl(1e-3, layerwise_decay=decay, n_layers=2).init(params)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    with ocp.StandardCheckpointer() as ckptr:
      if fails:
        # The state's ratios are keyed by the configuration: the restore names both.
        with pytest.raises(ValueError, match=r"decay@0\.8\|n_layers@2(?s:.*)decay@0\.9"):
          ckptr.restore(tmp_path / "ckpt", target)
      else:
        restored = ckptr.restore(tmp_path / "ckpt", target)
        assert jax.tree.structure(restored) == jax.tree.structure(saved)


@pytest.mark.parametrize("variant", list(ORBAX_VARIANTS))
def test_orbax_restore_in_fresh_process_continues_bit_identically(orbax_runs, variant):
  # TrainState with AdamWDL(InverseSquareRootSchedule, ClipGradByGlobalNorm),
  # saved at step 3 of 6, restored in another process and run to step 6; with
  # multi_precision the embeddings and layers are bfloat16 (float32 masters).
  uninterrupted, resumed = orbax_runs
  resumed = resumed[variant]
  leaves = names_and_leaves(uninterrupted[variant])
  assert sorted(resumed) == sorted(name for name, _ in leaves)
  if ORBAX_VARIANTS[variant]:
    assert any(np.asarray(x).dtype == jnp.bfloat16 for _, x in leaves)
    assert any("master" in name for name in resumed)
  for name, x in leaves:
    x = np.asarray(x)
    assert resumed[name].dtype == x.dtype, name
    assert np.array_equal(resumed[name], x), name


# ---------------------------------------------------------------- inject_hyperparams


def injected(**hyperparams):
  return optax.inject_hyperparams(optax_ldl.adamwdl, static_args=STATIC_ARGS)(
      n_layers=N_LAYERS, apply_decay_param_fun=lambda n: not n.endswith("bias"), **hyperparams
  )


def counting_step(tx):
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(1)  # runs only while tracing.
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step, traces


def set_hyperparam(state, name, value):
  # Same dtype and weak type as what inject_hyperparams put there: a weakly
  # typed jnp.asarray(0.8) would be a new input type and recompile.
  old = state.hyperparams[name]
  state.hyperparams[name] = jnp.asarray(value, dtype=old.dtype)


def test_inject_hyperparams_changes_lr_weight_decay_and_layer_decay_without_recompiling():
  tx = injected(learning_rate=1e-2, weight_decay=0.1, layerwise_decay=0.5)
  params = flat_params()
  state = tx.init(params)
  step, traces = counting_step(tx)
  params, state = step(params, state, grads_at(0))

  new = {"learning_rate": 3e-2, "weight_decay": 0.02, "layerwise_decay": 0.8}
  for name, value in new.items():
    set_hyperparam(state, name, value)
  before_params, before_inner = params, state.inner_state
  params, state = step(params, state, grads_at(1))
  params, state = step(params, state, grads_at(2))

  assert len(traces) == 1
  if hasattr(step, "_cache_size"):
    assert step._cache_size() == 1
  for name, value in new.items():  # the current values are in the state.
    np.testing.assert_allclose(state.hyperparams[name], value, rtol=1e-7)

  # Same two steps with an optimizer built with the new values from the start.
  fresh = optax_ldl.adamwdl(
      n_layers=N_LAYERS, apply_decay_param_fun=lambda n: not n.endswith("bias"), **new
  )
  # The injected state holds no ratios (they are hyperparameters there); the
  # fresh optimizer keeps its own in its state.
  p = before_params
  s = optax.tree_utils.tree_set(
      before_inner, ratios=optax.tree_utils.tree_get(fresh.init(p), "ratios"))
  for i in (1, 2):
    u, s = fresh.update(grads_at(i), s, p)
    p = optax.apply_updates(p, u)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), params, p)
  # And the change mattered: the old values give another result.
  old = optax_ldl.adamwdl(
      1e-2, weight_decay=0.1, layerwise_decay=0.5, n_layers=N_LAYERS,
      apply_decay_param_fun=lambda n: not n.endswith("bias"),
  )
  u, _ = old.update(grads_at(1), optax.tree_utils.tree_set(
      before_inner, ratios=optax.tree_utils.tree_get(old.init(before_params), "ratios")),
      before_params)
  assert not np.allclose(
      optax.apply_updates(before_params, u)["layers_0"]["kernel"], params["layers_0"]["kernel"]
  )


def test_inject_hyperparams_layerwise_decay_starting_at_one_can_be_lowered_in_jit():
  tx = injected(learning_rate=1e-2, weight_decay=0.0, layerwise_decay=1.0)
  params = flat_params()
  state = tx.init(params)  # eager, as TrainState.create and nnx.Optimizer do.
  step, traces = counting_step(tx)
  ones = jax.tree.map(jnp.ones_like, params)
  first, _ = jax.jit(tx.update)(ones, state, params)
  params, state = step(params, state, grads_at(0))
  set_hyperparam(state, "layerwise_decay", 0.5)
  second, _ = jax.jit(tx.update)(ones, state, params)
  params, state = step(params, state, grads_at(1))
  assert len(traces) == 1
  # Decay 1: every leaf moves alike; decay 0.5: layer 0 moves at 0.5**3 of the head's rate.
  head = lambda u: float(u["head"]["kernel"][0, 0])  # noqa: E731
  layer0 = lambda u: float(u["layers_0"]["kernel"][0, 0])  # noqa: E731
  assert layer0(first) == pytest.approx(head(first), rel=1e-5)
  assert layer0(second) == pytest.approx(0.125 * head(second), rel=1e-4)


def _custom_rule_run(static_args):
  """Two jitted steps of adamwdl with a custom rule, the decay injected (traced): 0.5, then 0.8.

  Returns ``[(updates, expected)]``: the expected update is optax.adamw's on the same
  gradients and params times the ratio of PaddleNLP's rule at the step's decay.
  """
  rule = lambda decay, name_dict, n_layers, param: optax_ldl.layerwise_lr_decay(  # noqa: E731
      decay, name_dict, n_layers, param
  )
  tx = optax.inject_hyperparams(optax_ldl.adamwdl, static_args=static_args)(
      learning_rate=1e-2, layerwise_decay=0.5, n_layers=N_LAYERS, set_param_lr_fun=rule
  )
  reference = optax.adamw(1e-2, weight_decay=0.01)
  params = flat_params()
  state, ref_state = tx.init(params), reference.init(params)
  update = jax.jit(tx.update)
  out = []
  for step, decay in enumerate((0.5, 0.8)):
    set_hyperparam(state, "layerwise_decay", decay)
    updates, state = update(grads_at(step), state, params)
    plain, ref_state = reference.update(grads_at(step), ref_state, params)
    expected = jax.tree_util.tree_map_with_path(
        lambda p, u, d=decay: u * flat_ratio(path_name(p), d), plain)
    out.append((updates, expected))
    params = optax.apply_updates(params, updates)
  return out


def test_inject_hyperparams_with_a_custom_layer_rule_updates_in_jit():
  for updates, expected in _custom_rule_run(STATIC_ARGS + ("n_layers",)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8),
                 updates, expected)
    # The ratios matter: the layers' updates are not the head's rate.
    assert not np.allclose(updates["layers_0"]["kernel"],
                           expected["layers_0"]["kernel"] / flat_ratio("layers_0/kernel"))


def test_inject_hyperparams_with_a_custom_layer_rule_and_traced_n_layers():
  for updates, expected in _custom_rule_run(STATIC_ARGS):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8),
                 updates, expected)


def test_inject_hyperparams_equals_the_plain_optimizer():
  params = bert_like()
  kwargs = dict(learning_rate=1e-2, weight_decay=0.05, layerwise_decay=0.8, n_layers=3)
  plain, _ = run(optax_ldl.adamwdl(**kwargs), params)
  injected_run, _ = run(optax.inject_hyperparams(optax_ldl.adamwdl)(**kwargs), params)
  # Injected hyperparameters are float32 arrays, not Python floats: rounding differs.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               plain, injected_run)


def test_inject_hyperparams_on_a_tree_without_layer_names_jits():
  # The default decay of 1 needs no layers: a tree the path rule cannot read still trains.
  params = {"w": jnp.ones((3, 2)), "dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
  tx = optax.inject_hyperparams(optax_ldl.adamwdl)(learning_rate=1e-3)
  step, traces = counting_step(tx)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  new, state = step(params, state, grads)
  new, state = step(new, state, grads)
  assert len(traces) == 1
  reference = optax.adamw(1e-3, weight_decay=0.01)
  p, s = params, reference.init(params)
  for _ in range(2):
    u, s = reference.update(grads, s, p)
    p = optax.apply_updates(p, u)
  # Injected hyperparameters are float32 arrays: rounding differs from Python floats.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), new, p)


def test_inject_hyperparams_traced_decay_on_stacked_layers():
  params = {"embed": jnp.ones((5, 2)), "layers": {"w": jnp.ones((3, 2)), "b": jnp.ones(3)},
            "head": jnp.ones(2)}
  grads = jax.tree.map(jnp.ones_like, params)
  tx = optax.inject_hyperparams(optax_ldl.scale_by_layer_ratio, static_args=("n_layers",))(
      layerwise_decay=0.5, n_layers=3)
  u, _ = jax.jit(tx.update)(grads, tx.init(params))
  np.testing.assert_allclose(u["layers"]["w"][:, 0], [0.125, 0.25, 0.5])
  np.testing.assert_allclose(u["layers"]["b"], [0.125, 0.25, 0.5])
  np.testing.assert_allclose(u["embed"], 0.0625)
  np.testing.assert_allclose(u["head"], 1.0)
  for static in [("n_layers",), ()]:  # n_layers traced too in the second case.
    tx = optax.inject_hyperparams(optax_ldl.adamwdl, static_args=static)(
        learning_rate=1.0, weight_decay=0.0, layerwise_decay=0.5, n_layers=3)
    state = tx.init(params)
    state.hyperparams["layerwise_decay"] = jnp.asarray(0.25)
    u, _ = jax.jit(tx.update)(grads, state, params)
    np.testing.assert_allclose(-u["layers"]["b"], [0.25 ** 3, 0.25 ** 2, 0.25], rtol=1e-5)
    np.testing.assert_allclose(-u["embed"], 0.25 ** 4, rtol=1e-5)


# ---------------------------------------------------------------- non-finite gradients


@pytest.mark.parametrize("multi_precision", [False, True], ids=["float32", "multi_precision"])
def test_apply_if_finite_skips_a_nan_step_as_if_it_never_happened(multi_precision):
  def make():
    return optax.apply_if_finite(
        optax_ldl.adamwdl(
            optax_ldl.inverse_sqrt_schedule(2, 1e-2), weight_decay=0.1, layerwise_decay=0.5,
            n_layers=N_LAYERS, multi_precision=multi_precision,
        ),
        max_consecutive_errors=3,
    )

  params = flat_params()
  cast = lambda g: g  # noqa: E731
  if multi_precision:  # the grads of bfloat16 params are bfloat16, as jax.grad gives them.
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    cast = lambda g: jax.tree.map(lambda x: x.astype(jnp.bfloat16), g)  # noqa: E731
  tx = make()
  step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
      *tx.update(cast(g), s, p)))

  p, s = step(params, tx.init(params), grads_at(0))
  bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), grads_at(1))
  bad["head"]["kernel"] = bad["head"]["kernel"].at[1, 1].set(jnp.inf)
  p_skip, s_skip = step(p, s, bad)
  assert_trees_equal(p_skip, p)  # params unchanged
  assert_trees_equal(s_skip.inner_state, s.inner_state)  # moments, count, schedule count
  assert not bool(s_skip.last_finite)
  assert int(s_skip.notfinite_count) == 1 and int(s_skip.total_notfinite) == 1
  p_skip, s_skip = step(p_skip, s_skip, grads_at(2))

  # The run that never saw the bad step.
  p_ref, s_ref = step(p, s, grads_at(2))
  assert_trees_equal(p_skip, p_ref)
  assert_trees_equal(s_skip.inner_state, s_ref.inner_state)
  assert int(s_skip.notfinite_count) == 0 and int(s_skip.total_notfinite) == 1
