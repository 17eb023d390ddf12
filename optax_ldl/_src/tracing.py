"""``trace_layers``: where every parameter sits, read from the model's data flow.

The forward pass ``fn(params, *args, **kwargs)`` is traced abstractly with
:func:`jax.make_jaxpr` (nothing is compiled or run). Every float parameter leaf
is followed through the equations, nested jaxprs included (``pjit``,
``custom_jvp`` / ``custom_vjp``, ``remat``, ``scan``, ``while``, ``cond``): for
every value the analysis keeps the set of leaves it depends on, and for every
leaf the times at which it is *applied* (first combined with something else;
casts, reshapes and transposes of a leaf are the leaf itself), and every skip
connection (an add of ``x`` and ``f(x)``: the leaves of ``f``).

The layers are the repeated numbered units of the parameter tree (``X_N``
siblings or ``X/N`` children, nested numbering flattened), numbered by first use;
a leaf a ``scan`` slices along an axis is a stacked leaf (all layers of a stack
along that axis). Everything else is placed from where it runs: before the first
layer (the embedding stage), between two layers (the later one), after the last
layer (the head).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from optax_ldl._src.layer_map import LayerMap, Placement

_OWNER = "trace_layers"

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
_SIBLING = re.compile(r"^(.*?[A-Za-z_])(\d+)$")
_SUB_JAXPR_KEYS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def _is_literal(v: Any) -> bool:
  return type(v).__name__ == "Literal"


def _as_jaxpr(x: Any) -> Any:
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
    jaxpr = _as_jaxpr(value)
    if (jaxpr is not None and len(jaxpr.invars) == len(eqn.invars)
        and len(jaxpr.outvars) == len(eqn.outvars)):
      found.append((key not in _SUB_JAXPR_KEYS, key, jaxpr))
  if not found:
    return None
  return min(found, key=lambda f: (f[0], f[1]))[2]


class _Walker:
  """Propagates dependency masks through a jaxpr and records where leaves are applied.

  A mask is an int: bit ``i`` for parameter leaf ``i``, bit ``n`` for the example
  inputs. An *alias* of leaf ``i`` is a value that is the leaf up to layout
  (``(i, axes)``, ``axes[j]`` the leaf's axis that is axis ``j`` here, or None).
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

  def walk(self, jaxpr: Any, in_masks: list[int], in_alias: list[Any]):
    env: dict[Any, int] = {}
    alias: dict[Any, Any] = {}
    for v, m, a in zip(jaxpr.invars, in_masks, in_alias):
      env[v] = m
      if a is not None:
        alias[v] = a
    for eqn in jaxpr.eqns:
      ms, als = [], []
      for v in eqn.invars:
        if _is_literal(v):
          ms.append(0)
          als.append(None)
        else:
          ms.append(env.get(v, 0))
          als.append(alias.get(v))
      name = eqn.primitive.name
      if name == "scan":
        outs, oal = self._scan(eqn, ms, als)
      elif name == "while":
        outs, oal = self._while(eqn, ms, als)
      elif name == "cond":
        outs, oal = self._cond(eqn, ms, als)
      else:
        sub = None if name in _LAYOUT else _sub_jaxpr(eqn)
        if sub is not None:
          outs, oal = self.walk(sub, ms, als)
        else:
          outs, oal = self._primitive(eqn, name, ms, als)
      for v, m, a in zip(eqn.outvars, outs, oal):
        env[v] = m
        if a is not None:
          alias[v] = a
        elif v in alias:
          del alias[v]
    out_m, out_a = [], []
    for v in jaxpr.outvars:
      if _is_literal(v):
        out_m.append(0)
        out_a.append(None)
      else:
        out_m.append(env.get(v, 0))
        out_a.append(alias.get(v))
    return out_m, out_a

  def _primitive(self, eqn: Any, name: str, ms: list[int], als: list[Any]):
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

  def _scan(self, eqn: Any, ms: list[int], als: list[Any]):
    p = eqn.params
    nc, ncar, length = p["num_consts"], p["num_carry"], int(p["length"])
    body = _as_jaxpr(p["jaxpr"])
    consts, carry, xs = ms[:nc], ms[nc:nc + ncar], ms[nc + ncar:]
    al_c, al_carry, al_x = als[:nc], als[nc:nc + ncar], als[nc + ncar:]
    scan_id = len(self.scans)
    body_x_alias = []
    for a in al_x:
      if a is None:
        body_x_alias.append(None)
        continue
      leaf, axes = a
      if self.recording and leaf not in self.stacked:
        self.stacked[leaf] = (scan_id, None if not axes else axes[0])
      body_x_alias.append((leaf, None if axes is None else axes[1:]))
    record = self.recording
    # Walk 0: the first layer (carry = the scan's input); walk 1: the later layers.
    start0 = self.t
    outs0, _ = self.walk(body, consts + carry + xs, al_c + al_carry + body_x_alias)
    ranges = [(start0, self.t - 1)]
    cur = self._fixpoint(body, consts, [c | o for c, o in zip(carry, outs0[:ncar])], xs,
                         al_c, body_x_alias, ncar)
    ys = outs0[ncar:]
    if record and length >= 2:
      start1 = self.t
      outs1, _ = self.walk(body, consts + cur + xs, al_c + [None] * ncar + body_x_alias)
      ranges.append((start1, self.t - 1))
      ys = [a | b for a, b in zip(ys, outs1[ncar:])]
    elif not record:
      outs1, _ = self.walk(body, consts + cur + xs, al_c + [None] * ncar + body_x_alias)
      ys = [a | b for a, b in zip(ys, outs1[ncar:])]
    if record:
      self.scans.append({"length": length, "ranges": ranges})
    outs = cur + ys
    return outs, [None] * len(outs)

  def _while(self, eqn: Any, ms: list[int], als: list[Any]):
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cond, body = _as_jaxpr(p["cond_jaxpr"]), _as_jaxpr(p["body_jaxpr"])
    cc, bc, init = ms[:cn], ms[cn:cn + bn], ms[cn + bn:]
    n = len(init)
    cur = self._fixpoint(body, bc, list(init), [], als[cn:cn + bn], [], n)
    if self.recording:
      self.walk(cond, cc + cur, als[:cn] + [None] * n)
      self.walk(body, bc + cur, als[cn:cn + bn] + [None] * n)
    return cur, [None] * n

  def _cond(self, eqn: Any, ms: list[int], als: list[Any]):
    outs = [ms[0]] * len(eqn.outvars)
    for branch in eqn.params["branches"]:
      bo, _ = self.walk(_as_jaxpr(branch), ms[1:], als[1:])
      outs = [a | b for a, b in zip(outs, bo)]
    return outs, [None] * len(outs)


@dataclasses.dataclass
class _Stack:
  name: str
  units: list[list[int]]  # leaf indices per unit, in execution order (one unit for a scan)
  unit_names: list[str]
  depth: int
  intervals: list[tuple[int, int]]  # time span of each unit (scan: first layer, later ones)
  leaves: int = 0  # mask
  scan: bool = False
  start: int = 0
  offset: int = 0
  final_name: str = ""

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


def _bits(mask: int):
  while mask:
    low = mask & -mask
    yield low.bit_length() - 1
    mask ^= low


def _module_comps(name: str) -> list[str]:
  comps = name.split("/")
  if comps[-1].isdigit():
    return comps  # a list of arrays: each array is its own unit
  if comps[-1] == "value" and len(comps) >= 2:
    return comps[:-2]  # an NNX Variable: <module>/<name>/value
  return comps[:-1]


def _families(names: list[str], leaves: list[int], shapes: list[Any]):
  """Numbered families: pattern -> {member path: [(leaf, relative path)]}."""
  fams: dict[tuple[str, ...], dict[str, list[tuple[int, str]]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  for i in leaves:
    comps = names[i].split("/")
    mod = _module_comps(names[i])
    pattern = []
    for pos, c in enumerate(mod):
      if c.isdigit():
        pattern.append("*")
      else:
        match = _SIBLING.match(c)
        pattern.append(f"{match.group(1)}*" if match else c)
        if not match:
          continue
      member = "/".join(comps[:pos + 1])
      rel = "/".join(comps[pos + 1:])
      fams[tuple(pattern)][member].append((i, rel))
  out = {}
  for pattern, members in fams.items():
    info = {}
    for member, items in members.items():
      sig = tuple(sorted((rel, shapes[i]) for i, rel in items))
      composite = any(rel and _module_comps(rel) for _, rel in items)
      info[member] = {"leaves": [i for i, _ in items], "sig": sig, "composite": composite}
    out[pattern] = info
  return out


def _repeats(members: dict[str, dict[str, Any]]) -> bool:
  """Whether two members have the same structure, up to a few extra leaves in one.

  The first layer often carries a leaf the others lack (T5's relative attention bias in
  block 0): with two layers no two members are identical, but one is the other plus it.
  """
  sigs = [m["sig"] for m in members.values()]
  if len(sigs) < 2:
    return False
  if len(set(sigs)) < len(sigs):
    return True
  sets = [frozenset(s) for s in sigs]
  return any(a < b and len(b - a) < len(a) for a in sets for b in sets)


def _parts_of_layers(outer: dict[str, Any], inner: dict[str, Any], depth: int,
                     skips: list[int]) -> bool:
  """Whether the inner units are parts of the outer ones rather than layers inside them.

  A layer is bypassed by its own skip connections only: a skip (``x + f(x)``) whose branch
  ``f`` holds two inner units of one outer member (a ResNet basic block: conv, conv, add),
  or an inner unit and leaves of the outer member outside every inner unit (a
  transformer block: norm, attention, add), makes the inner units parts of a layer.
  """
  units: dict[str, list[int]] = collections.defaultdict(list)
  for member, info in inner.items():
    mask = 0
    for i in info["leaves"]:
      mask |= 1 << i
    units["/".join(member.split("/")[:depth])].append(mask)
  for member, info in outer.items():
    whole = 0
    for i in info["leaves"]:
      whole |= 1 << i
    masks = units.get(member, [])
    covered = 0
    for u in masks:
      covered |= u
    for skip in skips:
      branch = skip & whole
      if not branch:
        continue
      hit = sum(1 for u in masks if branch & u)
      if hit >= 2 or (hit and branch & ~covered):
        return True
  return False


def _select(fams: dict[tuple[str, ...], dict[str, Any]], skips: list[int]
            ) -> list[tuple[str, ...]]:
  """The families whose members are the layers (repeated, innermost composite units)."""
  cands = [p for p, members in fams.items() if _repeats(members)]
  composite = [p for p in cands if any(m["composite"] for m in fams[p].values())]
  if composite:
    cands = composite
  chosen = set(cands)
  for outer in sorted(cands, key=len):
    for inner in sorted(cands, key=len):
      if outer not in chosen or inner not in chosen or len(inner) <= len(outer):
        continue
      if inner[:len(outer)] != outer:
        continue
      # Prefer the inner family when it repeats within one member of the outer one
      # (identical stages of several identical blocks) and no skip connection runs
      # across its units; else the inner units are parts of each layer (T5's layer/0,
      # layer/1 inside block/N; the two attentions of a decoder block; the convs of a
      # ResNet basic block).
      by_outer: dict[str, list[Any]] = collections.defaultdict(list)
      for member, info in fams[inner].items():
        by_outer["/".join(member.split("/")[:len(outer)])].append(info["sig"])
      if (any(len(s) != len(set(s)) for s in by_outer.values())
          and not _parts_of_layers(fams[outer], fams[inner], len(outer), skips)):
        chosen.discard(outer)
      else:
        chosen.discard(inner)
  return sorted(chosen)


def _pattern_name(pattern: tuple[str, ...]) -> str:
  last = pattern[-1]
  base = list(pattern[:-1]) if last == "*" else list(pattern[:-1]) + [last[:-1].rstrip("_")]
  return "/".join(base)


def _describe_value(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


def _check_overrides(overrides: Any, names: list[str], float_idx: list[int]) -> dict[int, Any]:
  """{leaf: spec} from overrides; the longest matching prefix wins."""
  if overrides is None:
    return {}
  if not isinstance(overrides, Mapping):
    raise TypeError(
        f"{_OWNER}: overrides must be a dict {{path name or prefix: 'embedding' | 'head' | "
        f"int | Placement}}, got {_describe_value(overrides)}")
  for key, spec in overrides.items():
    if not isinstance(key, str) or not key:
      raise TypeError(f"{_OWNER}: overrides keys must be path names or prefixes (non-empty "
                      f"str), got {key!r}")
    ok = (spec in ("embedding", "head") if isinstance(spec, str) else
          isinstance(spec, Placement) or (isinstance(spec, int) and not isinstance(spec, bool)
                                          and spec >= 0))
    if not ok:
      raise ValueError(f"{_OWNER}: overrides[{key!r}] must be 'embedding', 'head', a layer "
                       f"index (int >= 0) or a Placement, got {_describe_value(spec)}")
  result: dict[int, Any] = {}
  used = set()
  for i in float_idx:
    name = names[i]
    best = None
    for key in overrides:
      k = key.rstrip("/")
      if name == k or name.startswith(k + "/"):
        if best is None or len(k) > len(best.rstrip("/")):
          best = key
    if best is not None:
      result[i] = overrides[best]
      used.add(best)
  unknown = [k for k in overrides if k not in used]
  if unknown:
    sample = ", ".join(repr(names[i]) for i in float_idx[:6])
    raise ValueError(
        f"{_OWNER}: overrides {unknown} match no float parameter; keys are path names or "
        f"prefixes of them (keys joined by '/'), e.g. {sample}")
  return result


def _abstract(x: Any) -> Any:
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  return jax.ShapeDtypeStruct(np.shape(x), x.dtype)


def _is_arraylike(x: Any) -> bool:
  return isinstance(x, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct))


def trace_layers(
    fn: Callable[..., Any],
    params: Any,
    *example_args: Any,
    overrides: Mapping[str, Any] | None = None,
    numbering: str = "per_stack",
    **example_kwargs: Any,
) -> LayerMap:
  """Places every float parameter (embedding stage, layer ``i``, head) from the data flow.

  ``fn(params, *example_args, **example_kwargs)`` runs the model's forward pass;
  it is traced abstractly with :func:`jax.make_jaxpr` (nothing is compiled or
  run: ``params`` and the example arguments may be arrays or
  :class:`jax.ShapeDtypeStruct`). Example arguments that are not arrays (flags,
  strings) are passed as they are.

  * **Layers**: the repeated units of the parameter tree, numbered siblings
    ``X_N`` or numbered children ``X/N`` (list indices, haiku's ``block_N``
    under ``~`` included) whose units have the same structure. Nested numbering
    (``stages/S/blocks/B``) is flattened: the block is the layer, numbered
    straight through the stages. Numbered parts of one block are not layers: a
    residual branch (``x + f(x)``) that holds two of them (a ResNet basic block's
    convs) or one of them and other leaves of the block (a decoder block's
    self- and cross-attention, each after its norm) makes the block the layer.
    A first layer with a few extra leaves (T5's relative attention bias in block
    0) still repeats the others. Layers are numbered from 0 in execution order
    (first use), not by their names. A numbered family whose units differ (a
    ``Sequential`` head) is not a stack. A leaf a ``scan`` slices along an axis
    (``nn.scan``, ``nnx.scan``) holds all the layers of a stack:
    ``Placement('layer', stack, layer=0, axis=a)``, the depth is the scan length.
  * **Embedding stage**: a leaf outside the layers that is applied before them
    and whose result enters the first layer (token / position / patch
    embeddings, class tokens, stems, pre-norms). A leaf in the embedding stage of
    several stacks (a shared or tied embedding) goes with the deepest stack.
    A repeated stack through which all of another stack's input runs (a conv
    feature extractor, a hybrid ViT's ResNet: every application of the other
    stack's first layer to the data depends on it) is that stack's embedding
    stage. An encoder read by a decoder's first layer through cross-attention
    only (a side input; the decoder's own embeddings are its main path) stays a
    stack of its own.
  * A leaf outside the layers applied between layer ``k`` and ``k + 1`` (a
    downsample between stages) belongs to layer ``k + 1``.
  * **Head** (ratio 1): everything else: final norms, poolers, heads of any
    shape; a value computed once outside the layers and used by every layer
    (BEiT's shared relative-position bias), as BEiT does.
  * **Several stacks** (encoder and decoder, two towers): with
    ``numbering='per_stack'`` each stack has its own depth; stack names are the
    family's path (``params/encoder/layer``), ``''`` for a single stack. With
    ``numbering='continue'`` the stacks form one stack, numbered on across
    stacks in execution order (BART: encoder ``0..E-1``, decoder ``E..``).
  * A leaf applied inside several layers (shared weights) is an error that
    names the leaf and the layers, unless ``overrides`` places it. ALBERT's one
    layer, applied by every layer of the model, is refused the same way (named
    with its number of applications); ``overrides={its prefix: 0}`` makes it the
    only layer (layer 0 of 1), the leaves before it the embedding stage, the ones
    after it the head.

  Integer leaves are not placed.

  >>> import jax.numpy as jnp
  >>> def forward(p, x):
  ...   h = x @ p['embed']
  ...   for i in range(2):
  ...     h = h + jnp.tanh(h @ p[f'layers_{i}']['w'])
  ...   return h @ p['head']
  >>> params = {'embed': jnp.ones((3, 4)), 'head': jnp.ones((4, 2)),
  ...           'layers_0': {'w': jnp.ones((4, 4))}, 'layers_1': {'w': jnp.ones((4, 4))}}
  >>> layers = trace_layers(forward, params, jnp.ones((1, 3)))
  >>> [str(layers[p]) for p in ('embed', 'layers_0/w', 'layers_1/w', 'head')]
  ['embedding', '0', '1', 'head']
  >>> [round(layers.ratio(p, 0.5), 3) for p in ('embed', 'layers_0/w', 'layers_1/w', 'head')]
  [0.125, 0.25, 0.5, 1.0]

  Args:
    fn: the forward pass, called as ``fn(params, *example_args, **example_kwargs)``.
    params: the parameters (a pytree of arrays or ``jax.ShapeDtypeStruct``).
    *example_args: example inputs (arrays, ``ShapeDtypeStruct``; others are static).
    overrides: ``{path name or prefix: 'embedding' | 'head' | int | Placement}``
      pins leaves (the longest matching prefix wins): ``'embedding'`` (of the
      deepest stack), ``'head'``, an int (a layer of the only stack; when the
      tree has no layers of its own, the leaves pinned to ints ``0..L-1`` are the
      layers and the others are placed around them) or any
      :class:`Placement` (``Placement('ratio', ratio=r)`` for a fixed ratio).
      Pinned leaves are left out of the layer search.
    numbering: ``'per_stack'`` (each stack its own depth) or ``'continue'``.
    **example_kwargs: example keyword inputs.

  Returns:
    A :class:`LayerMap` with every float leaf's :class:`Placement`.

  Raises:
    TypeError: ``fn`` is not callable or ``params`` is not a pytree of arrays.
    ValueError: ``fn`` fails on the example inputs, there are no float leaves, no
      layers are found, the tree is ambiguous, or a leaf is shared by several layers.
  """
  if not callable(fn):
    raise TypeError(f"{_OWNER}: fn must be callable as fn(params, *example_args, "
                    f"**example_kwargs), got {_describe_value(fn)}")
  if numbering not in ("per_stack", "continue"):
    raise ValueError(f"{_OWNER}: numbering must be 'per_stack' or 'continue', got "
                     f"{numbering!r}")
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in flat]
  values = [v for _, v in flat]
  for name, v in zip(names, values):
    if not _is_arraylike(v):
      raise TypeError(
          f"{_OWNER}: params must be a pytree of arrays or jax.ShapeDtypeStruct; leaf "
          f"{name!r} is {_describe_value(v)} ({type(v).__name__})")
  abstract = [_abstract(v) for v in values]
  float_idx = [i for i, v in enumerate(abstract) if np.issubdtype(v.dtype, np.inexact)
               or v.dtype == jax.numpy.bfloat16]
  if not float_idx:
    raise ValueError(f"{_OWNER}: params has no float leaves to place (leaves: "
                     f"{len(values)}); pass the trainable parameters")
  pinned = _check_overrides(overrides, names, float_idx)

  # Trace: array-like example inputs are abstract, the others are static.
  ex_flat, ex_tree = jax.tree_util.tree_flatten((example_args, example_kwargs))
  dyn_pos = [i for i, x in enumerate(ex_flat) if _is_arraylike(x)]
  dyn = [_abstract(ex_flat[i]) for i in dyn_pos]

  def call(p, dyn_values):
    full = list(ex_flat)
    for i, x in zip(dyn_pos, dyn_values):
      full[i] = x
    args, kwargs = jax.tree_util.tree_unflatten(ex_tree, full)
    return fn(p, *args, **kwargs)

  p_abstract = jax.tree_util.tree_unflatten(treedef, abstract)
  try:
    closed = jax.make_jaxpr(call)(p_abstract, dyn)
  except Exception as e:  # noqa: BLE001 - re-raised with context.
    raise ValueError(
        f"{_OWNER}: tracing fn(params, *example_args, **example_kwargs) failed with "
        f"{type(e).__name__}: {e}\n(fn is called with params as its first argument, then "
        f"the example inputs; they may be arrays or jax.ShapeDtypeStruct)") from e

  n = len(values)
  data = 1 << n
  walker = _Walker(data)
  jaxpr = closed.jaxpr
  in_masks, in_alias = [], []
  for i, v in enumerate(abstract):
    if i in pinned or np.issubdtype(v.dtype, np.inexact) or v.dtype == jax.numpy.bfloat16:
      in_masks.append(1 << i)
      in_alias.append((i, tuple(range(len(v.shape)))))
    else:
      in_masks.append(data)
      in_alias.append(None)
  n_rest = len(jaxpr.invars) - n
  walker.walk(jaxpr, in_masks + [data] * n_rest, in_alias + [None] * n_rest)
  return _place(walker, names, abstract, float_idx, pinned, numbering, data)


def _place(w: _Walker, names: list[str], abstract: list[Any], float_idx: list[int],
           pinned: dict[int, Any], numbering: str, data: int) -> LayerMap:
  is_float = set(float_idx)
  cons: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
  for leaf, t, m in w.consumptions:
    cons[leaf].append((t, m))
  first_use = {leaf: min(t for t, _ in c) for leaf, c in cons.items()}
  free = [i for i in float_idx if i not in pinned]

  # Scanned stacks.
  stacks: list[_Stack] = []
  by_scan: dict[int, list[int]] = collections.defaultdict(list)
  for leaf, (scan_id, _) in w.stacked.items():
    if leaf in is_float and leaf not in pinned:
      by_scan[scan_id].append(leaf)
  axes: dict[int, int] = {}
  for scan_id, leaves in sorted(by_scan.items()):
    scan = w.scans[scan_id]
    for leaf in leaves:
      axis = w.stacked[leaf][1]
      if axis is None:
        raise ValueError(
            f"{_OWNER}: {names[leaf]!r} is sliced by a scan (a stacked layer leaf) but its "
            f"layer axis cannot be followed through the reshapes before the scan; pass "
            f"overrides={{{names[leaf]!r}: Placement('layer', layer=0, axis=A)}}")
      axes[leaf] = axis
    comps = [names[i].split("/") for i in leaves]
    common = []
    for parts in zip(*comps):
      if len(set(parts)) != 1:
        break
      common.append(parts[0])
    if len(leaves) == 1:
      common = common[:-1]
    stacks.append(_Stack(name="/".join(common) or f"scan{scan_id}", units=[sorted(leaves)],
                         unit_names=["/".join(common)], depth=scan["length"],
                         intervals=list(scan["ranges"]), scan=True))
  in_scan = set(axes)

  # Numbered families of the tree.
  # Pinned leaves stay in the tree's families (they shape the units) but are not placed.
  tree_free = [i for i in float_idx if i not in in_scan]
  shapes = [(tuple(v.shape), str(v.dtype)) for v in abstract]
  fams = _families(names, tree_free, shapes)
  chosen = _select(fams, w.skips)
  for pattern in chosen:
    members = fams[pattern]
    unused = [m for m, info in members.items()
              if not any(i in first_use for i in info["leaves"])]
    if unused:
      raise ValueError(
          f"{_OWNER}: the numbered units {unused} of {'/'.join(pattern)!r} are never used "
          f"by fn, so their layer cannot be read from the data flow; place them with "
          f"overrides, e.g. overrides={{{unused[0]!r}: 'head'}}")
    order = sorted(members, key=lambda m: min(first_use[i] for i in members[m]["leaves"]
                                              if i in first_use))
    # Split into chained runs: unit k must consume what unit k - 1 produced.
    runs: list[list[str]] = [[order[0]]]
    for prev, cur in zip(order, order[1:]):
      prev_mask = 0
      for i in members[prev]["leaves"]:
        prev_mask |= 1 << i
      seen = 0
      for i in members[cur]["leaves"]:
        for _, m in cons.get(i, ()):
          seen |= m
      if seen & prev_mask:
        runs[-1].append(cur)
      else:
        runs.append([cur])
    if len(runs) > 1:
      runs = [r for r in runs if len(r) >= 2]
    for r_index, run in enumerate(runs):
      name = _pattern_name(pattern)
      if len(runs) > 1:
        name = f"{name}#{r_index}"
      stacks.append(_Stack(name=name, units=[sorted(members[m]["leaves"]) for m in run],
                           unit_names=run, depth=len(run), intervals=[]))

  for s in stacks:
    _span(s, cons, first_use)

  # A stack through which all of another stack's input runs is that stack's stem (a
  # conv feature extractor, a hybrid ViT's ResNet stages): every application of the
  # downstream stack's first layer to the data depends on it. A decoder's first layer
  # also reads the encoder's output, but only through a side input (cross-attention
  # keys and values); its main path (the decoder's own embeddings) does not.
  stems = set()
  for s in stacks:
    applied = [m for i in s.units[0] for _, m in cons.get(i, ()) if m & data]
    if not applied:
      continue
    for o in stacks:
      if o is not s and all(m & o.leaves for m in applied):
        stems.add(id(o))
  stacks = [s for s in stacks if id(s) not in stems]

  if not stacks:
    if all(i in pinned for i in float_idx):
      return LayerMap.build({names[i]: _resolve(pinned[i], names[i], []) for i in float_idx})
    # Leaves pinned to layers 0..L-1 (overrides={prefix: int}) are the layers: the others
    # are placed around them (ALBERT's shared layer pinned to layer 0).
    s = _pinned_stack(pinned, names, first_use)
    if s is None:
      raise ValueError(_no_layers_message(names, fams, cons, free, data))
    _span(s, cons, first_use)
    stacks = [s]

  stacks.sort(key=lambda s: s.start)
  if numbering == "continue":
    offset = 0
    for s in stacks:
      s.offset = offset
      offset += s.depth
      s.final_name = ""
    depths = {"": offset}
  else:
    for s in stacks:
      s.final_name = "" if len(stacks) == 1 else s.name
    depths = {s.final_name: s.depth for s in stacks}

  block = 0
  for s in stacks:
    block |= s.leaves
  owner: dict[int, tuple[_Stack, int]] = {}
  for s in stacks:
    for k, unit in enumerate(s.units):
      for i in unit:
        owner[i] = (s, k)
  nonblock = 0
  for i in free:
    if i not in owner:
      nonblock |= 1 << i

  # Where the values of non-layer leaves enter the layers' computation.
  entries: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
  for t, ins, m in w.mixes:
    mb = m & block
    if not mb:
      continue
    for x in ins:
      if not x & block and x & nonblock:
        for leaf in _bits(x & nonblock):
          entries[leaf].append((t, mb))

  placements: dict[str, Placement] = {}
  shared: list[str] = []
  applied_mask = block | data

  def layer(s: _Stack, k: int, axis: int | None = None) -> Placement:
    return Placement("layer", s.final_name, layer=s.offset + k, axis=axis)

  def unit_label(s: _Stack, k: int) -> str:
    return s.unit_names[k] if not s.scan else f"{s.unit_names[0]} (scanned layers)"

  for i in free:
    name = names[i]
    if i in owner:
      s, k = owner[i]
      if s.scan:
        placements[name] = layer(s, 0, axes[i])
        continue
      # Applied again after its own layer ended: shared with later layers.
      later = set()
      for t, m in cons.get(i, ()):
        if m & applied_mask and t > s.intervals[k][1]:
          where, j = s.where(t)
          latest = s.unit_names[j if where == "in" else j - 1]
          later.add(latest if where != "after" else f"{latest} or after it")
      if later:
        shared.append(f"{name!r} (in {s.unit_names[k]!r}) is also applied in "
                      f"{sorted(later)}")
      placements[name] = layer(s, k)
      continue
    uses = cons.get(i, [])
    if not uses:
      placements[name] = Placement("head")
      continue
    # Applied inside the layers?
    inside: list[tuple[_Stack, int]] = []
    for s in stacks:
      ks = sorted({s.where(t)[1] for t, m in uses if m & applied_mask
                   and s.where(t)[0] == "in" and m & s.leaves})
      if s.scan and ks and s.depth >= 2:
        shared.append(f"{name!r} is applied inside every layer of the scanned stack "
                      f"{unit_label(s, 0)!r}")
        ks = []
      elif len(ks) >= 2:
        shared.append(f"{name!r} is applied inside {[s.unit_names[j] for j in ks]}")
        ks = []
      inside += [(s, k) for k in ks]
    if inside:
      placements[name] = layer(*inside[0])
      continue
    ents = sorted(entries.get(i, []))
    has_free_use = any(not m & block for _, m in uses)
    if has_free_use:
      emb = []
      for s in stacks:
        mine = [(t, mb) for t, mb in ents if mb & s.leaves]
        if not mine:
          continue
        entered = {s.where(t)[1] for t, _ in mine if s.where(t)[0] == "in"}
        if s.where(mine[0][0]) == ("in", 0) and entered == {0}:
          emb.append(s)
      if emb:
        best = max(emb, key=lambda s: (s.depth, -s.start))
        placements[name] = Placement("embedding", best.final_name)
        continue
    # Where it runs: between layers k - 1 and k of a stack -> layer k; else the head.
    applied = [t for t, m in uses if m & applied_mask]
    times = [t for t in (min(applied, default=None), ents[0][0] if ents else None)
             if t is not None]
    place = Placement("head")
    if times:
      t0 = min(times)
      for s in stacks:
        where, k = s.where(t0)
        entered = {s.where(tt)[1] for tt, mm in ents if mm & s.leaves
                   and s.where(tt)[0] == "in"}
        if where == "between" or (where == "in" and len(entered) == 1 and not s.scan):
          place = layer(s, k)
          break
    placements[name] = place

  if shared:
    raise ValueError(
        f"{_OWNER}: shared weights: a leaf applied inside several layers has no single "
        f"layer (ALBERT-style sharing). " + "; ".join(shared) + ". Place them with "
        "overrides, e.g. overrides={<path>: 'head'} or {<path>: <layer>} or "
        "{<path>: Placement('ratio', ratio=r)}")

  deepest = max(stacks, key=lambda s: (s.depth, -s.start))
  for i, spec in pinned.items():
    placements[names[i]] = _resolve(spec, names[i], stacks, deepest)
  return LayerMap.build(placements, depths)


def _span(s: _Stack, cons: Mapping[int, list[tuple[int, int]]],
          first_use: Mapping[int, int]) -> None:
  """Sets the stack's leaf mask, its units' time intervals and its start."""
  mask = 0
  for unit in s.units:
    for i in unit:
      mask |= 1 << i
  s.leaves = mask
  if not s.scan:
    starts = [min(first_use[i] for i in unit if i in first_use) for unit in s.units]
    intervals = []
    for k, unit in enumerate(s.units):
      limit = starts[k + 1] if k + 1 < len(starts) else float("inf")
      end = max(t for i in unit for t, _ in cons.get(i, ()) if t < limit)
      intervals.append((starts[k], end))
    s.intervals = intervals
  s.start = s.intervals[0][0]


def _pinned_stack(pinned: Mapping[int, Any], names: list[str], first_use: Mapping[int, int]
                  ) -> _Stack | None:
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
  return _Stack(name="", units=order, unit_names=[f"{names[u[0]]} (layer {k})"
                                                   for k, u in enumerate(order)],
                depth=len(order), intervals=[])


def _resolve(spec: Any, name: str, stacks: list[_Stack], deepest: _Stack | None = None
             ) -> Placement:
  if isinstance(spec, Placement):
    return spec
  if spec == "head":
    return Placement("head")
  if spec == "embedding":
    if deepest is None:
      raise ValueError(f"{_OWNER}: overrides place {name!r} in the embedding stage, but no "
                       f"stack of layers was found; use a Placement with its stack")
    return Placement("embedding", deepest.final_name)
  names = sorted({s.final_name for s in stacks})
  if not stacks:
    return Placement("layer", "", layer=int(spec))
  if len(names) != 1:
    raise ValueError(
        f"{_OWNER}: overrides give {name!r} the layer {spec}, which needs exactly one stack; "
        f"the stacks are {names}: use Placement('layer', stack, layer={spec})")
  return Placement("layer", names[0], layer=int(spec))


def _no_layers_message(names, fams, cons, free, data) -> str:
  counts = {i: sum(1 for _, m in cons.get(i, ()) if m & data) for i in free}
  reused = [i for i in free if counts[i] >= 2]
  if reused:
    # ALBERT: one layer in the tree, applied once per layer of the model.
    n = collections.Counter(counts[i] for i in reused).most_common(1)[0][0]
    comps = [_module_comps(names[i]) for i in reused]
    prefix = []
    for parts in zip(*comps):
      if len(set(parts)) != 1:
        break
      prefix.append(parts[0])
    where = "/".join(prefix) or names[reused[0]]
    shown = [names[i] for i in reused[:4]]
    return (
        f"{_OWNER}: shared weights: found no layers of the tree, but {len(reused)} leaves "
        f"under {where!r} ({shown}{' ...' if len(reused) > 4 else ''}) are each applied "
        f"{n} times, one application after another: one layer shared by {n} layers of the "
        f"model (ALBERT-style sharing, applications 1..{n}), so it has no single layer. "
        f"Place it with overrides, e.g. overrides={{{where!r}: 0}} (the shared layer as the "
        f"only layer: what runs before it gets the embedding ratio, what runs after it the "
        f"head's), or place every float leaf with overrides={{path or prefix: layer index | "
        f"'embedding' | 'head' | Placement}}.")
  lines = [f"{_OWNER}: found no layers (no numbered units X_N or X/N of the parameter tree "
           "that repeat with the same structure and run one after the other, and no "
           "parameter sliced by a scan)."]
  numbered = [(p, m) for p, m in fams.items()]
  if numbered:
    shown = "; ".join(f"{'/'.join(p)}: {sorted(m)[:4]}{' ...' if len(m) > 4 else ''}"
                      for p, m in numbered[:6])
    lines.append(f"Numbered families seen: {shown}.")
  lines.append("Place the parameters with overrides={path or prefix: layer index | "
               "'embedding' | 'head' | Placement} (all float leaves), or use the path rule.")
  return " ".join(lines)
