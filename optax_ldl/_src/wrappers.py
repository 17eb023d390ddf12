"""Wrappers usable around any Optax optimizer: Paddle's ``lazy_mode`` and
``multi_precision``, and integer leaves that are never updated."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from optax_ldl._src.tree_names import is_float

LOW_PRECISION = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))
# Names optax gives the per-parameter moments in its states (scale_by_adam's mu/nu,
# scale_by_lion's mu, trace's trace, ...): lazy_rows keeps their untouched rows.
MOMENT_NAMES = ("mu", "nu", "trace")


class LazyRowsState(NamedTuple):
  """State of :func:`lazy_rows`: the inner transformation's state."""

  inner_state: Any


def _row_mask(g: Any) -> jax.Array | None:
  """Which rows (slices along axis 0) of a 2-D+ gradient have any non-zero."""
  if jnp.ndim(g) < 2:
    return None
  return jnp.any(g != 0, axis=tuple(range(1, jnp.ndim(g))))


def _keep_rows(rows: jax.Array | None, new: Any, old: Any) -> Any:
  if rows is None or isinstance(new, optax.MaskedNode):
    return new
  return jnp.where(rows.reshape(rows.shape + (1,) * (jnp.ndim(new) - 1)), new, old)


def _is_namedtuple(node: Any) -> bool:
  return isinstance(node, tuple) and hasattr(node, "_fields")


def _moments(state: Any, name: str) -> list[Any]:
  """Every subtree of ``state`` held in a field called ``name``, in tree order."""
  found = []

  def visit(node):
    if _is_namedtuple(node):
      node = cast(Any, node)
      for field in node._fields:
        value = getattr(node, field)
        if field == name:
          found.append(value)
        else:
          visit(value)
    elif isinstance(node, (tuple, list)):
      for value in node:
        visit(value)
    elif isinstance(node, dict):
      for value in node.values():
        visit(value)

  visit(state)
  return found


def _replace_moments(state: Any, name: str, values: list[Any]) -> Any:
  """``state`` with the fields called ``name`` replaced by ``values``, in tree order."""
  values = list(values)

  def visit(node):
    if _is_namedtuple(node):
      node = cast(Any, node)
      return node._replace(**{
          field: values.pop(0) if field == name else visit(getattr(node, field))
          for field in node._fields
      })
    if isinstance(node, tuple):
      return tuple(visit(v) for v in node)
    if isinstance(node, list):
      return [visit(v) for v in node]
    if isinstance(node, dict):
      return {k: visit(v) for k, v in node.items()}
    return node

  return visit(state)


