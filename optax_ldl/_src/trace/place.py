"""Placement of every float leaf around the stacks: a layer of a stack, an embedding, the head.

A leaf of a layer unit is that layer (a scanned leaf: the layer of its slice 0,
with its axis). Any other leaf is placed from where it runs: inside one layer
(that layer), before the first layer with its value entering only the first
layer (the embedding stage), between layers ``k - 1`` and ``k`` (layer ``k``),
after the last layer (the head). A leaf applied inside several layers is shared
and has no single layer: an error. Pinned leaves take their override.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import Any

from optax_ldl._src.layer_map import LayerMap, Placement
from optax_ldl._src.trace.errors import OWNER, no_layers_message
from optax_ldl._src.trace.overrides import resolve
from optax_ldl._src.trace.stacks import (
    TracedStack,
    find_stacks,
    number_stacks,
    pinned_stack,
    span,
)
from optax_ldl._src.trace.units import Families
from optax_ldl._src.trace.walk import Uses, Walker, applications, bits, mask_of

# A placement and why: the data-flow evidence ``describe(...).evidence()`` shows.
Placed = tuple[Placement, str]


@dataclasses.dataclass(frozen=True)
class Flow:
  """What placing one leaf reads: the numbered stacks and where the leaves are applied.

  Attributes:
    stacks: the stacks, in execution order.
    uses: every leaf's applications ``[(time, result mask)]``.
    entries: for each free leaf outside the layers, where its value enters the
      layers' computation: ``[(time, mask of the layers' leaves it meets)]``.
    owner: ``leaf -> (stack, unit)`` for the leaves of the layers.
    axes: every scanned leaf's layer axis.
    block: the mask of all the layers' leaves.
    applied_mask: ``block | data``: a result that depends on either is a use in the
      model's flow (not a computation on parameters alone).
  """

  stacks: list[TracedStack]
  uses: Uses
  entries: Mapping[int, list[tuple[int, int]]]
  owner: Mapping[int, tuple[TracedStack, int]]
  axes: Mapping[int, int]
  block: int
  applied_mask: int


def entries(mixes: list[tuple[int, tuple[int, ...], int]], block: int, nonblock: int
            ) -> dict[int, list[tuple[int, int]]]:
  """Where the values of non-layer leaves enter the layers' computation.

  Args:
    mixes: the walk's mixing equations ``(time, input masks, result mask)``.
    block: the mask of the layers' leaves.
    nonblock: the mask of the free leaves outside the layers.

  Returns:
    ``{leaf: [(time, layers' leaves in the result)]}`` for every equation where an
    input that depends on the leaf but on no layer meets the layers.
  """
  found: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
  for t, ins, m in mixes:
    mb = m & block
    if not mb:
      continue
    for x in ins:
      if not x & block and x & nonblock:
        for leaf in bits(x & nonblock):
          found[leaf].append((t, mb))
  return found


def flow_of(w: Walker, stacks: list[TracedStack], uses: Uses, axes: Mapping[int, int],
            free: list[int], data: int) -> Flow:
  """The :class:`Flow` of the numbered stacks."""
  block = 0
  for s in stacks:
    block |= s.leaves
  owner: dict[int, tuple[TracedStack, int]] = {}
  for s in stacks:
    for k, unit in enumerate(s.units):
      for i in unit:
        owner[i] = (s, k)
  nonblock = mask_of(i for i in free if i not in owner)
  return Flow(stacks, uses, entries(w.mixes, block, nonblock), owner, axes, block,
              block | data)


def _layer(s: TracedStack, k: int, axis: int | None = None) -> Placement:
  return Placement("layer", s.final_name, layer=s.offset + k, axis=axis)


def _deepest(stacks: list[TracedStack]) -> TracedStack:
  """The deepest stack, the first to run among equals."""
  return max(stacks, key=lambda s: (s.depth, -s.start))


def unit_leaf(i: int, name: str, flow: Flow, shared: list[str]) -> Placed:
  """A leaf of a layer unit: that layer; noted in ``shared`` if later layers apply it too."""
  s, k = flow.owner[i]
  if s.scan:
    return (_layer(s, 0, flow.axes[i]),
            f"data flow: layers 0..{s.depth - 1} of stack {s.name!r} on axis {flow.axes[i]} "
            f"({s.family})")
  # Applied again after its own layer ended: shared with later layers.
  later = set()
  for t, m in flow.uses.get(i, ()):
    if m & flow.applied_mask and t > s.intervals[k][1]:
      where, j = s.where(t)
      latest = s.unit_names[j if where == "in" else j - 1]
      later.add(latest if where != "after" else f"{latest} or after it")
  if later:
    shared.append(f"{name!r} (in {s.unit_names[k]!r}) is also applied in {sorted(later)}")
  return _layer(s, k), f"data flow: unit {k} of stack {s.name!r} ({s.family})"


def _slots(s: TracedStack, applied: list[tuple[int, int]]) -> dict[int, str]:
  """The units of ``s`` whose branch reads a leaf: ``{k: how it shows}``.

  An application inside unit ``k`` (or bound for it: between units ``k - 1`` and
  ``k``) is in unit ``k``; one before the stack reads in front of unit 0.
  """
  slots: dict[int, str] = {}
  for t, m in applied:
    where, k = s.where(t)
    if (where == "in" and m & s.leaves) or where == "between":
      slots[k] = s.unit_names[k]
    elif where == "before":
      slots.setdefault(0, f"before {s.unit_names[0]}")
  return slots


def applied_inside(name: str, uses: list[tuple[int, int]], flow: Flow, shared: list[str]
                   ) -> list[tuple[TracedStack, int]]:
  """The layers ``(stack, k)`` inside which a leaf is applied, one per stack at most.

  A leaf read in the branches of several layers of a stack, whatever the order of
  the operations (``h @ w_k @ leaf``, ``(h @ leaf) @ w_k``; every layer of a scan of
  two or more), is noted in ``shared`` and gets no layer of that stack.
  """
  applied = [(t, m) for t, m in uses if m & flow.applied_mask]
  inside: list[tuple[TracedStack, int]] = []
  for s in flow.stacks:
    ks = sorted({s.where(t)[1] for t, m in applied if s.where(t)[0] == "in" and m & s.leaves})
    slots = {} if s.scan else _slots(s, applied)
    if s.scan and ks and s.depth >= 2:
      shared.append(f"{name!r} is applied inside every layer of the scanned stack "
                    f"{s.unit_label(0)!r}")
      ks = []
    elif len(slots) >= 2:
      shared.append(f"{name!r} is applied inside {[slots[k] for k in sorted(slots)]}")
      ks = []
    inside += [(s, k) for k in ks]
  return inside


def embedded_in(ents: list[tuple[int, int]], stacks: list[TracedStack]) -> TracedStack | None:
  """The deepest stack whose first layer, and only it, the leaf's value enters, else None.

  Args:
    ents: the leaf's entries into the layers, sorted by time.
    stacks: the stacks.
  """
  emb = []
  for s in stacks:
    mine = [(t, mb) for t, mb in ents if mb & s.leaves]
    if not mine:
      continue
    entered = {s.where(t)[1] for t, _ in mine if s.where(t)[0] == "in"}
    if s.where(mine[0][0]) == ("in", 0) and entered == {0}:
      emb.append(s)
  return _deepest(emb) if emb else None


def between_layers(uses: list[tuple[int, int]], ents: list[tuple[int, int]], flow: Flow
                   ) -> Placed:
  """Where a leaf runs: between layers ``k - 1`` and ``k`` of a stack -> layer ``k``; else the head.

  It runs at its first use in the flow or its first entry into the layers,
  whichever comes first; a time inside a layer that is the only layer its value
  enters (not a scan) counts as that layer.
  """
  applied = [t for t, m in uses if m & flow.applied_mask]
  times = [t for t in (min(applied, default=None), ents[0][0] if ents else None)
           if t is not None]
  if not times:
    return Placement("head"), "data flow: read by no layer and on no data"
  t0 = min(times)
  several = False
  for s in flow.stacks:
    where, k = s.where(t0)
    entered = {s.where(tt)[1] for tt, mm in ents if mm & s.leaves
               and s.where(tt)[0] == "in"}
    if where == "between":
      return _layer(s, k), f"data flow: read between units {k - 1} and {k} of {s.name!r}"
    if where == "in" and len(entered) == 1 and not s.scan:
      return _layer(s, k), f"data flow: its value enters unit {k} of {s.name!r} only"
    several |= len(entered) >= 2
  if several:  # BEiT's shared relative-position bias
    return Placement("head"), "data flow: computed once outside the units, read by several"
  return Placement("head"), "data flow: read after the last unit"


def place_leaf(i: int, name: str, flow: Flow, shared: list[str]) -> Placed:
  """The placement of free leaf ``i`` and why; a shared use is noted in ``shared``."""
  if i in flow.owner:
    return unit_leaf(i, name, flow, shared)
  uses = flow.uses.get(i, [])
  if not uses:
    return Placement("head"), "data flow: never read by fn"
  inside = applied_inside(name, uses, flow, shared)
  if inside:
    s, k = inside[0]
    return _layer(s, k), f"data flow: read inside unit {k} of stack {s.name!r}"
  ents = sorted(flow.entries.get(i, []))
  if any(not m & flow.block for _, m in uses):  # also applied outside the layers
    emb = embedded_in(ents, flow.stacks)
    if emb is not None:
      return (Placement("embedding", emb.final_name),
              f"data flow: read before unit 0 of {emb.name!r}")
  return between_layers(uses, ents, flow)


def _stack_of_pinned_layers(pinned: Mapping[int, Any], names: list[str], fams: Families,
                            uses: Uses, first_use: Mapping[int, int], free: list[int],
                            data: int) -> TracedStack:
  """With no stack in the trace: the layers pinned by int overrides, else the error.

  Leaves pinned to layers 0..L-1 (``overrides={prefix: int}``) are the layers; the
  others are placed around them (ALBERT's shared layer pinned to layer 0).
  """
  s = pinned_stack(pinned, names, first_use)
  if s is None:
    raise ValueError(no_layers_message(names, fams, uses, free, data))
  span(s, uses, first_use)
  return s


def place(w: Walker, names: list[str], abstract: list[Any], float_idx: list[int],
          pinned: Mapping[int, Any], numbering: str, data: int) -> LayerMap:
  """The layer map of a walked trace: find and number the stacks, place every float leaf.

  Args:
    w: the walker, after its walk of the whole forward pass.
    names: every leaf's path name.
    abstract: every leaf's ``jax.ShapeDtypeStruct``.
    float_idx: the float leaves (the ones to place).
    pinned: ``{leaf: override spec}``.
    numbering: ``'per_stack'`` or ``'continue'``.
    data: the example inputs' bit.
  """
  uses, first_use = applications(w.consumptions)
  free = [i for i in float_idx if i not in pinned]
  stacks, axes, fams = find_stacks(w, names, abstract, float_idx, pinned, uses, first_use,
                                   data)
  if not stacks:
    if all(i in pinned for i in float_idx):
      return LayerMap.build({names[i]: resolve(pinned[i], names[i], []) for i in float_idx},
                            evidence={names[i]: "override" for i in float_idx})
    stacks = [_stack_of_pinned_layers(pinned, names, fams, uses, first_use, free, data)]
  stacks, depths = number_stacks(stacks, numbering)
  flow = flow_of(w, stacks, uses, axes, free, data)
  shared: list[str] = []
  placed = {names[i]: place_leaf(i, names[i], flow, shared) for i in free}
  placements = {name: p for name, (p, _) in placed.items()}
  evidence = {name: why for name, (_, why) in placed.items()}
  if shared:
    raise ValueError(
        f"{OWNER}: shared weights: a leaf applied inside several layers has no single "
        f"layer (ALBERT-style sharing). " + "; ".join(shared) + ". Place them with "
        "overrides, e.g. overrides={<path>: 'head'} or {<path>: <layer>} or "
        "{<path>: Placement('ratio', ratio=r)}")
  deepest = _deepest(stacks)
  for i, spec in pinned.items():
    placements[names[i]] = resolve(spec, names[i], stacks, deepest)
    evidence[names[i]] = "override"
  return LayerMap.build(placements, depths, evidence)
