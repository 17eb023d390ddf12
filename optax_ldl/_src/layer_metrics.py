"""``layer_metrics``: per layer group, how far a training step moves the weights (jit-safe).

For every group of the layer plan (the embedding stage, each layer of each stack,
the head, the fixed ratios) and one step, over all the group's floating-point
leaves (a stacked leaf's slice ``j`` counted in the group of its layer):

.. math::

  \\text{update\\_rms} = \\sqrt{\\tfrac{1}{n}\\textstyle\\sum u^2}, \\quad
  \\text{param\\_rms} = \\sqrt{\\tfrac{1}{n}\\textstyle\\sum \\theta^2}, \\quad
  \\text{update\\_param\\_ratio} = \\frac{\\text{update\\_rms}}{\\text{param\\_rms}}, \\quad
  \\text{grad\\_norm} = \\sqrt{\\textstyle\\sum g^2}.

With layer-wise decay the update/weight ratio of the lower layers should sit
below the upper layers' by about the ratio of their learning rates. The groups
are computed in Python from names and shapes when the step is traced; the step
then adds one sum of squares per leaf and tree, and a few scalars per group. On a
CPU those reductions also split XLA's fused optimizer loop, which costs far more than
the sums (``benchmarks/metrics_overhead.py``): :func:`optax_ldl.track_layer_metrics`
measures every N steps only and leaves the other steps as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_ldl._src.diagnostics import Description
from optax_ldl._src.layer_decay import _restrict
from optax_ldl._src.layer_map import LayerMap, Placement, several_stacks
from optax_ldl._src.plan import LayerPlan
from optax_ldl._src.tree_names import is_float, names_and_leaves

_OWNER = "layer_metrics"
METRICS = ("update_rms", "param_rms", "update_param_ratio", "grad_norm")


def layer_metrics(
    params: Any,
    updates: Any,
    grads: Any,
    layers: LayerMap | LayerPlan | Description,
) -> dict[str, jax.Array]:
  """Per layer group: the update RMS, the weight RMS, their ratio, the gradient norm.

  A flat ``{"<group>/<metric>": scalar}`` that any metrics sink takes; call it
  inside the jitted train step, or wrap the optimizer in
  :func:`optax_ldl.track_layer_metrics` to measure every N steps only (cheaper).
  The groups are those of the layer plan:
  ``embedding``, ``layer_<i>``, ``head``, ``ratio_<r>`` (a fixed ratio, or a
  custom rule's ratio), prefixed ``<stack>/`` when the model has several stacks.
  The metrics are ``update_rms``, ``param_rms``, ``update_param_ratio`` (0 where
  both are 0, ``inf`` where only the weights are) and ``grad_norm`` (left out
  when ``grads`` is ``None``). The keys are sorted, as ``jax.jit`` returns a
  dict, eagerly too.

  >>> import jax, jax.numpy as jnp, optax_ldl
  >>> params = {'embed': jnp.full(4, 2.0), 'layers_0': jnp.full(4, 1.0),
  ...           'layers_1': jnp.full(4, 1.0), 'head': jnp.full(4, 1.0)}
  >>> grads = jax.tree.map(jnp.ones_like, params)
  >>> updates = {'embed': jnp.full(4, 0.5), 'layers_0': jnp.full(4, 0.25),
  ...            'layers_1': jnp.full(4, 0.5), 'head': jnp.full(4, 1.0)}
  >>> step = jax.jit(lambda p, u, g: layer_metrics(p, u, g, optax_ldl.path_layers(p)))
  >>> m = step(params, updates, grads)
  >>> [k for k in m if k.startswith('embedding/')]  # doctest: +NORMALIZE_WHITESPACE
  ['embedding/grad_norm', 'embedding/param_rms', 'embedding/update_param_ratio',
   'embedding/update_rms']
  >>> {k.split('/')[0]: float(v) for k, v in m.items() if k.endswith('update_param_ratio')}
  {'embedding': 0.25, 'head': 1.0, 'layer_0': 0.25, 'layer_1': 0.5}

  Args:
    params: the parameters the update is applied to.
    updates: the optimizer's updates (the tree of ``params``).
    grads: the gradients (the tree of ``params``), or ``None``.
    layers: the layer plan: a :class:`optax_ldl.LayerMap` (from
      :func:`optax_ldl.path_layers` or :func:`optax_ldl.trace_layers`), a
      :class:`optax_ldl.LayerPlan` (``LayerDecay(...).plan(params)``) or a
      :class:`optax_ldl.Description` (``describe(params, ...)``): the grouping
      the optimizer uses.

  Returns:
    ``dict[str, jax.Array]`` of float32 scalars (float64 for float64 params).
  """
  groups = _group_of_leaves(params, layers)
  param_of = dict(names_and_leaves(params))
  trees = {"updates": updates, **({} if grads is None else {"grads": grads})}
  leaves = {arg: _leaves_by_name(arg, tree, groups, param_of) for arg, tree in trees.items()}
  sums: dict[str, list[Any]] = {}
  for name, (keys, axis) in groups.items():
    x = param_of[name]
    others = None if axis is None else tuple(i for i in range(np.ndim(x)) if i != axis)
    squares = [_sum_squares(t, others) for t in
               (x, leaves["updates"][name], *([leaves["grads"][name]] if grads is not None
                                              else []))]
    per_slice = int(np.size(x)) // len(keys)
    for j, key in enumerate(keys):
      entry = sums.setdefault(key, [0] * len(squares) + [0])
      for k, sq in enumerate(squares):
        entry[k] = entry[k] + (sq if axis is None else sq[j])
      entry[-1] += per_slice
  out: dict[str, jax.Array] = {}
  for key in sums:
    sq_p, sq_u, *rest, n = sums[key]
    param_rms = jnp.sqrt(sq_p / max(n, 1))
    update_rms = jnp.sqrt(sq_u / max(n, 1))
    ratio = jnp.where(param_rms > 0, update_rms / jnp.where(param_rms > 0, param_rms, 1),
                      jnp.where(update_rms > 0, jnp.inf, 0.0))
    out[f"{key}/update_rms"] = update_rms
    out[f"{key}/param_rms"] = param_rms
    out[f"{key}/update_param_ratio"] = ratio.astype(update_rms.dtype)
    if rest:
      out[f"{key}/grad_norm"] = jnp.sqrt(rest[0])
  return dict(sorted(out.items()))


def check_layers(owner: str, layers: Any) -> None:
  """Raises unless ``layers`` is a layer plan that :func:`layer_metrics` groups by."""
  if not isinstance(layers, (LayerMap, LayerPlan, Description)):
    raise TypeError(f"{owner}: layers must be an optax_ldl.LayerMap (path_layers, "
                    "trace_layers), an optax_ldl.LayerPlan or an optax_ldl.Description "
                    f"(describe), got {layers!r}")


def _sum_squares(x: Any, others: tuple[int, ...] | None) -> jax.Array:
  """The sum of squares of ``x`` in at least float32, over ``others`` (all axes: ``None``)."""
  x = jnp.asarray(x)
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return jnp.sum(jnp.square(x), axis=others)


def _leaves_by_name(arg: str, tree: Any, groups: Mapping[str, Any],
                    params: Mapping[str, Any]) -> dict[str, Any]:
  """``{name: leaf}`` of ``tree`` for the float leaves of params; an error naming ``arg``."""
  found = dict(names_and_leaves(tree))
  missing = [name for name in groups if name not in found]
  if missing:
    raise ValueError(f"{_OWNER}: {arg} lacks leaves that params has: {missing[:6]}"
                     f"{' ...' if len(missing) > 6 else ''}; {arg} must have the tree of params.")
  wrong = [(n, np.shape(found[n]), np.shape(params[n])) for n in groups
           if np.shape(found[n]) != np.shape(params[n])]
  if wrong:
    name, got, want = wrong[0]
    raise ValueError(f"{_OWNER}: {arg}[{name!r}] has shape {got} but the param has {want}; "
                     f"{arg} must have the tree of params.")
  return found


def _group_of_leaves(params: Any, layers: Any) -> dict[str, tuple[list[str], int | None]]:
  """Path name -> (the group of each slice, or of the leaf: one key; the stacked axis)."""
  check_layers(_OWNER, layers)
  names = [name for name, x in names_and_leaves(params) if is_float(x)]
  if isinstance(layers, Description):
    rows = {r.path: r for r in layers.rows}
    missing = [n for n in names if n not in rows]
    if missing:
      raise ValueError(f"{_OWNER}: layers (a Description) has no row for {missing[:6]}: "
                       "describe the params given here.")
    place = {n: (rows[n].placement, rows[n].axis, rows[n].lr_ratio) for n in names}
  elif isinstance(layers, LayerPlan):
    missing = [n for n in names if n not in layers.labels]
    if missing:
      raise ValueError(f"{_OWNER}: layers (a LayerPlan) has no leaf {missing[:6]}: make it "
                       "from the params given here (LayerDecay(...).plan(params)).")
    place = {n: (layers.placements[n], layers.axes[n], layers.ratio(n)) for n in names}
  else:  # a LayerMap
    float_tree = jax.tree.map(lambda x: x if is_float(x) else None, params)
    restricted = _restrict(layers, float_tree)
    place = {n: (restricted[n], restricted[n].axis, None) for n in names}
  several = several_stacks(p for p, _, _ in place.values())
  shapes = {n: np.shape(x) for n, x in names_and_leaves(params)}
  out = {}
  for name, (p, axis, ratio) in place.items():
    if axis is None:
      out[name] = ([_key(p, ratio, 0, several)], None)
      continue
    count = shapes[name][axis]
    ratios = ratio if isinstance(ratio, tuple) else (ratio,) * count
    out[name] = ([_key(p, ratios[j], j, several) for j in range(count)], axis)
  return out


def _key(place: Placement | None, ratio: Any, j: int, several: bool) -> str:
  """The group of slice ``j`` of a leaf: ``layer_3``, ``enc/layer_3``, ``embedding``, ..."""
  if place is None:  # a custom rule: grouped by the ratio it gives.
    return f"ratio_{float(ratio):g}"
  if place.kind == "ratio":
    return f"ratio_{place.ratio:g}"
  if place.kind == "head":
    return "head"
  prefix = f"{place.stack}/" if several and place.stack else ""
  if place.kind == "embedding":
    return f"{prefix}embedding"
  assert place.layer is not None
  return f"{prefix}layer_{place.layer + j}"
