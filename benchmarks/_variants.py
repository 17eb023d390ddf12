"""Other ways of applying the layer ratio, for ``make_tx(..., scale=...)``.

Each variant is a function ``LayerDecay -> optax transformation`` that scales every
update by its parameter's ratio, as ``optax_ldl.scale_by_layer_ratio`` does; they
differ only in how the ratio reaches the compiled update. Labels and ratios come
from the public ``optax_ldl.LayerDecay(...).plan(tree)`` (an ``optax_ldl.LayerPlan``).

- ``plain``: the package's scheme without its guards: the state of
  ``scale_by_layer_ratio`` itself (its ``init``: the stored ratios as one float32
  vector, in the order of ``stored_labels(plan)``), each ratio read from the vector as
  it is (the package reads ``s / sign(s)`` times a 1-or-NaN factor from one comparison
  of the vector with the configured ratios: NaN for a zeroed or foreign state).
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
from optax_ldl._src.scale import stored_labels  # the state's order of the ratios


def times(u, ratio):
  """``u * ratio``: a stacked ratio (``.ratios`` along ``.axis``) broadcast per slice."""
  if hasattr(ratio, "axis"):
    shape = [-1 if j == ratio.axis else 1 for j in range(jnp.ndim(u))]
    ratio = jnp.reshape(jnp.asarray(ratio.ratios), shape)
  return u * jnp.asarray(ratio).astype(u.dtype)


def plain(decay: optax_ldl.LayerDecay) -> optax.GradientTransformation:
  """The package's state (its init), each stored ratio read from the vector as it is."""
  package = optax_ldl.scale_by_layer_ratio(decay)

  def update(updates, state, params=None):
    del params
    plan = decay.plan(updates)
    index = {label: i for i, label in enumerate(stored_labels(plan))}
    vectors = jax.tree.leaves(state.ratios)  # the one vector (whatever holds it), or none

    def scale(u, label):
      ratio = plan.ratios[label]
      if label in index:
        return times(u, vectors[0][index[label]])
      if not hasattr(ratio, "axis") and not isinstance(ratio, jax.Array) and ratio == 1:
        return u
      return times(u, ratio)

    return jax.tree.map(scale, updates, plan.label_tree(updates)), state

  return optax.GradientTransformation(package.init, update)


def partitioned(scale_fn):
  """A variant applying ``scale_fn(ratio)`` per label with ``optax.partition``."""

  def make(decay: optax_ldl.LayerDecay) -> optax.GradientTransformation:
    def partition(tree):
      plan = decay.plan(tree)
      transforms = {label: scale_fn(r) for label, r in plan.ratios.items()}
      return optax.partition(transforms, plan.label_tree(tree))

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


def _value(ratio, f):
  """``f`` of the ratio as a float32 array; a stacked ratio keeps its axis."""
  if hasattr(ratio, "axis"):
    return ratio._replace(ratios=f(jnp.asarray(ratio.ratios, jnp.float32)))
  return f(jnp.float32(ratio))


def _barrier(ratio, updates):
  del updates
  return _value(ratio, jax.lax.optimization_barrier)


def _cond(ratio, updates):
  x = jax.tree.leaves(updates)[0].reshape(-1)[0]
  return _value(ratio, lambda r: jax.lax.cond(x == x, lambda: r, lambda: r))


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
