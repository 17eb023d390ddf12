"""The jaxpr walk: which parameter leaves every value depends on, and where each leaf is applied.

A *mask* is an int: bit ``i`` for parameter leaf ``i``, bit ``n`` (the *data* bit)
for the example inputs. The walk propagates masks through the equations of a
jaxpr, nested jaxprs included (``pjit``, ``custom_jvp`` / ``custom_vjp``,
``remat``, ``scan``, ``while``, ``cond``), one *time* step per recorded
equation. It records, for every leaf, the times at which it is *applied* (first
combined with something else; casts, reshapes and transposes of a leaf are the
leaf itself), every equation that mixes values of different masks, every skip
connection (an add of ``x`` and ``f(x)``), and the leaves a ``scan`` slices
(stacked leaves).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping
from typing import Any

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
    self.stacked: dict[int, tuple[int, int | None]] = {}  # leaf -> (scan id, axis)
    self.scans: list[dict[str, Any]] = []  # per recorded scan: length, walk time ranges

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
    n_out = len(eqn.outvars)
    t = self.t
    if self.recording:
      self.t += 1
      distinct = {x for x in ms if x}
      if len(distinct) >= 2:
        self.mixes.append((t, tuple(distinct), m))
        if name in _ADD and len(distinct) == 2:
          self._skip(*distinct)
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
        self.consumptions.append((a[0], t, m))
    return [m] * n_out, [None] * n_out

  def _skip(self, a: int, b: int):
    """Records ``x + f(x)``: both inputs read the data, one's leaves within the other's."""
    small, big = (a, b) if a & b == a else (b, a)
    data = self.data
    if small & big == small and small & data and big & data and small & ~data:
      self.skips.append(big & ~small)

  def _fixpoint(self, body: Any, fixed: list[int], carry: list[int], rest: list[int],
                fixed_alias: list[Any], rest_alias: list[Any], n_carry: int) -> list[int]:
    """Carry masks at the loop's fixpoint (nothing recorded)."""
    recording, self.recording = self.recording, False
    try:
      while True:
        outs, _ = self.walk(body, fixed + carry + rest,
                            fixed_alias + [None] * n_carry + rest_alias)
        new = [c | o for c, o in zip(carry, outs[:n_carry])]
        if new == carry:
          return carry
        carry = new
    finally:
      self.recording = recording

  def _sliced(self, xs_alias: list[Any], scan_id: int) -> list[Any]:
    """The aliases of a scan's slices in its body; records the leaves it slices as stacked."""
    body_alias = []
    for a in xs_alias:
      if a is None:
        body_alias.append(None)
        continue
      leaf, axes = a
      if self.recording and leaf not in self.stacked:
        self.stacked[leaf] = (scan_id, None if not axes else axes[0])
      body_alias.append((leaf, None if axes is None else axes[1:]))
    return body_alias

  def _scan(self, eqn: Any, ms: list[int], als: list[Any]) -> tuple[list[int], list[Any]]:
    """A scan: walk 0 is the first layer (the carry is the scan's input), walk 1 the others."""
    p = eqn.params
    nc, ncar, length = p["num_consts"], p["num_carry"], int(p["length"])
    body = as_jaxpr(p["jaxpr"])
    consts, carry, xs = ms[:nc], ms[nc:nc + ncar], ms[nc + ncar:]
    al_c, al_carry = als[:nc], als[nc:nc + ncar]
    scan_id = len(self.scans)
    body_x_alias = self._sliced(als[nc + ncar:], scan_id)
    record = self.recording
    start0 = self.t
    outs0, _ = self.walk(body, consts + carry + xs, al_c + al_carry + body_x_alias)
    ranges = [(start0, self.t - 1)]
    cur = self._fixpoint(body, consts, [c | o for c, o in zip(carry, outs0[:ncar])], xs,
                         al_c, body_x_alias, ncar)
    ys = outs0[ncar:]
    # A recorded scan of one layer has no later layers to walk.
    if length >= 2 or not record:
      start1 = self.t
      outs1, _ = self.walk(body, consts + cur + xs, al_c + [None] * ncar + body_x_alias)
      if record:
        ranges.append((start1, self.t - 1))
      ys = [a | b for a, b in zip(ys, outs1[ncar:])]
    if record:
      self.scans.append({"length": length, "ranges": ranges})
    outs = cur + ys
    return outs, [None] * len(outs)

  def _while(self, eqn: Any, ms: list[int], als: list[Any]) -> tuple[list[int], list[Any]]:
    """A while loop: the carry at its fixpoint, then one recorded walk of cond and body."""
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cond, body = as_jaxpr(p["cond_jaxpr"]), as_jaxpr(p["body_jaxpr"])
    cc, bc, init = ms[:cn], ms[cn:cn + bn], ms[cn + bn:]
    n = len(init)
    cur = self._fixpoint(body, bc, list(init), [], als[cn:cn + bn], [], n)
    if self.recording:
      self.walk(cond, cc + cur, als[:cn] + [None] * n)
      self.walk(body, bc + cur, als[cn:cn + bn] + [None] * n)
    return cur, [None] * n

  def _cond(self, eqn: Any, ms: list[int], als: list[Any]) -> tuple[list[int], list[Any]]:
    """A conditional: every branch is walked; the outputs depend on the predicate."""
    outs = [ms[0]] * len(eqn.outvars)
    for branch in eqn.params["branches"]:
      bo, _ = self.walk(as_jaxpr(branch), ms[1:], als[1:])
      outs = [a | b for a, b in zip(outs, bo)]
    return outs, [None] * len(outs)
