"""Parity with the real PaddlePaddle kernels, from the golden data in tests/parity/.

`tests/parity/generate_paddle_golden.py` wrote `paddle_golden.npz` with PaddlePaddle 3.3.1
and PaddleNLP 2.8.1 (see tests/parity/README.md); these tests need only NumPy to read it.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ldl

GOLDEN = np.load(pathlib.Path(__file__).parent / "parity" / "paddle_golden.npz")
CASES = [
    "constant", "inv_sqrt", "mask", "clip_global", "clip_norm", "clip_value",
    "betas", "decay1", "layers12",
]
TOL = 1e-5


def _config(case):
  return json.loads(str(GOLDEN[f"{case}/config"]))


def _case(case):
  names = [str(n) for n in GOLDEN[f"{case}/names"]]
  init = {n: jnp.asarray(GOLDEN[f"{case}/init/{k}"]) for k, n in enumerate(names)}
  grads = {n: GOLDEN[f"{case}/grads/{k}"] for k, n in enumerate(names)}
  params = {n: GOLDEN[f"{case}/params/{k}"] for k, n in enumerate(names)}
  decays = dict(zip(names, GOLDEN[f"{case}/decay_mask"].tolist()))
  return names, init, grads, params, decays


def _clip(spec, paddle_names):
  if spec is None:
    return None
  if spec["kind"] == "global_norm":
    return (optax_ldl.ClipGradByGlobalNorm if paddle_names else optax_ldl.clip_grad_by_global_norm)(
        spec["clip_norm"])
  if spec["kind"] == "norm":
    return (optax_ldl.ClipGradByNorm if paddle_names else optax_ldl.clip_grad_by_norm)(
        spec["clip_norm"])
  return (optax_ldl.ClipGradByValue if paddle_names else optax_ldl.clip_grad_by_value)(
      spec["max"], spec["min"])


def _optimizer(case, decays, paddle_names):
  cfg = _config(case)
  lr = cfg["learning_rate"]
  decide = decays.__getitem__  # the names are the tree's keys, so path name == name.
  if paddle_names:
    if isinstance(lr, dict):
      lr = optax_ldl.InverseSquareRootSchedule(lr["warmup_steps"], lr["learning_rate"])
    return optax_ldl.AdamWDL(
        learning_rate=lr, beta1=cfg["beta1"], beta2=cfg["beta2"], epsilon=cfg["epsilon"],
        weight_decay=cfg["weight_decay"], apply_decay_param_fun=decide,
        grad_clip=_clip(cfg["clip"], True), layerwise_decay=cfg["layerwise_decay"],
        n_layers=cfg["n_layers"],
    )
  if isinstance(lr, dict):
    lr = optax_ldl.inverse_sqrt_schedule(lr["warmup_steps"], lr["learning_rate"])
  return optax_ldl.adamwdl(
      lr, cfg["beta1"], cfg["beta2"], cfg["epsilon"], cfg["weight_decay"],
      layerwise_decay=cfg["layerwise_decay"], n_layers=cfg["n_layers"],
      apply_decay_param_fun=decide, grad_clip=_clip(cfg["clip"], False),
  )


@pytest.mark.parametrize("paddle_names", [False, True], ids=["adamwdl", "AdamWDL"])
@pytest.mark.parametrize("case", CASES)
def test_trajectory_matches_paddle(case, paddle_names):
  names, params, grads, expected, decays = _case(case)
  tx = _optimizer(case, decays, paddle_names)
  state = tx.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  steps = _config(case)["steps"]
  assert steps >= 20
  worst = 0.0
  for t in range(steps):
    params, state = step(params, state, {n: jnp.asarray(grads[n][t]) for n in names})
    for n in names:
      worst = max(worst, float(np.max(np.abs(np.asarray(params[n]) - expected[n][t]))))
  assert worst <= TOL, f"{case}: max abs error {worst:.3g} vs Paddle"
  # The trajectory moved: a frozen optimizer would not pass by accident.
  assert max(np.max(np.abs(expected[n][-1] - GOLDEN[f"{case}/init/{k}"]))
             for k, n in enumerate(names)) > 100 * TOL


@pytest.mark.parametrize("case", CASES)
def test_layer_ratios_match_paddle(case):
  cfg = _config(case)
  names = [str(n) for n in GOLDEN[f"{case}/names"]]
  ours = [optax_ldl.layerwise_lr_decay(cfg["layerwise_decay"], None, cfg["n_layers"], n)
          for n in names]
  np.testing.assert_allclose(ours, GOLDEN[f"{case}/ratio"], rtol=1e-12)


def test_layer_rule_table_matches_paddle():
  names = [str(n) for n in GOLDEN["layer_rule/names"]]
  cfg = json.loads(str(GOLDEN["layer_rule/config"]))
  for name, ratio, error in zip(names, GOLDEN["layer_rule/ratios"], GOLDEN["layer_rule/errors"]):
    if str(error):
      with pytest.raises(ValueError, match="encoder.layers"):
        optax_ldl.layerwise_lr_decay(cfg["decay_rate"], None, cfg["n_layers"], name)
    else:
      ours = optax_ldl.layerwise_lr_decay(cfg["decay_rate"], None, cfg["n_layers"], name)
      assert ours == pytest.approx(ratio, rel=1e-12), name


@pytest.mark.parametrize("i", range(5))
def test_schedule_matches_paddle_for_20000_steps(i):
  cfg = json.loads(str(GOLDEN[f"schedule/{i}/config"]))
  expected = GOLDEN[f"schedule/{i}/values"]
  assert expected.shape == (20000,)
  sched = optax_ldl.inverse_sqrt_schedule(cfg["warmup_steps"], cfg["learning_rate"])
  ours = np.asarray(jax.jit(jax.vmap(sched))(jnp.arange(20000, dtype=jnp.int32)))
  np.testing.assert_allclose(ours, expected, rtol=2e-6, atol=1e-12)
  # The Paddle-named class gives the same values through the Optax call.
  cls = optax_ldl.InverseSquareRootSchedule(cfg["warmup_steps"], cfg["learning_rate"])
  np.testing.assert_allclose(np.asarray(jax.vmap(cls)(jnp.arange(20000))), expected,
                             rtol=2e-6, atol=1e-12)


def test_schedule_stateful_interface_matches_paddle():
  ref = json.loads(str(GOLDEN["schedule/restart"]))
  sched = optax_ldl.InverseSquareRootSchedule(
      ref["warmup_steps"], ref["learning_rate"], last_epoch=ref["last_epoch_arg"])
  after = ref["after_construction"]
  assert sched.last_epoch == after["last_epoch"]
  assert sched.last_lr == pytest.approx(after["last_lr"], rel=1e-15)
  assert sched.get_lr() == pytest.approx(after["get_lr"], rel=1e-15)
  assert sched.state_dict() == pytest.approx(ref["state_dict_after_construction"])
  # The Optax call starts where Paddle's next update would: at last_epoch.
  assert float(sched(0)) == pytest.approx(after["last_lr"], rel=1e-6)
  for want in ref["after_steps"]:
    sched.step()
    assert (sched.last_epoch, sched.last_lr) == (want["last_epoch"], pytest.approx(want["last_lr"]))
  assert sched.state_dict() == pytest.approx(ref["state_dict_after_steps"])


def _adam_f64(init, grads, lr, b1, b2, eps, lazy):
  """Float64 Adam, optionally with lazy rows, for the sparse-embedding data."""
  p = init.astype(np.float64)
  m, v = np.zeros_like(p), np.zeros_like(p)
  out = []
  for t, g in enumerate(grads.astype(np.float64), start=1):
    rows = np.any(g != 0, axis=1)[:, None] if lazy else np.ones((p.shape[0], 1), bool)
    m = np.where(rows, b1 * m + (1 - b1) * g, m)
    v = np.where(rows, b2 * v + (1 - b2) * g * g, v)
    step = lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    p = np.where(rows, p - step, p)
    out.append(p)
  return np.stack(out)


@pytest.mark.parametrize("lazy", [False, True], ids=["dense", "lazy"])
def test_embedding_rows(lazy):
  """Dense: equals Paddle's dense-gradient Adam. Lazy: Paddle's row semantics.

  Paddle's sparse-row Adam kernel uses bias correction t+1 (a defect, see
  tests/parity/README.md), so lazy mode is checked against a float64 re-derivation
  of lazy Adam with the documented bias correction, and against Paddle's row
  behaviour: rows absent from a step's gradient do not move.
  """
  prefix = "lazy" if lazy else "dense_grad"
  cfg = json.loads(str(GOLDEN[f"{prefix}/config"]))
  init, grads = GOLDEN[f"{prefix}/init"], GOLDEN[f"{prefix}/grads"]
  tx = optax_ldl.adamwdl(cfg["learning_rate"], cfg["beta1"], cfg["beta2"], cfg["epsilon"],
                         weight_decay=0.0, lazy_mode=lazy)
  params = {"embedding": jnp.asarray(init)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  ours = []
  for g in grads:
    updates, state = update({"embedding": jnp.asarray(g)}, state, params)
    params = optax.apply_updates(params, updates)
    ours.append(np.asarray(params["embedding"]))
  ours = np.stack(ours)
  reference = _adam_f64(init, grads, cfg["learning_rate"], cfg["beta1"], cfg["beta2"],
                        cfg["epsilon"], lazy)
  np.testing.assert_allclose(ours, reference, atol=1e-6)
  if lazy:
    paddle = GOLDEN["lazy/params"]
    before = np.concatenate([init[None], paddle[:-1]])
    absent = ~np.any(grads != 0, axis=2)
    assert absent.any()
    np.testing.assert_array_equal(paddle[absent], before[absent])  # Paddle keeps them...
    ours_before = np.concatenate([init[None], ours[:-1]])
    np.testing.assert_array_equal(ours[absent], ours_before[absent])  # ...and so do we.
  else:
    np.testing.assert_allclose(ours, GOLDEN["dense_grad/params"], atol=TOL)
