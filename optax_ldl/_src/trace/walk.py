"""The jaxpr walk: which parameter leaves every value depends on, and where each leaf is applied.

A *mask* is an int: bit ``i`` for parameter leaf ``i``, bit ``n`` (the *data* bit)
for the example inputs. The walk propagates masks through the equations of a
jaxpr, nested jaxprs included (``pjit``, ``custom_jvp`` / ``custom_vjp``,
``remat``, ``scan``, ``while``, ``cond``), one *time* step per recorded
equation. It records, for every leaf, the times at which it is *applied* (first
combined with something else; casts, reshapes and transposes of a leaf are the
leaf itself), every equation that mixes values of different masks, every skip
connection (an add of ``x`` and ``f(x)``), and the leaves a loop slices (stacked
leaves): a ``scan`` over them, or a ``scan`` / ``while`` (``fori_loop``) body that
indexes them with its counter. A loop body is walked as the layers of a stack: walk 0
is the first iteration (its carry is the loop's input), walk 1 the later ones.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

# Primitives that only change a value's layout or type: their output *is* the leaf.
_LAYOUT = frozenset({
    "convert_element_type", "reshape", "transpose", "broadcast_in_dim", "squeeze",
    "expand_dims", "copy", "copy_p", "reduce_precision", "sharding_constraint",
    "device_put", "mesh_cast", "reshard", "pvary", "optimization_barrier",
})
# Layout primitives that keep the axes (transpose is handled on its own).
_SAME_AXES = frozenset({
    "convert_element_type", "copy", "copy_p", "reduce_precision", "sharding_constraint",
    "device_put", "mesh_cast", "reshard", "pvary", "optimization_barrier",
})
# Primitives that add two values: a residual connection ``x + f(x)`` is one of them.
_ADD = frozenset({"add", "add_any", "sub"})
_SUB_JAXPR_KEYS = ("jaxpr", "call_jaxpr", "fun_jaxpr")

# Each leaf's applications, (time, mask of the result), in walk order.
Uses = Mapping[int, list[tuple[int, int]]]


def bits(mask: int) -> Iterator[int]:
  """The set bits of ``mask`` (leaf indices), lowest first."""
  while mask:
    low = mask & -mask
    yield low.bit_length() - 1
    mask ^= low


def mask_of(leaves: Any) -> int:
  """The mask of an iterable of leaf indices."""
  mask = 0
  for i in leaves:
    mask |= 1 << i
  return mask


def applications(consumptions: list[tuple[int, int, int]]) -> tuple[Uses, dict[int, int]]:
  """Each leaf's applications ``[(time, result mask)]`` and the time of its first one."""
  uses: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
  for leaf, t, m in consumptions:
    uses[leaf].append((t, m))
  first_use = {leaf: min(t for t, _ in c) for leaf, c in uses.items()}
  return uses, first_use


def _is_literal(v: Any) -> bool:
  return type(v).__name__ == "Literal"


def as_jaxpr(x: Any) -> Any:
  """The open jaxpr of a Jaxpr or ClosedJaxpr, else None."""
  if hasattr(x, "eqns") and hasattr(x, "invars"):
    return x
  inner = getattr(x, "jaxpr", None)
  if inner is not None and hasattr(inner, "eqns") and hasattr(inner, "invars"):
    return inner
  return None


def _sub_jaxpr(eqn: Any) -> Any:
  """The one nested jaxpr whose inputs and outputs are the equation's, else None."""
  found = []
  for key, value in eqn.params.items():
    jaxpr = as_jaxpr(value)
    if (jaxpr is not None and len(jaxpr.invars) == len(eqn.invars)
        and len(jaxpr.outvars) == len(eqn.outvars)):
      found.append((key not in _SUB_JAXPR_KEYS, key, jaxpr))
  if not found:
    return None
  return min(found, key=lambda f: (f[0], f[1]))[2]