def lazy_rows(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """Paddle's ``lazy_mode`` on dense gradients, around any optimizer.

  A row (slice along axis 0) of a parameter with two or more dimensions whose
  gradient is entirely zero keeps its parameter value (the update is 0, weight
  decay included) and its moments: every state field named ``mu``, ``nu`` or
  ``trace`` (``optax.scale_by_adam``, ``scale_by_lion``, ``trace``), found by
  name wherever it sits in ``inner``'s state. 0-D and 1-D parameters update
  densely, as Paddle only gives row-sparse gradients to embedding tables. Step
  counts and bias corrections advance for every row, as in Paddle.

  >>> import jax.numpy as jnp, optax
  >>> tx = lazy_rows(optax.adam(0.1))
  >>> g = jnp.array([[1.0, 1.0], [0.0, 0.0]])
  >>> u, _ = tx.update(g, tx.init(g))
  >>> [round(float(x), 3) for x in u[:, 0]]
  [-0.1, 0.0]

  Args:
    inner: an optimizer whose state has per-parameter moments named as above.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    state = inner.init(params)
    if not any(_moments(state, name) for name in MOMENT_NAMES):
      raise ValueError(
          "lazy_rows (lazy_mode=True): the inner optimizer's state has no "
          f"per-parameter moments named {MOMENT_NAMES}, so there is nothing to keep "
          f"for untouched rows; its state is {type(state).__name__}."
      )
    return LazyRowsState(state)

  def update_fn(updates, state, params=None, **extra_args):
    rows = jax.tree.map(_row_mask, updates)
    new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
    is_none = lambda x: x is None  # noqa: E731
    for name in MOMENT_NAMES:
      kept = [
          jax.tree.map(_keep_rows, rows, new, old, is_leaf=is_none)
          for new, old in zip(_moments(new_inner, name), _moments(state.inner_state, name))
      ]
      if kept:
        new_inner = _replace_moments(new_inner, name, kept)
    new_updates = jax.tree.map(
        lambda r, u: u if u is None else _keep_rows(r, u, jnp.zeros_like(u)),
        rows, new_updates, is_leaf=is_none,
    )
    return new_updates, LazyRowsState(new_inner)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class MasterWeightsState(NamedTuple):
  """State of :func:`master_weights`.

  Attributes:
    master: float32 copies of the float16/bfloat16 parameters
      (``optax.MaskedNode()`` for every other leaf).
    inner_state: the inner transformation's state, built on float32 params.
  """

  master: Any
  inner_state: Any


def is_low_precision(x: Any) -> bool:
  return jnp.dtype(getattr(x, "dtype", jnp.float32)) in LOW_PRECISION


def _full(params: Any, master: Any) -> Any:
  """``params`` with each half-precision leaf replaced by its float32 master."""
  return jax.tree.map(lambda p, m: m if is_low_precision(p) else p, params, master)


def master_weights(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """Paddle's ``multi_precision``: float32 master weights for half-precision params.

  ``inner`` sees float32 params (the master copy), float32 gradients and keeps
  float32 state (its moments cannot overflow in float16), so its trajectory is
  the float32 run's. The update of a half-precision leaf has the incoming
  update's dtype (as optax does, and ``optax.apply_if_finite`` and
  ``optax.MultiSteps`` require) and is the master rounded to the leaf's dtype
  minus the param: ``optax.apply_updates`` gives
  exactly the rounded master whenever that difference is representable, which
  it is unless one step moves a value by more than its own magnitude (then
  within one unit in the last place); the master itself stays exact.

  >>> import jax.numpy as jnp, optax
  >>> tx = master_weights(optax.sgd(1e-3))
  >>> p = jnp.ones(2, jnp.bfloat16)
  >>> u, state = tx.update(jnp.ones(2, jnp.bfloat16), tx.init(p), p)
  >>> u.dtype, float(state.master[0])
  (dtype(bfloat16), 0.9990000128746033)

  Args:
    inner: the transformation to run in float32.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    master = jax.tree.map(
        lambda p: jnp.asarray(p, jnp.float32) if is_low_precision(p) else optax.MaskedNode(),
        params,
    )
    return MasterWeightsState(master, inner.init(_full(params, master)))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError(
          "multi_precision=True needs the params in update: call "
          "tx.update(grads, state, params)."
      )
    grads = jax.tree.map(
        lambda g, p: g.astype(jnp.float32) if is_low_precision(p) else g, updates, params
    )
    new_updates, inner_state = inner.update(
        grads, state.inner_state, _full(params, state.master), **extra_args
    )
    master = jax.tree.map(
        lambda p, m, u: m + u if is_low_precision(p) else optax.MaskedNode(),
        params, state.master, new_updates,
    )
    # The update of a half-precision leaf is the rounded master minus the param, in the
    # dtype of the incoming update (as optax.apply_if_finite's rejected branch returns).
    new_updates = jax.tree.map(
        lambda p, m, u, g: (
            (m.astype(p.dtype).astype(jnp.float32) - p.astype(jnp.float32)).astype(g.dtype)
            if is_low_precision(p) else u
        ),
        params, master, new_updates, updates,
    )
    return new_updates, MasterWeightsState(master, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def float_leaves_only(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """Runs ``inner`` on floating-point leaves; integer leaves get a zero update.

  Integer leaves (step counters, token ids kept in the params) receive ``float0``
  or integer gradients; their update is zero in the param's own dtype, so
  ``optax.apply_updates`` leaves them unchanged.

  >>> import jax.numpy as jnp, optax
  >>> tx = float_leaves_only(optax.sgd(1.0))
  >>> p = {'w': jnp.ones(2), 'step': jnp.array(3)}
  >>> u, _ = tx.update({'w': jnp.ones(2), 'step': jnp.array(1)}, tx.init(p), p)
  >>> u['w'].tolist(), int(u['step'])
  ([-1.0, -1.0], 0)
  """
  masked = optax.masked(inner, lambda tree: jax.tree.map(is_float, tree))

  def zero(u, p=None):
    if is_float(u):
      return u
    dtype = jnp.int32 if p is None else jnp.result_type(p)
    dtype = jnp.int32 if dtype == jax.dtypes.float0 else dtype
    return jnp.zeros(jnp.shape(u), dtype)

  def update_fn(updates, state, params=None, **extra_args):
    updates, state = masked.update(updates, state, params, **extra_args)
    if params is None:
      return jax.tree.map(zero, updates), state
    return jax.tree.map(zero, updates, params), state

  return optax.GradientTransformationExtraArgs(masked.init, update_fn)


def warn_half_precision(params: Any, owner: str) -> None:
  """Warns once per call when half-precision float params train without master weights."""
  dtypes = sorted({
      str(jnp.dtype(p.dtype)) for p in jax.tree.leaves(params)
      if hasattr(p, "dtype") and is_low_precision(p)
  })
  if dtypes:
    warnings.warn(
        f"{owner}: the params include {'/'.join(dtypes)} leaves and multi_precision is "
        "False: Adam's update is applied in that precision, so small steps round to no "
        "change and a float16 second moment can overflow. Pass multi_precision=True for "
        "float32 master weights and moments.",
        UserWarning,
        stacklevel=3,
    )
