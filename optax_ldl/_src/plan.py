"""``LayerPlan``: every leaf's placement, group and ratio; the one place ratios are computed.

With decay :math:`\\alpha`, layer ``i`` of a stack of depth :math:`L` gets
:math:`\\alpha^{L-i}`, the stack's embeddings :math:`\\alpha^{L+1}`, the head 1
(:meth:`optax_ldl.LayerMap.exponent`); a stacked leaf gets one ratio per slice.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_ldl._src import checks
from optax_ldl._src import stacked_ratio as stacks
from optax_ldl._src.layer_map import LayerMap, Placement, several_stacks
from optax_ldl._src.tree_names import names_and_leaves, path_name


class LayerPlan(NamedTuple):
  """Where every float leaf of one tree sits and the ratio it gets, computed once.

  Attributes:
    labels: path name -> group label; the leaves of a group share one ratio.
    ratios: group label -> ratio: a Python float, a JAX scalar (a decay or a
      depth injected with ``optax.inject_hyperparams``), or a ``StackedRatio``
      (one ratio per slice of a stacked leaf).
    placements: path name -> :class:`optax_ldl.Placement` (``None`` under a
      custom rule, which gives ratios, not places).
    axes: path name -> the layer axis of a stacked leaf, else ``None``.
    evidence: path name -> why the leaf is placed where it is (the rule-table
      row and key, or the data-flow unit), where the layer map records it.
  """

  labels: dict[str, str]
  ratios: dict[str, Any]
  placements: dict[str, Placement | None]
  axes: dict[str, int | None]
  evidence: dict[str, str] = {}  # noqa: RUF012 - a NamedTuple default, never mutated.

  def label_tree(self, tree: Any) -> Any:
    """A tree like ``tree`` (its float leaves) whose leaves are the group labels."""
    return jax.tree_util.tree_map_with_path(lambda p, _: self.labels[path_name(p)], tree)

  def ratio(self, name: str) -> float | tuple[float, ...]:
    """The concrete ratio of leaf ``name`` (a tuple, one per slice, for a stacked leaf)."""
    ratio = self.ratios[self.labels[name]]
    if isinstance(ratio, stacks.StackedRatio):
      return tuple(float(x) for x in np.asarray(ratio.ratios))
    return float(ratio)

  @property
  def several_stacks(self) -> bool:
    return several_stacks(self.placements.values())


def is_one(ratio: Any) -> bool:
  if isinstance(ratio, stacks.StackedRatio):
    return isinstance(ratio.ratios, np.ndarray) and bool(np.all(ratio.ratios == 1.0))
  return checks.concrete_float(ratio) == 1.0


def _power(decay: Any, exponent: Any, loud: Any) -> Any:
  """``decay ** exponent``; times ``loud`` (1, or NaN for an out-of-range runtime value)."""
  if isinstance(exponent, int) and exponent == 0:
    return 1.0
  ratio = decay**exponent
  return ratio if loud is None else ratio * loud


def _loudness(decay: Any, depth: Any, needed: int) -> Any:
  """``None`` for static hyperparameters; else 1.0, or NaN when an injected one is out of range.

  A decay outside ``(0, 1]`` or a layer count below the tree's depth, injected at run
  time (``optax.inject_hyperparams``), would train layers with ratios above 1. Every
  decayed ratio is multiplied by this factor instead: exactly 1 (bit-exact) when in
  range, NaN (loud) when not, as a zeroed state is. Scalar work, once per update.
  """
  loud = None
  if isinstance(decay, jax.Array):
    loud = jnp.where((decay > 0) & (decay <= 1), 1.0, jnp.nan).astype(decay.dtype)
  if depth is not None:
    ok = jnp.where(jnp.asarray(depth) >= needed, 1.0, jnp.nan)
    loud = ok if loud is None else loud * ok
  return loud


def stage_sizes(stages: Any, depth: int) -> list[int]:
  """The layers of each stage, bottom to top, for a stack of ``depth`` layers."""
  if isinstance(stages, (list, tuple)):
    sizes = [int(k) for k in stages]
    if sum(sizes) != depth:
      raise ValueError(f"stages={list(stages)!r} hold {sum(sizes)} layers, but the stack has "
                       f"{depth}: give the layers of each stage, summing to {depth}, or an "
                       "int (layers per stage).")
    return sizes
  k = int(stages)
  return [k] * (depth // k) + ([depth % k] if depth % k else [])


def _staged(exponent: int, depth: int, stages: Any) -> tuple[int, int]:
  """(the exponent, the depth) counted in stages instead of layers."""
  sizes = stage_sizes(stages, depth)
  n = len(sizes)
  if exponent == 0:
    return 0, n
  if exponent == depth + 1:
    return n + 1, n
  layer, bottom = depth - exponent, 0
  for stage, size in enumerate(sizes):
    bottom += size
    if layer < bottom:
      return n - stage, n
  raise AssertionError(layer)


def map_plan(tree: Any, layer_map: LayerMap, decay: Any, depth: Any = None, *,
             floor: Any = None, stages: Any = None) -> LayerPlan:
  """One group per power of the decay (a stacked leaf: one ratio per slice).

  ``depth``: a runtime layer count (an array, ``optax.inject_hyperparams``)
  replacing the map's, one stack only; the groups are then labelled by the
  distance to the top of the stack, which does not depend on the count.
  ``floor``: the embeddings' ratio, replacing ``decay`` by ``floor ** (1 / (L + 1))``
  per stack of depth ``L`` (in stages with ``stages``). ``stages``: one ratio per
  stage (see :class:`optax_ldl.LayerDecay`).
  """
  if (floor is not None or stages is not None) and depth is not None:
    raise ValueError(f"n_layers is an array ({depth!r}): floor and stages need the depth "
                     "known when the optimizer is built (optax.inject_hyperparams(..., "
                     "static_args=('n_layers',))).")
  if depth is not None and len(layer_map.depths) > 1:
    raise ValueError(
        f"n_layers is an array ({depth!r}) but the tree has {len(layer_map.depths)} stacks "
        f"({[s for s, _ in layer_map.depths]}); give n_layers as a dict of ints, static "
        "(optax.inject_hyperparams(..., static_args=('n_layers',)))."
    )
  map_depth = dict(layer_map.depths)
  loud = _loudness(decay, depth, max(map_depth.values(), default=0))

  def power(name: str, place: Placement, j: int = 0) -> tuple[str, Any]:
    """The label and the exponent of slice ``j`` of ``name``."""
    exponent = layer_map.exponent(name, j)
    assert exponent is not None
    if stages is not None and place.kind != "head":
      exponent, _ = _staged(exponent, map_depth[place.stack], stages)
    if floor is not None and place.kind != "head":
      return f"{place.stack}:decay^{exponent}", exponent
    if depth is None or place.kind == "head":
      return f"decay^{exponent}", exponent
    offset = map_depth[place.stack] - exponent  # the count minus this, at run time.
    return f"depth-{offset}", depth - offset

  labels: dict[str, str] = {}
  ratios: dict[str, Any] = {}
  placements: dict[str, Placement | None] = {}
  axes: dict[str, int | None] = {}
  def base(place: Placement) -> Any:
    """The decay of the place's stack: ``floor ** (1 / (L + 1))`` with ``floor``."""
    if floor is None or place.kind == "head":
      return decay
    levels = map_depth[place.stack]
    if stages is not None:
      levels = len(stage_sizes(stages, levels))
    return floor ** (1.0 / (levels + 1))

  if floor is not None:
    loud = _loudness(floor, None, 0)
  for name, x in names_and_leaves(tree):
    place = layer_map[name]
    placements[name], axes[name] = place, place.axis
    if place.kind == "ratio":
      assert place.ratio is not None
      label = f"ratio_{float(place.ratio)!r}"
      ratios.setdefault(label, float(place.ratio))
    elif place.axis is not None:
      slices = [power(name, place, j) for j in range(int(np.shape(x)[place.axis]))]
      label = "stacked_axis" + str(place.axis) + "_" + ",".join(lbl for lbl, _ in slices)
      if label not in ratios:
        ratios[label] = stacks.StackedRatio(
            stacks.ratio_vector([_power(base(place), e, loud) for _, e in slices]), place.axis)
    else:
      label, exponent = power(name, place)
      if label not in ratios:
        ratios[label] = _power(base(place), exponent, loud)
    labels[name] = label
  notes = dict(layer_map.evidence)
  return LayerPlan(labels, ratios, placements, axes,
                   {name: notes[name] for name in labels if name in notes})
