"""``layer_drift``: how far each layer group moved from its starting weights.

After fine-tuning, the relative change of a layer group, ``||θ - θ0|| / ||θ0||``
over all its floating-point leaves, says how much of the pretrained weights it
kept. With layer-wise lr decay the lower groups should move less; this measures
it. The groups are those of :func:`optax_ldl.describe` (``Row.layer``), so the
same keyword arguments that configure the optimizer configure the grouping.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_ldl._src import diagnostics
from optax_ldl._src.layer_map import Placement, several_stacks
from optax_ldl._src.tree_names import is_float, path_name

# Groups that come after every layer, in this order.
_TOP = ("head", "ratio", "-")


class GroupDrift(NamedTuple):
  """The drift of one layer group.

  Attributes:
    layer: the group, as ``Row.layer`` of :func:`optax_ldl.describe` (a layer
      index, ``"embedding"``, ``"head"``, ``"other"``, ...); a slice of a
      stacked leaf is counted in the group of its layer.
    leaves: how many leaves (or stacked slices) the group holds.
    params: how many scalars the group holds.
    lr_ratio: the group's lr ratio; a tuple of the distinct ratios when its
      leaves differ (a custom rule).
    norm0: ``||θ0||``, the norm of the starting weights of the group.
    delta: ``||θ - θ0||``, the norm of the change.
    drift: ``delta / norm0``, the relative drift (``inf`` when ``norm0`` is 0
      and the group moved, 0 when neither).
  """

  layer: int | str
  leaves: int
  params: int
  lr_ratio: float | tuple[float, ...]
  norm0: float
  delta: float
  drift: float


@dataclasses.dataclass(frozen=True)
class Drift:
  """The result of :func:`layer_drift`: ``.groups`` as data, ``str()`` as a table.

  Attributes:
    groups: one :class:`GroupDrift` per layer group, bottom to top: the
      embedding stage, the layers in numeric order, then the head and the
      other groups.
  """

  groups: tuple[GroupDrift, ...]

  def to_dict(self) -> dict[Any, float]:
    """``{layer: relative drift}``, bottom to top."""
    return {g.layer: g.drift for g in self.groups}

  def __getitem__(self, layer: Any) -> GroupDrift:
    for g in self.groups:
      if g.layer == layer:
        return g
    raise KeyError(f"no layer group {layer!r}; the groups are {[g.layer for g in self.groups]}")

  def __iter__(self) -> Iterator[GroupDrift]:
    return iter(self.groups)

  def __len__(self) -> int:
    return len(self.groups)

  def __str__(self) -> str:
    header = ["group", "leaves", "params", "lr ratio", "relative drift"]
    lines = [
        [str(g.layer), str(g.leaves), f"{g.params:,}", _fmt_ratio(g.lr_ratio), f"{g.drift:.4g}"]
        for g in self.groups
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]

    def fmt(cells):
      return "  ".join(
          c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
      ).rstrip()

    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(x) for x in lines])


def _fmt_ratio(ratio: float | tuple[float, ...]) -> str:
  if isinstance(ratio, tuple):
    return f"{min(ratio):.4g}..{max(ratio):.4g}"
  return f"{ratio:.4g}"


def _group(row: diagnostics.Row, several: bool, j: int = 0) -> tuple[int | str, tuple[Any, ...]]:
  """The group of a row (slice ``j`` of a stacked leaf) and its rank, bottom to top.

  Read from the row's placement: layer ``i`` is the group ``i`` (``"<stack>:<i>"``
  with several stacks), a stacked leaf's slice ``j`` is layer ``layer + j``.
  """
  place: Placement | None = row.placement
  if place is None or place.kind not in ("layer", "embedding"):
    top = _TOP.index(row.layer) if row.layer in _TOP else len(_TOP)
    return row.layer, (1, top, "", 0)
  if place.kind == "embedding":
    return diagnostics.layer_label(place, None, several), (0, place.stack, 0, 0)
  assert place.layer is not None
  i = place.layer + j
  shown = diagnostics.layer_label(Placement("layer", place.stack, i), None, several)
  return (int(shown) if shown.isdigit() else shown), (0, place.stack, 1, i)


def layer_drift(params0: Any, params: Any, **describe_kwargs: Any) -> Drift:
  """The relative change ``||θ - θ0|| / ||θ0||`` of every layer group.

  The groups are ``Row.layer`` of ``optax_ldl.describe(params0,
  **describe_kwargs)``: pass the keyword arguments you give
  :func:`optax_ldl.adamwdl` (``layerwise_decay``, ``n_layers``, ...). Each
  group's norms are taken over all its floating-point leaves together; integer
  leaves are left out. A stacked (scanned) leaf contributes each slice along its
  stacked axis to the group of that slice's layer (slice ``j`` is layer ``j``).

  >>> import jax.numpy as jnp
  >>> params0 = {'embeddings': {'embedding': jnp.ones((4, 2))},
  ...            'layers_0': {'kernel': jnp.ones((2, 2))},
  ...            'layers_1': {'kernel': jnp.ones((2, 2))},
  ...            'head': {'kernel': jnp.ones((2, 1))}}
  >>> params = {**params0, 'layers_1': {'kernel': 1.5 * jnp.ones((2, 2))},
  ...           'head': {'kernel': -jnp.ones((2, 1))}}
  >>> drift = layer_drift(params0, params, layerwise_decay=0.5, n_layers=2)
  >>> print(drift)
  group      leaves  params  lr ratio  relative drift
  ---------  ------  ------  --------  --------------
  embedding       1       8     0.125               0
  0               1       4      0.25               0
  1               1       4       0.5             0.5
  head            1       2         1               2
  >>> drift.to_dict()
  {'embedding': 0.0, 0: 0.0, 1: 0.5, 'head': 2.0}

  Args:
    params0: the starting parameters (e.g. the pretrained weights).
    params: the parameters after training, the same tree structure and shapes.
    **describe_kwargs: keyword arguments of :func:`optax_ldl.describe` (those
      of :func:`optax_ldl.adamwdl`), which set the layer groups and ratios.

  Returns:
    A :class:`Drift`: ``.groups`` (bottom to top), ``.to_dict()``, ``str()``.

  Raises:
    ValueError: ``params`` and ``params0`` differ in tree structure, in the
      shape of a leaf, or in which leaves are floating-point.
  """
  names0 = [path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params0)]
  names = [path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  if jax.tree.structure(params0) != jax.tree.structure(params):
    only0 = [n for n in names0 if n not in set(names)]
    only1 = [n for n in names if n not in set(names0)]
    raise ValueError(
        "layer_drift: params0 and params must have the same tree structure; "
        f"only in params0: {only0[:5]}, only in params: {only1[:5]} "
        f"(structures {jax.tree.structure(params0)} and {jax.tree.structure(params)})"
    )
  leaves0 = jax.tree.leaves(params0)
  leaves = jax.tree.leaves(params)
  for name, a, b in zip(names0, leaves0, leaves):
    if np.shape(a) != np.shape(b):
      raise ValueError(
          f"layer_drift: the leaf {name!r} has shape {np.shape(a)} in params0 but "
          f"{np.shape(b)} in params; the shapes must match"
      )
    if is_float(a) != is_float(b):
      raise ValueError(
          f"layer_drift: the leaf {name!r} is {_dtype_name(a)} in params0 but "
          f"{_dtype_name(b)} in params; both must be floating-point or both not"
      )

  row_of = {r.path: r for r in diagnostics.describe(params0, **describe_kwargs).rows}
  missing = [n for n in names0 if n not in row_of]
  if missing:  # path names are unique in a tree; this would be a describe bug.
    raise ValueError(f"layer_drift: describe gave no row for the leaves {missing[:5]}")
  rows = [row_of[n] for n in names0]

  # Per group: [rank, leaves, params, sum |θ0|², sum |Δθ|², ratios]
  acc: dict[Any, list[Any]] = {}

  def add(group, n, sq0, sqd, ratio):
    key, rank = group
    entry = acc.setdefault(key, [rank, 0, 0, 0.0, 0.0, []])
    entry[1] += 1
    entry[2] += n
    entry[3] += sq0
    entry[4] += sqd
    if ratio not in entry[5]:
      entry[5].append(ratio)

  several = several_stacks(r.placement for r in rows)
  floats = [i for i, a in enumerate(leaves0) if is_float(a)]
  axes = tuple(rows[i].axis for i in floats)
  sq0s, sqds = jax.device_get(
      _squared_norms([leaves0[i] for i in floats], [leaves[i] for i in floats], axes))
  for i, axis, sq0, sqd in zip(floats, axes, sq0s, sqds):
    row, size = rows[i], int(np.size(leaves0[i]))
    if axis is None:
      add(_group(row, several), size, float(sq0), float(sqd), row.lr_ratio)
      continue
    n_slices = np.shape(leaves0[i])[axis]
    ratios = row.lr_ratio if isinstance(row.lr_ratio, tuple) else (row.lr_ratio,) * n_slices
    for j in range(n_slices):
      add(_group(row, several, j), size // n_slices, float(sq0[j]), float(sqd[j]),
          float(ratios[j]))

  groups = []
  for layer, (_, leaves_n, n, sq0, sqd, ratios) in sorted(acc.items(), key=lambda kv: kv[1][0]):
    norm0, delta = math.sqrt(sq0), math.sqrt(sqd)
    if norm0 > 0:
      drift = delta / norm0
    else:
      drift = math.inf if delta > 0 else 0.0
    ratio = ratios[0] if len(ratios) == 1 else tuple(sorted(ratios))
    groups.append(GroupDrift(layer, leaves_n, n, ratio, norm0, delta, drift))
  return Drift(tuple(groups))


@functools.partial(jax.jit, static_argnums=2)
def _squared_norms(leaves0: list[Any], leaves: list[Any], axes: tuple[int | None, ...]):
  """Per leaf: (sum of θ0², sum of Δθ²), over every axis but the stacked one when given.

  One compiled program for the whole tree (cached for the next call on the same shapes);
  the reductions run where the arrays live, only the sums come back.
  """
  sq0s, sqds = [], []
  for a, b, axis in zip(leaves0, leaves, axes):
    dtype = jnp.promote_types(jnp.result_type(a), jnp.float32)
    x0 = jnp.asarray(a, dtype)
    dx = jnp.asarray(b, dtype) - x0
    keep = () if axis is None else (axis,)
    reduce = tuple(i for i in range(x0.ndim) if i not in keep)
    sq0s.append(jnp.sum(jnp.square(x0), axis=reduce))
    sqds.append(jnp.sum(jnp.square(dx), axis=reduce))
  return sq0s, sqds


def _dtype_name(x: Any) -> str:
  dtype = getattr(x, "dtype", None)
  return str(np.dtype(jnp.result_type(x) if dtype is None else dtype))
