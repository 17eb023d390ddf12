"""The stacks of layers of a walked trace: their units, when each unit runs, their numbering.

A stack is a loop (one unit whose leaves are stacked along an axis: all layers at
once), a chained run of one numbered family of the tree (unit ``k`` consumes what
unit ``k - 1`` produced), or the periods of the data flow (:mod:`.period`) where no
family holds the layers whole. Its units are placed in walk time by their
applications, which is what locates every other leaf around them.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
from collections.abc import Mapping
from typing import Any

from optax_ldl._src.trace.errors import OWNER
from optax_ldl._src.trace.period import period_units
from optax_ldl._src.trace.units import (
    Families,
    common_prefix,
    families,
    family_label,
    pattern_name,
    select,
)
from optax_ldl._src.trace.walk import Uses, Walker, mask_of


@dataclasses.dataclass
class TracedStack:
  """A stack of layers found in the trace, its units in execution order.

  Attributes:
    name: the family's path (``params/encoder/layer``), or the scanned leaves' prefix.
    units: leaf indices per unit (layer), in execution order (one unit for a scan).
    unit_names: the units' paths, shown in errors.
    depth: the number of layers (a scan's length).
    intervals: walk-time span of each unit (a scan: its first layer, the later ones).
    leaves: the mask of all the units' leaves.
    scan: whether the stack is a scan.
    start: the time its first unit starts.
    offset: the index of its first layer (``numbering='continue'``).
    final_name: its name in the layer map (``''`` for a single or continued stack).
    family: how its units were found, as the evidence shows it (``family 'layers_N'``).
  """

  name: str
  units: list[list[int]]
  unit_names: list[str]
  depth: int
  intervals: list[tuple[int, int]]
  leaves: int = 0
  scan: bool = False
  start: int = 0
  offset: int = 0
  final_name: str = ""
  family: str = ""

  def where(self, t: int) -> tuple[str, int]:
    """('before', 0) | ('in', k) | ('between', k + 1) | ('after', depth)."""
    starts = [a for a, _ in self.intervals]
    k = bisect.bisect_right(starts, t) - 1
    if k < 0:
      return "before", 0
    if t <= self.intervals[k][1]:
      return "in", k
    if k + 1 < len(self.intervals):
      return "between", k + 1
    return "after", self.depth

  def unit_label(self, k: int) -> str:
    """Unit ``k``'s name as errors show it."""
    return self.unit_names[k] if not self.scan else f"{self.unit_names[0]} (scanned layers)"


def span(s: TracedStack, uses: Uses, first_use: Mapping[int, int],
         skips: tuple[list[int], list[int]] = ([], [])) -> None:
  """Sets the stack's leaf mask, its units' time intervals and its start.

  Unit ``k`` of a family runs from its first application to its last one before
  unit ``k + 1`` starts, or to the add that closes a residual branch of its leaves
  and of no other unit's (``skips``: the branches' masks and their adds' times),
  whichever is later (a scan's intervals are its walks).
  """
  s.leaves = mask_of(i for unit in s.units for i in unit)
  if not s.scan:
    starts = [min(first_use[i] for i in unit if i in first_use) for unit in s.units]
    intervals = []
    for k, unit in enumerate(s.units):
      limit = starts[k + 1] if k + 1 < len(starts) else float("inf")
      end = max(t for i in unit for t, _ in uses.get(i, ()) if t < limit)
      mine = mask_of(unit)
      end = max([end, *(t for b, t in zip(*skips)
                        if b & mine and not b & s.leaves & ~mine and end < t < limit)])
      intervals.append((starts[k], end))
    s.intervals = intervals
  s.start = s.intervals[0][0]


def scanned_stacks(w: Walker, names: list[str], shapes: list[Any], placeable: set[int]
                   ) -> tuple[list[TracedStack], dict[int, int]]:
  """One stack per loop that slices ``placeable`` leaves, and each such leaf's layer axis.

  Its depth is the scan's length, or a while loop's (unknown to the trace) the size of
  its leaves' layer axis.
  """
  by_scan: dict[int, list[int]] = collections.defaultdict(list)
  for leaf, (scan_id, _) in w.stacked.items():
    if leaf in placeable:
      by_scan[scan_id].append(leaf)
  stacks: list[TracedStack] = []
  axes: dict[int, int] = {}
  for scan_id, leaves in sorted(by_scan.items()):
    for leaf in leaves:
      axis = w.stacked[leaf][1]
      if axis is None:
        raise ValueError(
            f"{OWNER}: {names[leaf]!r} is sliced by a scan (a stacked layer leaf) but its "
            f"layer axis cannot be followed through the reshapes before the scan; pass "
            f"overrides={{{names[leaf]!r}: Placement('layer', layer=0, axis=A)}}")
      axes[leaf] = axis
    common = common_prefix([names[i].split("/") for i in leaves])
    if len(leaves) == 1:
      common = common[:-1]
    scan = w.scans[scan_id]
    depth = scan["length"] or max(shapes[i][0][axes[i]] for i in leaves)
    how = ("indexed by a loop's counter" if any(i in w.indexed for i in leaves)
           else "sliced by a scan")
    stacks.append(TracedStack(
        name="/".join(common) or f"scan{scan_id}", units=[sorted(leaves)],
        unit_names=["/".join(common)], depth=depth, intervals=list(scan["ranges"]),
        scan=True, family=f"stacked layers, {how}"))
  return stacks, axes


def _execution_order(pattern: tuple[str, ...], members: dict[str, dict[str, Any]],
                     first_use: Mapping[int, int]) -> list[str]:
  """The family's members by first use; a member fn never uses is an error."""
  unused = [m for m, info in members.items()
            if not any(i in first_use for i in info["leaves"])]
  if unused:
    raise ValueError(
        f"{OWNER}: the numbered units {unused} of {'/'.join(pattern)!r} are never used "
        f"by fn, so their layer cannot be read from the data flow; place them with "
        f"overrides, e.g. overrides={{{unused[0]!r}: 'head'}}")
  return sorted(members, key=lambda m: min(first_use[i] for i in members[m]["leaves"]
                                           if i in first_use))


def chained_runs(order: list[str], members: dict[str, dict[str, Any]], uses: Uses
                 ) -> list[list[str]]:
  """The members split into runs in which unit ``k`` consumes what unit ``k - 1`` produced.

  With several runs, a run of one unit is no stack and is dropped.
  """
  runs: list[list[str]] = [[order[0]]]
  for prev, cur in zip(order, order[1:]):
    prev_mask = mask_of(members[prev]["leaves"])
    seen = 0
    for i in members[cur]["leaves"]:
      for _, m in uses.get(i, ()):
        seen |= m
    if seen & prev_mask:
      runs[-1].append(cur)
    else:
      runs.append([cur])
  if len(runs) > 1:
    runs = [r for r in runs if len(r) >= 2]
  return runs


def tree_stacks(fams: Families, chosen: list[tuple[str, ...]], uses: Uses,
                first_use: Mapping[int, int]) -> list[TracedStack]:
  """The stacks of the chosen families: one per chained run (``name#r`` when several)."""
  stacks = []
  for pattern in chosen:
    members = fams[pattern]
    runs = chained_runs(_execution_order(pattern, members, first_use), members, uses)
    for r_index, run in enumerate(runs):
      name = pattern_name(pattern)
      if len(runs) > 1:
        name = f"{name}#{r_index}"
      stacks.append(TracedStack(name=name, units=[sorted(members[m]["leaves"]) for m in run],
                                unit_names=run, depth=len(run), intervals=[],
                                family=f"family {family_label(pattern)!r}"))
  return stacks


def drop_stems(stacks: list[TracedStack], uses: Uses, data: int) -> list[TracedStack]:
  """The stacks without those that are another stack's stem (its embedding stage).

  A stack through which all of another stack's input runs is that stack's stem (a
  conv feature extractor, a hybrid ViT's ResNet stages): every application of the
  downstream stack's first layer to the data depends on it. A decoder's first layer
  also reads the encoder's output, but only through a side input (cross-attention
  keys and values); its main path (the decoder's own embeddings) does not.
  """
  stems = set()
  for s in stacks:
    applied = [m for i in s.units[0] for _, m in uses.get(i, ()) if m & data]
    if not applied:
      continue
    for o in stacks:
      if o is not s and all(m & o.leaves for m in applied):
        stems.add(id(o))
  return [s for s in stacks if id(s) not in stems]


def _not_whole(s: TracedStack, skips: list[int], free: list[int], first_use: Mapping[int, int]
               ) -> bool:
  """Whether a residual branch holds free leaves read among the stack's units, outside them.

  Then its units are parts of the layers (an attention family among global auto-numbered
  names: the norm before each attention, the MLP after it are not in it). Leaves read
  before or after the stack (an encoder's output in a decoder's cross-attention, a bias
  computed once before the layers) are side inputs, not parts.
  """
  if s.scan:
    return False
  whole = mask_of(i for u in s.units for i in u)
  times = [first_use[i] for u in s.units for i in u if i in first_use]
  lo, hi = min(times), max(times)
  among = mask_of(i for i in free if lo < first_use.get(i, lo) < hi and not whole >> i & 1)
  return any(b & among for b in skips)


def _holds(outer: TracedStack, s: TracedStack) -> bool:
  """Whether each unit of ``s`` lies in its own unit of ``outer``, one of them strictly."""
  outer_masks = [mask_of(u) for u in outer.units]
  hosts, larger = set(), False
  for unit in s.units:
    u = mask_of(unit)
    k = next((k for k, m in enumerate(outer_masks) if not u & ~m), None)
    if k is None or k in hosts:
      return False
    hosts.add(k)
    larger |= outer_masks[k] != u
  return larger


def by_period(stacks: list[TracedStack], w: Walker, names: list[str], shapes: list[Any],
              free: list[int], first_use: Mapping[int, int]) -> list[TracedStack]:
  """The stacks, with the periods of the data flow where no family holds the layers whole.

  With no stack, or with stacks whose units are parts of the layers, the periods
  (:func:`.period.period_units`) are the layers if they hold those units.
  """
  partial = [s for s in stacks if _not_whole(s, w.skips, free, first_use)]
  if stacks and not partial:
    return stacks
  found = period_units(names, free, shapes, first_use, w.skips)
  if found is None:
    return stacks
  units, unit_names, name = found
  periods = TracedStack(name=name, units=units, unit_names=unit_names, depth=len(units),
                        intervals=[], family="the period of the data flow")
  held = [s for s in partial if _holds(periods, s)]
  if stacks and not held:
    return stacks
  return [s for s in stacks if s not in held] + [periods]


def find_stacks(w: Walker, names: list[str], abstract: list[Any], float_idx: list[int],
                pinned: Mapping[int, Any], uses: Uses, first_use: Mapping[int, int], data: int
                ) -> tuple[list[TracedStack], dict[int, int], Families]:
  """The stacks of layers (loops, families of the tree, periods), spanned, stems dropped.

  Returns:
    The stacks, the layer axis of every scanned leaf, and the tree's numbered
    families (for the error when no stack is found).
  """
  shapes = [(tuple(v.shape), str(v.dtype)) for v in abstract]
  stacks, axes = scanned_stacks(w, names, shapes, {i for i in float_idx if i not in pinned})
  # Pinned leaves stay in the tree's families (they shape the units) but are not placed.
  tree_free = [i for i in float_idx if i not in axes]
  fams = families(names, tree_free, shapes)
  stacks += tree_stacks(fams, select(fams, w.skips), uses, first_use)
  stacks = by_period(stacks, w, names, shapes, [i for i in tree_free if i not in pinned],
                     first_use)
  for s in stacks:
    span(s, uses, first_use, (w.skips, w.skip_times))
  return drop_stems(stacks, uses, data), axes, fams


def pinned_stack(pinned: Mapping[int, Any], names: list[str], first_use: Mapping[int, int]
                 ) -> TracedStack | None:
  """The one stack made of the leaves pinned to layers 0..L-1 by int overrides, else None."""
  units: dict[int, list[int]] = collections.defaultdict(list)
  for i, spec in pinned.items():
    if isinstance(spec, int) and not isinstance(spec, bool):
      units[spec].append(i)
  if not units or sorted(units) != list(range(len(units))):
    return None
  order = [sorted(units[k]) for k in range(len(units))]
  if not all(any(i in first_use for i in unit) for unit in order):
    return None
  return TracedStack(name="", units=order, unit_names=[f"{names[u[0]]} (layer {k})"
                                                        for k, u in enumerate(order)],
                     depth=len(order), intervals=[])


def number_stacks(stacks: list[TracedStack], numbering: str
                  ) -> tuple[list[TracedStack], dict[str, int]]:
  """The stacks in execution order, named and offset per ``numbering``, and their depths.

  ``'per_stack'``: each stack keeps its name (``''`` when it is the only one) and
  its depth. ``'continue'``: one unnamed stack, layers numbered on across stacks.
  """
  stacks = sorted(stacks, key=lambda s: s.start)
  if numbering == "continue":
    offset = 0
    for s in stacks:
      s.offset = offset
      offset += s.depth
      s.final_name = ""
    return stacks, {"": offset}
  for s in stacks:
    s.final_name = "" if len(stacks) == 1 else s.name
  return stacks, {s.final_name: s.depth for s in stacks}
