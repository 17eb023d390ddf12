"""Paddle's three gradient-clipping strategies, as Optax transformations.

Each computes what ``paddle.nn.ClipGradByGlobalNorm``, ``ClipGradByNorm`` and
``ClipGradByValue`` compute: a scale ``c / max(norm, c)`` (so gradients below
the threshold are multiplied by exactly 1), or an elementwise clip.

Two improvements over Paddle, which change no result in the range where
Paddle's own are right (the parity tests pin that):

* Norms are overflow- and underflow-safe. Paddle sums ``g**2``, which is
  ``inf`` in float32 once an element exceeds about ``1.8e19`` (the "clipped"
  step is then exactly 0) and loses tiny gradients to underflow. Where the plain
  sum of squares is not a normal finite number, the norm is computed as
  ``m * sqrt(sum((g / m)**2))`` with ``m = max |g|``.
* Complex gradients use ``|g|**2`` (as ``optax.clip_by_global_norm`` does),
  not ``g**2``.

A clip norm of ``inf`` means no clipping (gradients pass unchanged).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from optax_ldl._src import checks


def _acc_dtype(g: jax.Array) -> jnp.dtype:
  """The real dtype norms accumulate in: float32 at least (Paddle's for half precision)."""
  return jnp.promote_types(jnp.real(jnp.zeros((), g.dtype)).dtype, jnp.float32)


def _sum_of_squares(g: jax.Array, divisor: jax.Array | None = None) -> jax.Array:
  """``sum(|g / divisor|**2)``, accumulated in at least float32."""
  acc = _acc_dtype(g)
  if jnp.iscomplexobj(g):
    x = g.astype(jnp.promote_types(g.dtype, jnp.complex64))
    if divisor is not None:
      x = x / divisor.astype(acc)
    return jnp.sum(jnp.square(jnp.real(x)) + jnp.square(jnp.imag(x)))
  x = g.astype(acc)
  if divisor is not None:
    x = x / divisor.astype(acc)
  return jnp.sum(jnp.square(x))


def _max_abs(g: jax.Array) -> jax.Array:
  return jnp.max(jnp.abs(g).astype(_acc_dtype(g)), initial=0)


def _l2_norm(leaves: list[jax.Array]) -> jax.Array:
  """The L2 norm of all ``leaves`` together: Paddle's sum, made overflow-safe.

  The plain ``sqrt(sum(|g|**2))`` (Paddle's numbers, bit for bit) where that sum
  is a normal finite number; ``m * sqrt(sum(|g / m|**2))``, ``m = max |g|``,
  where it overflowed or underflowed. ``inf`` or NaN in a gradient give an
  ``inf`` or NaN norm, as in Paddle.
  """
  plain = jnp.asarray(sum(_sum_of_squares(g) for g in leaves))
  m = jnp.asarray(0, plain.dtype)
  for g in leaves:
    m = jnp.maximum(m, _max_abs(g).astype(plain.dtype))
  safe = jnp.where(jnp.isfinite(m) & (m > 0), m, jnp.ones_like(m))
  scaled = safe * jnp.sqrt(sum(_sum_of_squares(g, safe) for g in leaves))
  # Below tiny/eps the subnormal terms of the plain sum lose more than rounding.
  finfo = jnp.finfo(plain.dtype)
  normal = jnp.isfinite(plain) & (plain >= float(finfo.tiny) / float(finfo.eps))
  return jnp.where(normal, jnp.sqrt(plain), scaled)


def _scale(g: jax.Array, norm: jax.Array, clip_norm: float) -> jax.Array:
  # c / max(norm, c), Paddle's scale, written so that c = inf gives 1 (no clipping).
  scale = jnp.where(norm > clip_norm, clip_norm / norm, jnp.ones_like(norm))
  return g * scale.astype(g.dtype)


def _identity(updates, state, params=None):
  del params
  return updates, state


def _no_clip(arg: float) -> bool:
  value = checks.concrete_float(arg)
  return value is not None and math.isinf(value)


def clip_grad_by_global_norm(clip_norm: float) -> optax.GradientTransformation:
  r"""Scales all gradients by :math:`c / \max(\|g\|_2, c)`, :math:`\|g\|_2` over all leaves.

  Paddle's ``ClipGradByGlobalNorm``. It equals ``optax.clip_by_global_norm``
  mathematically, but rounds like Paddle (one scale factor, multiplied in).

  >>> import jax.numpy as jnp
  >>> tx = clip_grad_by_global_norm(1.0)
  >>> g = {'a': jnp.array([3.0]), 'b': jnp.array([4.0])}
  >>> u, _ = tx.update(g, tx.init(g))
  >>> [round(float(u['a'][0]), 4), round(float(u['b'][0]), 4)]
  [0.6, 0.8]

  Args:
    clip_norm: the largest global L2 norm, ``> 0``; ``inf`` for no clipping.

  Returns:
    A stateless ``optax.GradientTransformation``.
  """
  checks.check_number(
      "clip_grad_by_global_norm", "clip_norm", clip_norm, low=0.0, low_open=True,
      accepted="a number > 0 (inf: no clipping)", allow_inf=True,
  )
  if _no_clip(clip_norm):
    return optax.GradientTransformation(optax.init_empty_state, _identity)

  def update_fn(updates, state, params=None):
    del params
    leaves = jax.tree.leaves(updates)
    if not leaves:
      return updates, state
    norm = _l2_norm(leaves)
    return jax.tree.map(lambda g: _scale(g, norm, clip_norm), updates), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def clip_grad_by_norm(clip_norm: float) -> optax.GradientTransformation:
  r"""Scales each gradient leaf by :math:`c / \max(\|g_i\|_2, c)`, its own L2 norm.

  Paddle's ``ClipGradByNorm`` (per tensor, unlike ``optax.clip`` which is by value).

  >>> import jax.numpy as jnp
  >>> tx = clip_grad_by_norm(1.0)
  >>> g = {'a': jnp.array([3.0, 4.0]), 'b': jnp.array([0.5])}
  >>> u, _ = tx.update(g, tx.init(g))
  >>> [round(float(x), 4) for x in u['a']], float(u['b'][0])
  ([0.6, 0.8], 0.5)

  Args:
    clip_norm: the largest L2 norm of any one leaf, ``> 0``; ``inf`` for no clipping.

  Returns:
    A stateless ``optax.GradientTransformation``.
  """
  checks.check_number(
      "clip_grad_by_norm", "clip_norm", clip_norm, low=0.0, low_open=True,
      accepted="a number > 0 (inf: no clipping)", allow_inf=True,
  )
  if _no_clip(clip_norm):
    return optax.GradientTransformation(optax.init_empty_state, _identity)

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda g: _scale(g, _l2_norm([g]), clip_norm), updates), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def clip_grad_by_value(
    max: float, min: float | None = None  # noqa: A002 - Paddle's names.
) -> optax.GradientTransformation:
  """Clips each gradient element to ``[min, max]`` (``min`` defaults to ``-max``).

  Paddle's ``ClipGradByValue``, argument names and order included.

  >>> import jax.numpy as jnp
  >>> tx = clip_grad_by_value(0.3, min=-0.1)
  >>> u, _ = tx.update(jnp.array([-1.0, 0.2, 1.0]), tx.init(None))
  >>> [round(float(x), 4) for x in u]
  [-0.1, 0.2, 0.3]

  Args:
    max: the upper bound; ``> 0`` when ``min`` is omitted; ``inf`` for none.
    min: the lower bound, ``<= max`` (``-inf`` for none); ``None`` means ``-max``.

  Returns:
    A stateless ``optax.GradientTransformation``.
  """
  owner = "clip_grad_by_value"
  if min is None:
    checks.check_number(owner, "max", max, low=0.0, low_open=True,
                        accepted="a number > 0 when min is None (inf: no clipping)",
                        allow_inf=True)
    min = -float(max)  # noqa: A001
  else:
    checks.check_number(owner, "max", max, low=-math.inf, low_open=True,
                        accepted="a number > -inf", allow_inf=True)
    checks.check_number(owner, "min", min, high=float(max), high_open=math.isinf(float(max)),
                        accepted=f"a number <= max (max={max!r}), < inf", allow_inf=True)
  lo, hi = float(min), float(max)

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda g: jnp.clip(g, lo, hi).astype(g.dtype), updates), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)
