"""Paddle's three gradient-clipping strategies, as Optax transformations.

Each computes exactly what ``paddle.nn.ClipGradByGlobalNorm``, ``ClipGradByNorm``
and ``ClipGradByValue`` compute: a scale ``c / max(norm, c)`` (so gradients below
the threshold are multiplied by exactly 1), or an elementwise clip.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from optax_ldl._src import checks


def _sum_of_squares(g: jax.Array) -> jax.Array:
  # Paddle accumulates half-precision norms in float32.
  acc = jnp.promote_types(g.dtype, jnp.float32)
  return jnp.sum(jnp.square(g.astype(acc)))


def _scale(g: jax.Array, norm: jax.Array, clip_norm: float) -> jax.Array:
  scale = clip_norm / jnp.maximum(norm, clip_norm)
  return g * scale.astype(g.dtype)


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
    clip_norm: the largest global L2 norm, ``> 0``.

  Returns:
    A stateless ``optax.GradientTransformation``.
  """
  checks.check_number(
      "clip_grad_by_global_norm", "clip_norm", clip_norm, low=0.0, low_open=True,
      accepted="a number > 0",
  )

  def update_fn(updates, state, params=None):
    del params
    leaves = jax.tree.leaves(updates)
    if not leaves:
      return updates, state
    norm = jnp.sqrt(sum(_sum_of_squares(g) for g in leaves))
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
    clip_norm: the largest L2 norm of any one leaf, ``> 0``.

  Returns:
    A stateless ``optax.GradientTransformation``.
  """
  checks.check_number(
      "clip_grad_by_norm", "clip_norm", clip_norm, low=0.0, low_open=True,
      accepted="a number > 0",
  )

  def update_fn(updates, state, params=None):
    del params
    return (
        jax.tree.map(
            lambda g: _scale(g, jnp.sqrt(_sum_of_squares(g)), clip_norm), updates
        ),
        state,
    )

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
    max: the upper bound; ``> 0`` when ``min`` is omitted.
    min: the lower bound, ``<= max``; ``None`` means ``-max``.

  Returns:
    A stateless ``optax.GradientTransformation``.
  """
  owner = "clip_grad_by_value"
  if min is None:
    checks.check_number(owner, "max", max, low=0.0, low_open=True,
                        accepted="a number > 0 when min is None")
    min = -float(max)  # noqa: A001
  else:
    checks.check_number(owner, "max", max, accepted="a number")
    checks.check_number(owner, "min", min, high=float(max),
                        accepted=f"a number <= max (max={max!r})")
  lo, hi = float(min), float(max)

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda g: jnp.clip(g, lo, hi).astype(g.dtype), updates), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)
