"""Stacked (scanned) layers: one array per weight with a ``layers`` axis.

``flax.linen.scan`` (``variable_axes={'params': 0}``), ``nnx.scan``/``nnx.vmap``
and MaxText (``decoder/layers/...``, ``param_scan_axis=1``) keep all the layers
of a transformer in one array per weight. The layer-wise ratio of such a leaf is
a vector ``r[i]`` (the ratio layer ``i`` would get unrolled), broadcast along
the stacked axis.

Which leaves are stacked is set by the ``stacked`` argument of
:func:`optax_ldl.adamwdl` (and :class:`optax_ldl.LayerDecay`). Under the path
rule, ``optax_ldl._src.rules.path_layers`` reads it with the whole tree in view;
under a custom ``set_param_lr_fun``, :func:`leaf_spec` reads it leaf by leaf:

* ``"auto"`` (default): a leaf whose path has a key ``layers``, ``scan``,
  ``scanned_layers`` or ``Scan<Name>[_N]`` (what ``nn.scan(Block)`` is named by
  default, e.g. ``ScanBlock_0``) that is *not* followed by a numeric key, and
  whose axis 0 has length ``n_layers`` (any length when it is ``None``), is
  stacked along axis 0. Only used when the layer-wise decay is not the number 1.
* ``None`` or ``False``: no leaf is stacked.
* a mapping ``{path_prefix: axis}``: leaves whose path name (keys joined by
  ``/``) is the prefix or starts with ``prefix + '/'`` are stacked along
  ``axis`` (the longest matching prefix wins; an axis of ``None`` unstacks).
* a callable ``path_name -> axis | None``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.core  # jax.core.Tracer: jax imports it, but type checkers need it named.
import jax.numpy as jnp
import numpy as np

from optax_ldl._src import rules

# Keys that hold a stack of layers in the common Flax scan layouts.
STACK_KEY = re.compile(r"^(?:layers|scan|scanned_layers|Scan[A-Z]\w*?(?:_\d+)?)$")



class StackedRatio(NamedTuple):
  """The ratio of a stacked group: ``ratios[i]`` for slice ``i`` along ``axis``.

  Attributes:
    ratios: a 1-D array (or sequence) of length ``n_layers``.
    axis: the stacked axis (non-negative).
  """

  ratios: Any
  axis: int


class StackSpec(NamedTuple):
  """How one leaf is stacked.

  Attributes:
    axis: the stacked axis, non-negative.
    length: the leaf's length along ``axis`` (``n_layers``).
    key_index: the index (in the name split by ``/``) of the key holding the
      stack, which the unrolled name replaces by ``layers_i``; ``None`` if no
      key of the path is a stack key.
  """

  axis: int
  length: int
  key_index: int | None


def _stack_key_index(tokens: list[str]) -> int | None:
  """The last key that is a stack key not followed by a numeric key."""
  found = None
  for i, token in enumerate(tokens):
    if STACK_KEY.match(token) and not (i + 1 < len(tokens) and tokens[i + 1].isdigit()):
      found = i
  return found


def leaf_spec(
    stacked: Any, name: str, shape: tuple[int, ...], n_layers: Any, explicit_only: bool
) -> StackSpec | None:
  """How the leaf ``name`` of ``shape`` is stacked, or ``None``.

  Args:
    stacked: the ``stacked`` argument.
    name: the leaf's path name.
    shape: its shape.
    n_layers: the layer count (an int, or traced).
    explicit_only: ignore ``"auto"`` (the decay is 1, stacking changes nothing).

  Raises:
    ValueError: an explicitly stacked axis out of range for the leaf, or whose
      length is not ``n_layers``.
  """
  if stacked is None or stacked is False:
    return None
  tokens = name.split("/")
  concrete_n = None if n_layers is None or isinstance(n_layers, jax.core.Tracer) else int(n_layers)
  if isinstance(stacked, str):  # "auto"
    if explicit_only or not shape:
      return None
    key_index = _stack_key_index(tokens[:-1])
    if key_index is None:
      return None
    if concrete_n is not None and shape[0] != concrete_n:
      return None
    return StackSpec(0, shape[0], key_index)
  found = rules.explicit_axis(stacked, name, shape, concrete_n)
  if found is None:
    return None
  axis, container = found
  if isinstance(stacked, Mapping):  # the unrolled name replaces the prefix's last key.
    n_prefix = len(container.split("/")) if container else 0
    key_index = n_prefix - 1 if 0 < n_prefix < len(tokens) else _stack_key_index(tokens[:-1])
  else:
    key_index = _stack_key_index(tokens[:-1])
  return StackSpec(axis, shape[axis], key_index)


def unrolled_name(name: str, spec: StackSpec, i: int) -> str:
  """The name slice ``i`` would have unrolled: the stack key becomes ``layers_i``.

  >>> unrolled_name('params/decoder/layers/mlp/kernel', StackSpec(1, 4, 2), 3)
  'params/decoder/layers_3/mlp/kernel'
  """
  tokens = name.split("/")
  if spec.key_index is None:
    return "/".join(tokens[:-1] + [f"layers_{i}", tokens[-1]])
  tokens[spec.key_index] = f"layers_{i}"
  return "/".join(tokens)


def slice_shape(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
  return tuple(s for j, s in enumerate(shape) if j != axis)


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
