"""Other ways of applying the layer ratio, for ``make_tx(..., scale=...)``.

Each variant is a function ``LayerDecay -> optax transformation`` that scales every
update by its parameter's ratio, as ``optax_ldl.scale_by_layer_ratio`` does; they
differ only in how the ratio reaches the compiled update. Labels and ratios come
from the public ``optax_ldl.LayerDecay(...).groups(tree)``.

- ``plain``: ``scale_by_layer_ratio`` without its zeroed-state guard: each unstacked
  group's ratio a float32 scalar in the state, read as ``state.ratios[label]`` (the
  package reads ``s / sign(s)``, NaN for a zeroed entry).
- ``literal``: ``optax.partition({label: optax.scale(ratio)}, labels)``: constants.
- ``barrier``: as ``literal``, each ratio through ``jax.lax.optimization_barrier``.
- ``cond``: no state; each ratio the output of a ``lax.cond`` with identical branches
  on a runtime predicate (an element of the updates), so that it is not a constant.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import optax_ldl


def times(u, ratio):
  """``u * ratio``: a stacked ratio (``.ratios`` along ``.axis``) broadcast per slice."""
  if hasattr(ratio, "axis"):
    shape = [-1 if j == ratio.axis else 1 for j in range(jnp.ndim(u))]
    ratio = jnp.reshape(jnp.asarray(ratio.ratios), shape)
  return u * jnp.asarray(ratio).astype(u.dtype)


def _stored(ratio) -> bool:
  """Whether ``scale_by_layer_ratio`` keeps this group's ratio in its state."""
  return not (hasattr(ratio, "axis") or isinstance(ratio, jax.Array) or ratio in (0, 1))


def plain(decay: optax_ldl.LayerDecay) -> optax.GradientTransformation:
  """Ratios in the state, read as they are (no zeroed-state guard)."""

  def init(params):
    groups = decay.groups(params)
    return optax_ldl.ScaleByLayerRatioState(
      {label: jnp.float32(r) for label, r in groups.ratios.items() if _stored(r)}
    )

  def update(updates, state, params=None):
    del params
    groups = decay.groups(updates)

    def scale(u, label):
      ratio = groups.ratios[label]
      if label in state.ratios:
        return times(u, state.ratios[label])
      if not hasattr(ratio, "axis") and not isinstance(ratio, jax.Array) and ratio == 1:
        return u
      return times(u, ratio)

    return jax.tree.map(scale, updates, groups.labels), state

  return optax.GradientTransformation(init, update)


def partitioned(scale_fn):
  """A variant applying ``scale_fn(ratio)`` per label with ``optax.partition``."""

  def make(decay: optax_ldl.LayerDecay) -> optax.GradientTransformation:
    def partition(tree):
      groups = decay.groups(tree)
      transforms = {label: scale_fn(r) for label, r in groups.ratios.items()}
      return optax.partition(transforms, groups.labels)

    return optax.GradientTransformation(
      lambda params: partition(params).init(params),
      lambda updates, state, params=None: partition(updates).update(updates, state, params),
    )

  return make


def stateless(ratio_of):
  """An ``optax.scale``-like transformation whose ratio is ``ratio_of(ratio, updates)``."""

  def scale_fn(ratio):
    def update(updates, state, params=None):
      del params
      r = ratio_of(ratio, updates)
      return jax.tree.map(lambda u: times(u, r), updates), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)

  return scale_fn


def _barrier(ratio, updates):
  del updates
  return jax.lax.optimization_barrier(jnp.float32(ratio))


def _cond(ratio, updates):
  x = jax.tree.leaves(updates)[0].reshape(-1)[0]
  constant = lambda: jnp.float32(ratio)  # noqa: E731
  return jax.lax.cond(x == x, constant, constant)


def _literal(ratio):
  if hasattr(ratio, "axis"):
    return stateless(lambda r, _: r)(ratio)
  return optax.scale(ratio)


VARIANTS = {
  "plain": plain,
  "literal": partitioned(_literal),
  "barrier": partitioned(stateless(_barrier)),
  "cond": partitioned(stateless(_cond)),
}
