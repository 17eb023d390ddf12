"""Property-based tests (hypothesis): adamwdl against a float64 NumPy re-derivation.

Random trees (nested dicts, lists, tuples, a registered dataclass; float16,
bfloat16, float32, float64 under x64 and complex64 leaves; int leaves and None)
and random configurations (the three Paddle clips, weight-decay masks, lazy
mode, multi-precision, schedules, layer-wise decay over ``layers_N`` keys) run
for a few steps; every float leaf must match the documented formula

  m_t = b1 m + (1 - b1) g,  v_t = b2 v + (1 - b2) |g|^2,
  p_t = p - lr(t-1) r_p (m_t/(1-b1^t) / (sqrt(v_t/(1-b2^t)) + eps) + wd [decay(p)] p)

computed in float64/complex128 NumPy, within a tolerance set by the leaf's
dtype; integer leaves never change.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _compat import enable_x64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optax_ldl

pytestmark = pytest.mark.filterwarnings("ignore:.*multi_precision:UserWarning")

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
STEPS = 3
SHAPES = [(), (3,), (2, 3), (3, 2, 2)]
NAMES = ["kernel", "bias", "scale", "w", "inner", "sub"]  # no name any layer rule reads.
HALF = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


@dataclasses.dataclass
class Pair:
  """A user pytree (registered as a dataclass: its path names are its field names)."""

  left: Any
  right: Any


jax.tree_util.register_dataclass(Pair, data_fields=["left", "right"], meta_fields=[])


# ----- trees -----

@st.composite
def leaves(draw, dtypes):
  kind = draw(st.sampled_from(["float"] * 6 + ["int", "none"]))
  if kind == "none":
    return None
  shape = draw(st.sampled_from(SHAPES))
  if kind == "int":
    return ("int", shape)
  return (draw(st.sampled_from(dtypes)), shape)


def trees(dtypes, *, numbered):
  """Specs of trees: (dtype, shape) leaves; lists and tuples only when ``numbered``."""
  def extend(children):
    options = [
        st.dictionaries(st.sampled_from(NAMES), children, min_size=1, max_size=3),
        st.builds(Pair, children, children),
    ]
    if numbered:
      options += [st.lists(children, min_size=1, max_size=3),
                  st.lists(children, min_size=1, max_size=2).map(tuple)]
    return st.one_of(options)

  return st.recursive(leaves(dtypes), extend, max_leaves=6)


def _is_spec(x):
  return isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], tuple) and (
      x[0] == "int" or isinstance(x[0], jnp.dtype))


def _materialize(spec, rng, *, low=0.1):
  """Params from a spec: floats in +-[low, 2], ints, None (kept as None)."""
  def leaf(s):
    if s is None:
      return None
    kind, shape = s
    if kind == "int":
      return jnp.asarray(rng.integers(-5, 5, size=shape), jnp.int32)
    x = rng.uniform(low, 2.0, size=shape) * rng.choice([-1, 1], size=shape)
    if jnp.issubdtype(kind, jnp.complexfloating):
      x = x + 1j * rng.uniform(low, 2.0, size=shape) * rng.choice([-1, 1], size=shape)
    return jnp.asarray(x, kind)

  return jax.tree.map(leaf, spec, is_leaf=lambda x: x is None or _is_spec(x))


def _path_leaves(tree):
  return [(jax.tree_util.keystr(p, simple=True, separator="/"), x)
          for p, x in jax.tree_util.tree_leaves_with_path(tree)]


# ----- the reference -----

def _lr(schedule, k):
  if schedule is None:
    return None
  kind, a, b = schedule
  if kind == "constant":
    return a
  w, peak = int(a), b
  return k * peak / w if k < w else peak * math.sqrt(w / k)


def _reference(params, grads_per_step, cfg, ratios, decays):
  """Float64 NumPy AdamWDL: per-leaf params after len(grads_per_step) steps."""
  names = [n for n, _ in _path_leaves(params)]
  p = {n: np.asarray(x).astype(np.complex128 if np.iscomplexobj(x) else np.float64)
       for n, x in _path_leaves(params)}
  dtype = {n: jnp.asarray(x).dtype for n, x in _path_leaves(params)}
  floats = [n for n in names if jnp.issubdtype(dtype[n], jnp.inexact)]
  m = {n: np.zeros_like(p[n]) for n in floats}
  v = {n: np.zeros(p[n].shape) for n in floats}
  b1, b2, eps, wd = cfg["b1"], cfg["b2"], cfg["eps"], cfg["weight_decay"]
  for t, grads in enumerate(grads_per_step, start=1):
    g = {n: np.asarray(x).astype(p[n].dtype) for n, x in _path_leaves(grads) if n in floats}
    clip = cfg["clip"]
    if clip is not None:
      kind, c = clip
      if kind == "global":
        norm = math.sqrt(sum(float(np.sum(np.abs(x) ** 2)) for x in g.values()))
        g = {n: x * (c / max(norm, c)) for n, x in g.items()}
      elif kind == "norm":
        g = {n: x * (c / max(math.sqrt(float(np.sum(np.abs(x) ** 2))), c)) for n, x in g.items()}
      else:
        g = {n: np.clip(x, -c, c) for n, x in g.items()}
    lr = _lr(cfg["schedule"], t - 1) if cfg["schedule"] else cfg["lr"]
    for n in floats:
      new_m = b1 * m[n] + (1 - b1) * g[n]
      new_v = b2 * v[n] + (1 - b2) * np.abs(g[n]) ** 2
      u = (new_m / (1 - b1**t)) / (np.sqrt(new_v / (1 - b2**t)) + eps)
      u = u + (wd * p[n] if decays[n] else 0)
      new_p = p[n] - lr * ratios[n] * u
      if not (cfg["multi_precision"] and dtype[n] in HALF):
        # The param is stored in its dtype after every step (optax.apply_updates).
        new_p = np.asarray(jnp.asarray(new_p, dtype[n])).astype(p[n].dtype)
      if cfg["lazy_mode"] and g[n].ndim >= 2:
        rows = np.any(g[n] != 0, axis=tuple(range(1, g[n].ndim)))
        keep = rows.reshape(rows.shape + (1,) * (g[n].ndim - 1))
        new_m, new_v, new_p = (np.where(keep, a, b) for a, b in
                               ((new_m, m[n]), (new_v, v[n]), (new_p, p[n])))
      m[n], v[n], p[n] = new_m, new_v, new_p
  return p, dtype, floats


# ----- configurations -----

@st.composite
def configs(draw, *, complex_leaves):
  clips = [None, ("global", draw(st.sampled_from([0.05, 1.0, 100.0]))),
           ("norm", draw(st.sampled_from([0.05, 1.0, 100.0])))]
  if not complex_leaves:  # a complex number has no order: no clip by value.
    clips.append(("value", draw(st.sampled_from([0.05, 0.5, 100.0]))))
  schedule = draw(st.sampled_from([None, ("inverse_sqrt", 2, 0.05), ("inverse_sqrt", 1, 0.1)]))
  return dict(
      lr=draw(st.sampled_from([1e-2, 0.1])),
      schedule=schedule,
      b1=draw(st.sampled_from([0.0, 0.5, 0.9])),
      b2=draw(st.sampled_from([0.9, 0.999])),
      eps=draw(st.sampled_from([1e-8, 1e-3])),
      weight_decay=draw(st.sampled_from([0.0, 0.01, 0.5])),
      clip=draw(st.sampled_from(clips)),
      mask=draw(st.sampled_from([None, "bias_filter", "tree"])),
      lazy_mode=draw(st.booleans()),
      multi_precision=draw(st.booleans()),
  )


def _tx(cfg, params, mask_tree, **layer_kwargs):
  clip = cfg["clip"]
  grad_clip = None if clip is None else {
      "global": optax_ldl.clip_grad_by_global_norm, "norm": optax_ldl.clip_grad_by_norm,
      "value": optax_ldl.clip_grad_by_value}[clip[0]](clip[1])
  lr = cfg["lr"]
  if cfg["schedule"] is not None:
    _, w, peak = cfg["schedule"]
    lr = optax_ldl.inverse_sqrt_schedule(w, peak)
  decay = {}
  if cfg["mask"] == "bias_filter":
    decay = dict(apply_decay_param_fun=lambda name: not name.endswith("bias"))
  elif cfg["mask"] == "tree":
    decay = dict(mask=mask_tree)
  return optax_ldl.adamwdl(
      lr, b1=cfg["b1"], b2=cfg["b2"], eps=cfg["eps"], weight_decay=cfg["weight_decay"],
      grad_clip=grad_clip, lazy_mode=cfg["lazy_mode"], multi_precision=cfg["multi_precision"],
      **decay, **layer_kwargs)


def _grads(params, rng, cfg, dtype_of):
  def leaf(x):
    if x is None:
      return None
    if not jnp.issubdtype(x.dtype, jnp.inexact):
      return np.zeros(x.shape, jax.dtypes.float0) if rng.random() < 0.5 else jnp.zeros_like(x)
    scale = rng.choice([0.1, 1.0, 5.0])
    g = rng.uniform(0.05, 1.0, size=x.shape) * rng.choice([-1, 1], size=x.shape) * scale
    if jnp.iscomplexobj(x):
      g = g + 1j * rng.normal(size=x.shape)
    if cfg["lazy_mode"] and x.ndim >= 2:
      g = g * (rng.random(size=(x.shape[0],) + (1,) * (x.ndim - 1)) < 0.6)
    return jnp.asarray(g, x.dtype)

  return jax.tree.map(leaf, params, is_leaf=lambda x: x is None)


def _tolerance(dtype, multi_precision, p_ref, step_size):
  """Per element: the leaf's rounding (state and param) over STEPS steps."""
  if dtype in HALF:
    eps_d = float(jnp.finfo(dtype).eps)
    if multi_precision:  # float32 master and moments, rounded to the dtype once.
      return eps_d * np.abs(p_ref) + 1e-5 * step_size + 1e-30
    return STEPS * (eps_d * np.abs(p_ref) + 4 * eps_d * step_size) + 1e-30
  if dtype == jnp.float64:  # the schedule's value is float32 (any count, any x64 mode).
    return 64 * 2.0**-52 * np.abs(p_ref) + 1e-6 * step_size + 1e-30
  return 64 * float(jnp.finfo(jnp.float32).eps) * (np.abs(p_ref) + step_size) + 1e-30


