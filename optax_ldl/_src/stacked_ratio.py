"""The lr ratio of a stacked (scanned) leaf: one ratio per layer slice, broadcast along its axis.

Which leaves are stacked, and along which axis, is the path rule's business
(``optax_ldl._src.path_rule.stacks``); this module holds what the scaling
transformation does with the ratios once it knows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.core  # jax.core.Tracer: jax imports it, but type checkers need it named.
import jax.numpy as jnp
import numpy as np


class StackedRatio(NamedTuple):
  """The ratio of a stacked group: ``ratios[i]`` for slice ``i`` along ``axis``.

  Attributes:
    ratios: a 1-D array (or sequence) of length ``n_layers``.
    axis: the stacked axis (non-negative).
  """

  ratios: Any
  axis: int


def broadcast_ratio(ratios: Any, axis: int, ndim: int) -> Any:
  """``ratios`` reshaped to rank ``ndim`` with its values along ``axis``."""
  return jnp.reshape(jnp.asarray(ratios), [-1 if j == axis else 1 for j in range(ndim)])


def times_ratio(u: Any, ratio: Any) -> Any:
  """``u * ratio``, the ratio cast to ``u``'s float dtype (as optax.scale's weak scalar)."""
  ratio = jnp.asarray(ratio)
  if jnp.issubdtype(jnp.result_type(u), jnp.inexact):
    ratio = ratio.astype(jnp.result_type(u))
  return u * ratio


def ratio_vector(values: list[Any]) -> Any:
  """The ratios as a 1-D array: numpy (float64) when all are concrete."""
  if all(not isinstance(v, jax.core.Tracer) for v in values):
    return np.asarray([float(v) for v in values], dtype=np.float64)
  return jnp.stack([jnp.asarray(v) for v in values])
