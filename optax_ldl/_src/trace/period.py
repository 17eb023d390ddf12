"""Layers found from the period of the data flow, where no numbered container marks them.

With only global auto-numbered names (haiku's ``linear``, ``linear_1``, ...,
``layer_norm_7`` under one module), no unit of the tree is a layer. The modules, in the
order the forward pass first reads them, each written as its name without numbers and
its leaves' shapes, repeat with a period along the residual stream: the longest run of
repeats is the stack, one period a layer. Where the run can start at several modules
(``norm, attention, ..., norm`` or ``attention, ..., norm, norm``), the phase whose units
hold every residual branch (``x + f(x)``) whole is the layer's; each unit must hold one.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

from optax_ldl._src.trace.units import common_prefix, module_comps, unnumbered
from optax_ldl._src.trace.walk import bits


def _modules(names: list[str], leaves: list[int], first_use: Mapping[int, int]
             ) -> tuple[list[str], list[list[int]]]:
  """The modules that hold ``leaves``, in the order of their first use, and their leaves."""
  by_module: dict[str, list[int]] = collections.defaultdict(list)
  for i in leaves:
    if i in first_use:
      by_module["/".join(module_comps(names[i]))].append(i)
  order = sorted(by_module, key=lambda m: min(first_use[i] for i in by_module[m]))
  return order, [sorted(by_module[m]) for m in order]


def _tokens(modules: list[str], members: list[list[int]], names: list[str],
            shapes: list[Any]) -> list[int]:
  """Each module as an int: equal for modules of the same kind (names without numbers, shapes)."""
  seen: dict[Any, int] = {}
  out = []
  for module, leaves in zip(modules, members):
    rels = tuple(sorted((unnumbered(names[i][len(module):]), shapes[i]) for i in leaves))
    out.append(seen.setdefault((unnumbered(module), rels), len(seen)))
  return out


def _repeated_runs(ids: list[int]) -> list[tuple[int, int, int]]:
  """``(period, start, repeats)`` of every run of two or more equal periods, most covering first.

  Every phase of a run that keeps its number of full periods is listed.
  """
  found = []
  size = len(ids)
  for p in range(1, size // 2 + 1):
    a = 0
    while a < size - p:
      if ids[a] != ids[a + p]:
        a += 1
        continue
      b = a
      while b < size - p and ids[b] == ids[b + p]:
        b += 1
      n = (b - a + p) // p
      if n >= 2:
        found += [(p, s, n) for s in range(a, b + p - n * p + 1)]
      a = b
  return sorted(found, key=lambda c: -c[0] * c[2])


def _slots(leaf_module: Mapping[int, int], p: int, s: int, n: int, mask: int) -> set[int]:
  """The units (``-1`` before them, ``n`` after) that hold the leaves of ``mask``."""
  out = set()
  for i in bits(mask):
    j = leaf_module.get(i)
    if j is not None:
      out.add(-1 if j < s else min((j - s) // p, n))
  return out


def period_units(names: list[str], leaves: list[int], shapes: list[Any],
                 first_use: Mapping[int, int], skips: list[int]
                 ) -> tuple[list[list[int]], list[str], str] | None:
  """The layers as the periods of the data flow: units, their names and the stack's name.

  Args:
    names: every leaf's path name.
    leaves: the leaves to search (free, not stacked by a loop).
    shapes: every leaf's ``(shape, dtype)``.
    first_use: every applied leaf's first application time.
    skips: the branches of the skip connections, as leaf masks.

  Returns:
    None when no run of periods holds a whole residual branch in each of its units.
  """
  modules, members = _modules(names, leaves, first_use)
  runs = _repeated_runs(_tokens(modules, members, names, shapes))
  if not runs:
    return None
  leaf_module = {i: j for j, unit in enumerate(members) for i in unit}
  branched = set()
  for b in skips:
    branched.update(bits(b))
  best = runs[0][0] * runs[0][2]
  scored = []
  for p, s, n in runs:
    if p * n < best:
      break
    slots = [_slots(leaf_module, p, s, n, b) for b in skips]
    crossing = sum(1 for u in slots if len(u) >= 2 and u & set(range(n)))
    whole = {next(iter(u)) for u in slots if len(u) == 1}
    # A layer opens with a residual branch (pre-norm: its norm; post-norm: its attention,
    # the norm after the add closing the layer before).
    opening = sum(1 for k in range(n) if any(i in branched for i in members[s + k * p]))
    if whole >= set(range(n)):
      scored.append((crossing, -opening, p, s, n))
  if not scored:
    return None
  *_, p, s, n = min(scored)
  units = [sorted(i for j in range(s + k * p, s + (k + 1) * p) for i in members[j])
           for k in range(n)]
  unit_names = [f"{modules[s + k * p]} .. {modules[s + (k + 1) * p - 1]}" for k in range(n)]
  stack = "/".join(common_prefix([m.split("/") for m in modules[s:s + n * p]]))
  return units, unit_names, stack