def _check(params, spec_params, cfg, ratios, decays, seed):
  rng = np.random.default_rng(seed)
  mask_tree = jax.tree.map(lambda _: bool(rng.random() < 0.5), params)
  tx = _tx(cfg, params, mask_tree, **ratios.pop("__kwargs__"))
  names = [n for n, _ in _path_leaves(params)]
  if cfg["mask"] == "tree":
    decays = dict(zip(names, jax.tree.leaves(mask_tree)))
  elif cfg["mask"] == "bias_filter":
    decays = {n: not n.endswith("bias") for n in names}
  state = tx.init(params)
  grads_per_step = [_grads(params, rng, cfg, None) for _ in range(STEPS)]
  current = params
  for grads in grads_per_step:
    updates, state = tx.update(grads, state, current)
    current = optax.apply_updates(current, updates)
  ref, dtype, floats = _reference(params, grads_per_step, cfg, ratios, decays)
  lr_max = max(cfg["lr"], 0.1)
  assert jax.tree.structure(current) == jax.tree.structure(params)
  for (name, actual), (_, before) in zip(_path_leaves(current), _path_leaves(params)):
    assert actual.dtype == before.dtype, name
    if name not in floats:
      np.testing.assert_array_equal(actual, before, err_msg=name)
      continue
    actual = np.asarray(actual).astype(ref[name].dtype)
    step_size = lr_max * ratios[name] * (1 + cfg["weight_decay"] * 2) / (1 - cfg["b1"] + 1e-3)
    tol = _tolerance(dtype[name], cfg["multi_precision"], ref[name], step_size * STEPS)
    err = np.abs(actual - ref[name])
    assert np.all(err <= tol), (
        f"{name} ({dtype[name]}): max error {np.max(err)} > tol {np.min(tol)}\n"
        f"actual {actual}\nref {ref[name]}\nbefore {np.asarray(before)}\ncfg {cfg}")