def _read(variables: list[Any], env: dict[Any, int], alias: dict[Any, Any]
          ) -> tuple[list[int], list[Any]]:
  """The masks and aliases of ``variables`` (a literal has mask 0 and no alias)."""
  ms, als = [], []
  for v in variables:
    if _is_literal(v):
      ms.append(0)
      als.append(None)
    else:
      ms.append(env.get(v, 0))
      als.append(alias.get(v))
  return ms, als


class Walker:
  """Propagates dependency masks through a jaxpr and records where leaves are applied.

  An *alias* of leaf ``i`` is a value that is the leaf up to layout (``(i, axes)``,
  ``axes[j]`` the leaf's axis that is axis ``j`` here, or None). Nothing is recorded
  while ``recording`` is off (the walks that look for a loop's fixpoint).
  """

  def __init__(self, data: int):
    self.data = data  # the example inputs' bit
    self.t = 0
    self.recording = True
    self.consumptions: list[tuple[int, int, int]] = []  # (leaf, time, output mask)
    self.mixes: list[tuple[int, tuple[int, ...], int]] = []  # (time, input masks, out mask)
    # Skip connections: an add whose one input depends on a subset of the other's leaves
    # (``x + f(x)``): the leaves of ``f`` (the residual branch it bypasses), as a mask.
    self.skips: list[int] = []
    self.skip_times: list[int] = []  # the time of each skip's add
    self.stacked: dict[int, tuple[int, int | None]] = {}  # leaf -> (loop id, axis)
    self.indexed: set[int] = set()  # the stacked leaves a loop indexes with its counter
    # Per recorded loop: its length (None for a while loop) and the time ranges of its walks.
    self.scans: list[dict[str, Any]] = []
    # The loop counters' bit: an integer scalar carried (or scanned) by a loop body.
    self.counter = data << 1
    self.loops: list[int] = []  # the ids of the recorded loops being walked, innermost last

  def walk(self, jaxpr: Any, in_masks: list[int], in_alias: list[Any]
           ) -> tuple[list[int], list[Any]]:
    """The masks and aliases of the outputs of ``jaxpr``, given its inputs'."""
    env: dict[Any, int] = {}
    alias: dict[Any, Any] = {}
    for v, m, a in zip(jaxpr.invars, in_masks, in_alias):
      env[v] = m
      if a is not None:
        alias[v] = a
    for eqn in jaxpr.eqns:
      outs, oal = self._equation(eqn, *_read(eqn.invars, env, alias))
      for v, m, a in zip(eqn.outvars, outs, oal):
        env[v] = m
        if a is not None:
          alias[v] = a
        elif v in alias:
          del alias[v]
    return _read(jaxpr.outvars, env, alias)

  def _equation(self, eqn: Any, ms: list[int], als: list[Any]
                ) -> tuple[list[int], list[Any]]:
    """One equation: a loop, a conditional, a call of a nested jaxpr, or a primitive."""
    name = eqn.primitive.name
    if name == "scan":
      return self._scan(eqn, ms, als)
    if name == "while":
      return self._while(eqn, ms, als)
    if name == "cond":
      return self._cond(eqn, ms, als)
    sub = None if name in _LAYOUT else _sub_jaxpr(eqn)
    if sub is not None:
      return self.walk(sub, ms, als)
    return self._primitive(eqn, name, ms, als)

  def _primitive(self, eqn: Any, name: str, ms: list[int], als: list[Any]
                 ) -> tuple[list[int], list[Any]]:
    """A primitive: its output depends on all its inputs; a layout change keeps an alias."""
    m = 0
    for x in ms:
      m |= x
    if name == "dynamic_slice" and m & self.counter:
      sliced = self._indexed(eqn, ms, als)
      if sliced is not None:
        return [ms[0]], [sliced]
    n_out = len(eqn.outvars)
    t = self.t
    seen = m & ~self.counter  # what is recorded: no loop counter
    if self.recording:
      self.t += 1
      distinct = {x & ~self.counter for x in ms if x & ~self.counter}
      if len(distinct) >= 2:
        self.mixes.append((t, tuple(distinct), seen))
        if name in _ADD and len(distinct) == 2:
          self._skip(t, *distinct)
    inputs = [a for a in als if a is not None]
    if name in _LAYOUT and len(inputs) == 1 and n_out == 1 and m == 1 << inputs[0][0]:
      leaf, axes = inputs[0]
      if axes is not None:
        if name == "transpose":
          axes = tuple(axes[i] for i in eqn.params["permutation"])
        elif name not in _SAME_AXES:
          axes = None
      return [m], [(leaf, axes)]
    if self.recording:
      for a in inputs:
        self.consumptions.append((a[0], t, seen))
    return [m] * n_out, [None] * n_out

  def _skip(self, t: int, a: int, b: int):
    """Records ``x + f(x)``: both inputs read the data, one's leaves within the other's."""
    small, big = (a, b) if a & b == a else (b, a)
    data = self.data
    if small & big == small and small & data and big & data and small & ~data:
      self.skips.append(big & ~small)
      self.skip_times.append(t)

  def _indexed(self, eqn: Any, ms: list[int], als: list[Any]) -> Any:
    """A leaf indexed by a loop counter (``w[i]`` in a loop body): the alias of its slice.

    The leaf is stacked along the indexed axis (one layer per iteration); the slice is
    the leaf itself. None unless one index is the counter's, the others are constants
    and a scan's length is the size of that axis (a table read per step is no stack).
    """
    if als[0] is None or ms[0] != 1 << als[0][0] or not self.loops:
      return None
    hit = [j for j, x in enumerate(ms[1:]) if x]
    if len(hit) != 1 or ms[1 + hit[0]] != self.counter:
      return None
    j = hit[0]
    length = self.scans[self.loops[-1]]["length"]
    if length is not None and eqn.invars[0].aval.shape[j] != length:
      return None
    leaf, axes = als[0]
    if self.recording and leaf not in self.stacked:
      self.stacked[leaf] = (self.loops[-1], None if axes is None else axes[j])
      self.indexed.add(leaf)
    return leaf, None if axes is None else (*axes[:j], None, *axes[j + 1:])

  def _counters(self, variables: list[Any]) -> list[int]:
    """The counter bit for each integer scalar among a loop body's ``variables``, else 0."""
    out = []
    for v in variables:
      aval = getattr(v, "aval", None)
      dtype = getattr(aval, "dtype", None)
      scalar = getattr(aval, "shape", None) == () and dtype is not None
      out.append(self.counter if scalar and np.issubdtype(dtype, np.integer) else 0)
    return out

  def _fixpoint(self, body: Any, fixed: list[int], carry: list[int], rest: list[int],
                fixed_alias: list[Any], rest_alias: list[Any], marks: list[int]) -> list[int]:
    """Carry masks at the loop's fixpoint (nothing recorded); ``marks``: the counters' bits."""
    recording, self.recording = self.recording, False
    try:
      while True:
        outs, _ = self.walk(body, fixed + carry + rest,
                            fixed_alias + [None] * len(carry) + rest_alias)
        new = [c | o | k for c, o, k in zip(carry, outs, marks)]
        if new == carry:
          return carry
        carry = new
    finally:
      self.recording = recording

  def _sliced(self, xs_alias: list[Any], scan_id: int | None) -> list[Any]:
    """The aliases of a scan's slices in its body; records the leaves it slices as stacked."""
    body_alias = []
    for a in xs_alias:
      if a is None:
        body_alias.append(None)
        continue
      leaf, axes = a
      if scan_id is not None and leaf not in self.stacked:
        self.stacked[leaf] = (scan_id, None if not axes else axes[0])
      body_alias.append((leaf, None if axes is None else axes[1:]))
    return body_alias

  def _open_loop(self, length: int | None) -> int | None:
    """A new recorded loop's id (None while not recording)."""
    if not self.recording:
      return None
    self.scans.append({"length": length, "ranges": []})
    self.loops.append(len(self.scans) - 1)
    return self.loops[-1]

  def _loop(self, body: Any, fixed: tuple[list[int], list[Any]], carry: tuple[list[int], list[Any]],
            rest: tuple[list[int], list[Any]], loop_id: int | None, again: bool,
            cond: tuple[Any, list[int], list[Any]] | None = None) -> tuple[list[int], list[int]]:
    """A loop body walked as layers: walk 0 from the loop's input, walk 1 at the fixpoint.

    Args:
      body: the body's jaxpr, its inputs ``fixed + carry + rest``.
      fixed: the masks and aliases of the loop-invariant inputs (constants).
      carry: the carried inputs' masks and aliases.
      rest: the scanned inputs' masks and (sliced) aliases.
      loop_id: the recorded loop's id, or None.
      again: whether later iterations are walked (walk 1).
      cond: a while loop's condition: its jaxpr, constants' masks and aliases.

    Returns:
      The carry's masks at the fixpoint and the scanned outputs' masks (no counter bits).
    """
    (fm, fa), (cm, ca), (rm, ra) = fixed, carry, rest
    n = len(cm)
    marks = self._counters(body.invars[len(fm):len(fm) + n])
    rm = [m | k for m, k in zip(rm, self._counters(body.invars[len(fm) + n:]))]
    cm = [m | k for m, k in zip(cm, marks)]
    try:
      start = self.t
      outs, _ = self.walk(body, fm + cm + rm, fa + ca + ra)
      ranges = [(start, self.t - 1)]
      cur = self._fixpoint(body, fm, [c | o for c, o in zip(cm, outs)], rm, fa, ra, marks)
      ys = outs[n:]
      if again:
        start = self.t
        if cond is not None:
          self.walk(cond[0], cond[1] + cur, cond[2] + [None] * n)
        later, _ = self.walk(body, fm + cur + rm, fa + [None] * n + ra)
        ys = [a | b for a, b in zip(ys, later[n:])]
        if loop_id is not None:
          ranges.append((start, self.t - 1))
      if loop_id is not None:
        self.scans[loop_id]["ranges"] = ranges
    finally:
      if loop_id is not None:
        self.loops.pop()
    return [c & ~self.counter for c in cur], [y & ~self.counter for y in ys]

  def _scan(self, eqn: Any, ms: list[int], als: list[Any]) -> tuple[list[int], list[Any]]:
    """A scan: walk 0 is the first layer (the carry is the scan's input), walk 1 the others."""
    p = eqn.params
    nc, ncar, length = p["num_consts"], p["num_carry"], int(p["length"])
    record = self.recording
    scan_id = self._open_loop(length)
    xs_alias = self._sliced(als[nc + ncar:], scan_id)
    # A recorded scan of one layer has no later layers to walk.
    cur, ys = self._loop(as_jaxpr(p["jaxpr"]), (ms[:nc], als[:nc]),
                         (ms[nc:nc + ncar], als[nc:nc + ncar]), (ms[nc + ncar:], xs_alias),
                         scan_id, length >= 2 or not record)
    outs = cur + ys
    return outs, [None] * len(outs)

  def _while(self, eqn: Any, ms: list[int], als: list[Any]) -> tuple[list[int], list[Any]]:
    """A while loop (``fori_loop``): its body walked as a scan's, then its condition."""
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cond, body = as_jaxpr(p["cond_jaxpr"]), as_jaxpr(p["body_jaxpr"])
    n = len(ms) - cn - bn
    loop_id = self._open_loop(None)
    cur, _ = self._loop(body, (ms[cn:cn + bn], als[cn:cn + bn]),
                        (ms[cn + bn:], als[cn + bn:]), ([], []), loop_id, True,
                        (cond, ms[:cn], als[:cn]))
    return cur, [None] * n

  def _cond(self, eqn: Any, ms: list[int], als: list[Any]) -> tuple[list[int], list[Any]]:
    """A conditional: every branch is walked; the outputs depend on the predicate."""
    outs = [ms[0]] * len(eqn.outvars)
    for branch in eqn.params["branches"]:
      bo, _ = self.walk(as_jaxpr(branch), ms[1:], als[1:])
      outs = [a | b for a, b in zip(outs, bo)]
    return outs, [None] * len(outs)
