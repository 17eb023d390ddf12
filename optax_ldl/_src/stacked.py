"""Stacked (scanned) layers: one array per weight with a ``layers`` axis.

``flax.linen.scan`` (``variable_axes={'params': 0}``), ``nnx.scan``/``nnx.vmap``
and MaxText (``decoder/layers/...``, ``param_scan_axis=1``) keep all the layers
of a transformer in one array per weight. The layer-wise ratio of such a leaf is
a vector ``r[i]`` (the ratio layer ``i`` would get unrolled), broadcast along
the stacked axis.

Which leaves are stacked is set by the ``stacked`` argument of
:func:`optax_ldl.adamwdl` (and :func:`optax_ldl.scale_by_layer_ratio`,
:func:`optax_ldl.layer_groups`, :func:`optax_ldl.describe`):

* ``"auto"`` (default): a leaf whose path has a key ``layers``, ``scan``,
  ``scanned_layers`` or ``Scan<Name>[_N]`` (what ``nn.scan(Block)`` is named by
  default, e.g. ``ScanBlock_0``) that is *not* followed by a numeric key, and
  whose axis 0 has length ``n_layers``, is stacked along axis 0. Only used when
  the layer-wise decay is not 1 (a ratio of 1 everywhere needs no stacking).
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
import optax

# Keys that hold a stack of layers in the common Flax scan layouts.
STACK_KEY = re.compile(r"^(?:layers|scan|scanned_layers|Scan[A-Z]\w*?(?:_\d+)?)$")

ACCEPTED = (
    "'auto', None/False, a dict {path prefix (keys joined by '/'): axis (int)}, "
    "or a function path_name -> axis (int) or None"
)


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


def _lookup_prefix(stacked: Mapping[str, Any], name: str) -> tuple[bool, Any, str | None]:
  best = None
  for prefix in stacked:
    p = prefix.rstrip("/")
    if name == p or name.startswith(p + "/") or p == "":
      if best is None or len(p) > len(best.rstrip("/")):
        best = prefix
  if best is None:
    return False, None, None
  return True, stacked[best], best.rstrip("/")


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
  if isinstance(stacked, Mapping):
    found, axis, prefix = _lookup_prefix(stacked, name)
    if not found or axis is None:
      return None
    n_prefix = len(prefix.split("/")) if prefix else 0
    key_index = n_prefix - 1 if 0 < n_prefix < len(tokens) else _stack_key_index(tokens[:-1])
    source = f"stacked[{prefix!r}]"
  else:
    axis = stacked(name)
    if axis is None or axis is False:
      return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
      raise TypeError(
          f"stacked({name!r}) returned {axis!r}; the function must return an int "
          "axis or None."
      )
    key_index = _stack_key_index(tokens[:-1])
    source = f"stacked({name!r})"
  ndim = len(shape)
  if not -ndim <= axis < ndim:
    raise ValueError(
        f"parameter {name!r} of shape {tuple(shape)} is stacked along axis {axis} "
        f"({source}), which is out of range for its {ndim} dimension(s); the axis "
        f"must be in [{-ndim}, {ndim}) (n_layers={concrete_n}). stacked accepts "
        f"{ACCEPTED}."
    )
  axis = int(axis) % ndim
  if concrete_n is not None and shape[axis] != concrete_n:
    raise ValueError(
        f"parameter {name!r} of shape {tuple(shape)} is stacked along axis {axis} "
        f"({source}), whose length {shape[axis]} is not n_layers={concrete_n}; "
        "the stacked axis must hold one slice per layer. Fix the axis or "
        f"n_layers; stacked accepts {ACCEPTED}."
    )
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


def scale_by_stacked_ratio(ratios: Any, axis: int) -> optax.GradientTransformation:
  """Multiplies slice ``i`` (along ``axis``) of every update by ``ratios[i]``.

  The state holds no arrays.

  >>> import jax.numpy as jnp
  >>> tx = scale_by_stacked_ratio(jnp.array([0.25, 0.5]), axis=1)
  >>> u, _ = tx.update({'w': jnp.ones((3, 2))}, tx.init(None))
  >>> u['w'][0].tolist()
  [0.25, 0.5]

  Args:
    ratios: a 1-D array (or sequence) of per-slice ratios (may be traced).
    axis: the stacked axis of every leaf it sees.

  Returns:
    An ``optax.GradientTransformation``.
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params

    def scale(u):
      return times_ratio(u, broadcast_ratio(ratios, axis, jnp.ndim(u)))

    return jax.tree.map(scale, updates), state

  return optax.GradientTransformation(init_fn, update_fn)


def ratio_vector(values: list[Any]) -> Any:
  """The ratios as a 1-D array: numpy (float64) when all are concrete."""
  if all(not isinstance(v, jax.core.Tracer) for v in values):
    return np.asarray([float(v) for v in values], dtype=np.float64)
  return jnp.stack([jnp.asarray(v) for v in values])