# ----- the properties -----

FLOATS = [jnp.dtype(jnp.float32), jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16)]


@SETTINGS
@given(spec=trees(FLOATS + [jnp.dtype(jnp.complex64)], numbered=True), data=st.data(),
       seed=st.integers(0, 2**16))
def test_plain_adamw_matches_the_formula(spec, data, seed):
  """layerwise_decay = 1: every ratio is 1, on any tree (lists, tuples, a dataclass)."""
  params = _materialize(spec, np.random.default_rng(seed))
  if not jax.tree.leaves(params):
    return
  has_complex = any(jnp.iscomplexobj(x) for x in jax.tree.leaves(params))
  cfg = data.draw(configs(complex_leaves=has_complex))
  names = [n for n, _ in _path_leaves(params)]
  ratios = {n: 1.0 for n in names}
  ratios["__kwargs__"] = {}
  _check(params, spec, cfg, ratios, {n: True for n in names}, seed)


@SETTINGS
@given(layer_specs=st.lists(trees(FLOATS, numbered=False), min_size=1, max_size=3),
       head=trees(FLOATS, numbered=False), decay=st.sampled_from([0.5, 0.8, 1.0]),
       data=st.data(), seed=st.integers(0, 2**16))
def test_layerwise_decay_matches_the_formula(layer_specs, head, decay, data, seed):
  """``layers_i/...`` gets decay**(L - i), ``head/...`` 1 (n_layers = L)."""
  n = len(layer_specs)
  # Every layer holds a float leaf (a layer of int leaves only is not a layer to decay).
  spec = {f"layers_{i}": {"kernel": (jnp.dtype(jnp.float32), (2,)), "inner": s}
          for i, s in enumerate(layer_specs)}
  spec["head"] = head
  params = _materialize(spec, np.random.default_rng(seed))
  if not jax.tree.leaves(params):
    return
  cfg = data.draw(configs(complex_leaves=False))
  names = [name for name, _ in _path_leaves(params)]
  ratios: dict[str, Any] = {
      name: decay ** (n - int(name.split("/")[0].split("_")[1]))
      if name.startswith("layers_") else 1.0 for name in names}
  ratios["__kwargs__"] = dict(layerwise_decay=decay, n_layers=n)
  _check(params, spec, cfg, ratios, {name: True for name in names}, seed)


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(spec=trees([jnp.dtype(jnp.float64), jnp.dtype(jnp.float32), jnp.dtype(jnp.complex64)],
                  numbered=True), data=st.data(), seed=st.integers(0, 2**16))
