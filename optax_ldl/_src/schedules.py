"""The inverse-square-root learning-rate schedule (Vaswani et al.; fairseq; PaddleNLP)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from optax_ldl._src import checks


def inverse_sqrt_schedule(
    warmup_steps: int,
    learning_rate: float = 1.0,
    *,
    init_value: float = 0.0,
    timescale: float | None = None,
) -> optax.Schedule:
  r"""Linear warmup, then decay proportional to the inverse square root of the step.

  With warmup :math:`w`, peak :math:`\eta`, start :math:`\eta_0` and timescale
  :math:`\tau` (default :math:`w`), the value at step :math:`k` is

  .. math::

    \text{lr}(k) = \begin{cases}
      \eta_0 + k\,\frac{\eta - \eta_0}{w} & k < w \\
      \eta\,\sqrt{\dfrac{\tau}{k - w + \tau}} & k \ge w
    \end{cases}

  With the defaults this is exactly PaddleNLP's ``InverseSquareRootSchedule``
  (``lr(0) = 0``, ``lr(k) = eta*sqrt(w/k)`` after warmup), which is also
  fairseq's ``inverse_sqrt`` (``init_value`` is fairseq's ``warmup_init_lr``)
  and Hugging Face's ``get_inverse_sqrt_schedule`` (``timescale``). It is a
  pure ``jnp`` function of the step: no NaN or inf for any int32 step, and a
  negative step counts as step 0 (the value is never negative).

  >>> schedule = inverse_sqrt_schedule(warmup_steps=4, learning_rate=1.0)
  >>> [round(float(schedule(k)), 4) for k in range(7)]
  [0.0, 0.25, 0.5, 0.75, 1.0, 0.8944, 0.8165]

  Args:
    warmup_steps: number of warmup steps :math:`w`, an int ``>= 1``.
    learning_rate: the peak value :math:`\eta`, reached at step :math:`w`;
      finite, ``>= 0``.
    init_value: the value at step 0, :math:`\eta_0` (fairseq's
      ``warmup_init_lr``); finite, ``>= 0``.
    timescale: :math:`\tau`, how fast the decay is, finite and ``> 0``;
      ``None`` means ``warmup_steps``.

  Returns:
    An ``optax.Schedule``: step count -> learning rate.

  References:
    Vaswani et al., `Attention Is All You Need
    <https://arxiv.org/abs/1706.03762>`_, 2017.
  """
  owner = "inverse_sqrt_schedule"
  checks.check_int(owner, "warmup_steps", warmup_steps, minimum=1, accepted="an int >= 1")
  checks.check_number(owner, "learning_rate", learning_rate, low=0.0, accepted="a number >= 0")
  checks.check_number(owner, "init_value", init_value, low=0.0, accepted="a number >= 0")
  if timescale is not None:
    checks.check_number(
        owner, "timescale", timescale, low=0.0, low_open=True,
        accepted="a number > 0, or None for warmup_steps",
    )
  warmup = float(warmup_steps)
  tau = warmup if timescale is None else timescale
  slope = (learning_rate - init_value) / warmup

  def schedule(count: jax.typing.ArrayLike) -> jnp.ndarray:
    # float32 covers every int32 count; both branches are finite for any
    # count, so jnp.where never selects (or differentiates) a NaN.
    # A negative count (a restored or hand-made state) is step 0: never a negative lr.
    k = jnp.maximum(jnp.asarray(count, jnp.float32), 0.0)
    warm = init_value + k * slope
    decayed = learning_rate * jnp.sqrt(tau / jnp.maximum(k - warmup + tau, tau))
    return jnp.where(k < warmup, warm, decayed)

  return schedule
