"""inverse_sqrt_schedule and InverseSquareRootSchedule: values, jit, extremes, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ldl


def test_hand_computed_values():
  # Paddle's doc example: warmup 4, lr 1: 0, .25, .5, .75, 1, 1/sqrt(1.25) ...
  sched = optax_ldl.inverse_sqrt_schedule(4, 1.0)
  expected = [0, 0.25, 0.5, 0.75, 1.0] + [math.sqrt(4 / k) for k in range(5, 10)]
  np.testing.assert_allclose([float(sched(k)) for k in range(10)], expected, rtol=1e-6)


def test_jit_and_extreme_int32_steps_are_finite():
  sched = jax.jit(optax_ldl.inverse_sqrt_schedule(10, 2e-3, timescale=3.0))
  steps = jnp.array([0, 1, 9, 10, 2**20, 2**31 - 1], jnp.int32)
  values = np.asarray(jax.vmap(sched)(steps))
  assert np.all(np.isfinite(values)) and values[0] == 0.0
  assert 0 < values[-1] < 1e-6
  grad = jax.grad(lambda k: optax_ldl.inverse_sqrt_schedule(10, 1.0)(k))(0.0)
  assert np.isfinite(grad)


def test_init_value_is_fairseq_warmup_init_lr():
  sched = optax_ldl.inverse_sqrt_schedule(100, 1e-3, init_value=1e-7)
  assert float(sched(0)) == pytest.approx(1e-7)
  assert float(sched(50)) == pytest.approx(1e-7 + 50 * (1e-3 - 1e-7) / 100, rel=1e-6)
  # After warmup, fairseq's decay_factor * k**-0.5 with decay_factor = lr*sqrt(warmup).
  assert float(sched(400)) == pytest.approx(1e-3 * math.sqrt(100) / math.sqrt(400), rel=1e-6)


def test_timescale_is_hugging_face_inverse_sqrt():
  # transformers' get_inverse_sqrt_schedule: 1/sqrt((k + shift)/timescale), shift = t - w.
  w, t = 10, 25.0
  sched = optax_ldl.inverse_sqrt_schedule(w, 1.0, timescale=t)
  for k in (10, 11, 50, 1000):
    assert float(sched(k)) == pytest.approx(1 / math.sqrt((k + t - w) / t), rel=1e-6)


def test_used_as_an_optax_learning_rate():
  tx = optax.sgd(optax_ldl.inverse_sqrt_schedule(2, 1.0))
  state = tx.init(jnp.zeros(1))
  steps = []
  for _ in range(4):
    u, state = tx.update(jnp.ones(1), state)
    steps.append(-float(u[0]))
  np.testing.assert_allclose(steps, [0.0, 0.5, 1.0, math.sqrt(2 / 3)], rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(warmup_steps=0), r"warmup_steps must be an int >= 1, got 0"),
    (dict(warmup_steps=2.0), r"warmup_steps must be an int >= 1, got 2.0"),
    (dict(warmup_steps=4, learning_rate=-1.0), r"learning_rate must be a number >= 0, got -1.0"),
    (dict(warmup_steps=4, init_value=-1.0), r"init_value must be a number >= 0"),
    (dict(warmup_steps=4, timescale=0.0), r"timescale must be a number > 0"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises((ValueError, TypeError), match=match):
    optax_ldl.inverse_sqrt_schedule(**kwargs)


def test_paddle_class_steps_prints_and_restores(capsys):
  sched = optax_ldl.InverseSquareRootSchedule(4, 1.0, verbose=True)
  sched.step()
  out = capsys.readouterr().out.splitlines()
  assert out == ["Epoch 0: InverseSquareRootSchedule set learning rate to 0.0.",
                 "Epoch 1: InverseSquareRootSchedule set learning rate to 0.25."]
  saved = sched.state_dict()
  other = optax_ldl.InverseSquareRootSchedule(4, 1.0)
  other.set_state_dict(saved)
  assert (other.last_epoch, other.last_lr, other()) == (1, 0.25, 0.25)
  with pytest.raises(RuntimeError, match=r"Can't find \[ last_lr \] in state_dict"):
    other.set_state_dict({"last_epoch": 3})
  with pytest.raises(ValueError, match="last_epoch must be an int >= -1, got -2"):
    optax_ldl.InverseSquareRootSchedule(4, last_epoch=-2)


def test_paddle_class_restart_offsets_the_optax_call():
  # last_epoch=7: the next update uses lr(8), so the Optax count 0 maps to step 8.
  sched = optax_ldl.InverseSquareRootSchedule(4, 1.0, last_epoch=7)
  plain = optax_ldl.inverse_sqrt_schedule(4, 1.0)
  for count in range(5):
    assert float(sched(count)) == pytest.approx(float(plain(count + 8)), rel=1e-6)


def test_negative_counts_are_step_zero_never_a_negative_lr():
  sched = optax_ldl.inverse_sqrt_schedule(4, 1.0, init_value=0.1)
  counts = jnp.array([-(2**31), -5, -1, 0], jnp.int32)
  values = np.asarray(jax.jit(jax.vmap(sched))(counts))
  np.testing.assert_allclose(values, [0.1] * 4, rtol=1e-6)
  assert float(sched(-3.5)) == pytest.approx(0.1)
  paddle = optax_ldl.InverseSquareRootSchedule(4, 1.0)
  assert float(paddle(-10)) == 0.0
  assert float(jax.jit(paddle)(jnp.int32(-10))) == 0.0


@pytest.mark.parametrize("kwargs, arg", [
    (dict(warmup_steps=4, learning_rate=math.inf), "learning_rate"),
    (dict(warmup_steps=4, learning_rate=math.nan), "learning_rate"),
    (dict(warmup_steps=4, learning_rate=np.float32("inf")), "learning_rate"),
    (dict(warmup_steps=4, init_value=math.inf), "init_value"),
    (dict(warmup_steps=4, timescale=math.inf), "timescale"),
    (dict(warmup_steps=4, timescale=math.nan), "timescale"),
])
def test_non_finite_values_are_refused(kwargs, arg):
  with pytest.raises(ValueError, match=rf"inverse_sqrt_schedule: {arg} must be finite"):
    optax_ldl.inverse_sqrt_schedule(**kwargs)


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_paddle_class_refuses_non_finite_learning_rate(value):
  with pytest.raises(ValueError, match=r"learning_rate must be finite"):
    optax_ldl.InverseSquareRootSchedule(4, value)


@pytest.mark.parametrize("kwargs, arg, error", [
    (dict(warmup_steps=4, learning_rate=1 + 2j), "learning_rate", TypeError),
    (dict(warmup_steps=4, learning_rate="1e-3"), "learning_rate", TypeError),
    (dict(warmup_steps=4, learning_rate=None), "learning_rate", TypeError),
    (dict(warmup_steps=4, init_value=np.complex64(1)), "init_value", TypeError),
    (dict(warmup_steps=4, timescale=True), "timescale", TypeError),
    (dict(warmup_steps="4"), "warmup_steps", TypeError),
    (dict(warmup_steps=np.array([4])), "warmup_steps", TypeError),
])
def test_wrong_types_name_the_argument(kwargs, arg, error):
  with pytest.raises(error, match=rf"inverse_sqrt_schedule: {arg} must be"):
    optax_ldl.inverse_sqrt_schedule(**kwargs)