def test_float64_params_under_x64_match_the_formula(spec, data, seed):
  with enable_x64():
    params = _materialize(spec, np.random.default_rng(seed))
    if not jax.tree.leaves(params):
      return
    has_complex = any(jnp.iscomplexobj(x) for x in jax.tree.leaves(params))
    cfg = data.draw(configs(complex_leaves=has_complex))
    names = [n for n, _ in _path_leaves(params)]
    ratios = {n: 1.0 for n in names}
    ratios["__kwargs__"] = {}
    _check(params, spec, cfg, ratios, {n: True for n in names}, seed)


@SETTINGS
@given(count=st.integers(-(2**31), 2**31 - 1), warmup=st.integers(1, 10_000),
       peak=st.floats(0.0, 10.0), init=st.floats(0.0, 10.0))
def test_schedule_is_finite_non_negative_and_matches_its_formula(count, warmup, peak, init):
  sched = optax_ldl.inverse_sqrt_schedule(warmup, peak, init_value=init)
  value = float(sched(jnp.int32(count)))
  k = max(float(np.float32(count)), 0.0)
  expected = init + k * (peak - init) / warmup if k < warmup else peak * math.sqrt(warmup / k)
  assert math.isfinite(value) and value >= 0
  assert value == pytest.approx(expected, rel=1e-5, abs=1e-6 * max(peak, init))


@SETTINGS
@given(exponent=st.integers(-30, 30), n=st.integers(1, 6), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([jnp.float32, jnp.complex64]))
def test_clip_norms_are_right_at_every_scale(exponent, n, seed, dtype):
  rng = np.random.default_rng(seed)
  g = rng.normal(size=(n,)) * 10.0**exponent
  if dtype == jnp.complex64:
    g = g + 1j * rng.normal(size=(n,)) * 10.0**exponent
  g = np.asarray(jnp.asarray(g, dtype))  # as stored: the reference is its exact norm.
  norm = float(np.sqrt(np.sum(np.abs(g.astype(np.complex128)) ** 2)))
  if norm == 0 or not math.isfinite(norm) or norm < 1e-36:
    return
  c = 0.5 * norm
  for tx in (optax_ldl.clip_grad_by_global_norm(c), optax_ldl.clip_grad_by_norm(c)):
    out = np.asarray(tx.update({"g": jnp.asarray(g, dtype)}, optax.EmptyState())[0]["g"])
    np.testing.assert_allclose(out, g * 0.5, rtol=1e-5, atol=1e-45)


def test_lazy_mode_with_none_leaves():
  params = {"w": jnp.ones((2, 3)), "b": None}
  grads = {"w": jnp.zeros((2, 3)).at[0].set(1.0), "b": None}
  tx = optax_ldl.adamwdl(0.1, lazy_mode=True)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert updates["b"] is None
  np.testing.assert_array_equal(updates["w"][1], 0.0)
