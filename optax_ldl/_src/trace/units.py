"""The layer units of the parameter tree: numbered families, and which of them are the layers.

A *family* is the set of numbered units of the tree that share one path pattern:
numbered siblings ``X_N`` (pattern element ``X_*``), numbered children ``X/N``
(pattern element ``*``) or a number inside one flat key (``stack0_block1_conv``:
units ``stack0`` and ``stack0_block1``, patterns ``stack*`` and ``stack*_block*``);
nested numbering gives nested families (``stages/*/blocks/*`` inside ``stages/*``).
A number that is the same in every unit (``t5_`` in ``t5_layer_norm_3``) or a counter
that runs on across the units of the enclosing family (``layer_1/norm_2``,
``layer_2/norm_4``: auto-numbered names) is a name, not a family. The layers are the
units of the families that repeat with the same structure, innermost composite units
first, unless the inner units are parts of the outer ones (a skip connection bypasses
them within one outer unit).
"""

from __future__ import annotations

import collections
import re
from typing import Any

from optax_ldl._src.trace.walk import mask_of

# A number that ends a unit's name: after a letter or separator, before a separator or the end.
_NUMBER = re.compile(r"(?<=[A-Za-z_.\-])\d+(?=$|[_.\-])")

# pattern -> {member path: {"leaves": [leaf], "sig", "loose", "composite", "chain"}}
Families = dict[tuple[str, ...], dict[str, dict[str, Any]]]


def module_comps(name: str) -> list[str]:
  """The path components of the module that holds leaf ``name``."""
  comps = name.split("/")
  if comps[-1].isdigit():
    return comps  # a list of arrays: each array is its own unit
  if comps[-1] == "value" and len(comps) >= 2:
    return comps[:-2]  # an NNX Variable: <module>/<name>/value
  return comps[:-1]


def common_prefix(paths: list[list[str]]) -> list[str]:
  """The longest common prefix of component lists."""
  common = []
  for parts in zip(*paths):
    if len(set(parts)) != 1:
      break
    common.append(parts[0])
  return common


def unnumbered(path: str) -> str:
  """``path`` without its unit numbers (``h_3/ln_1/w`` -> ``h/ln/w``; ``layer/0`` -> ``layer/#``).

  Two units of one family that differ only by a counter in their names (auto-numbered
  modules: ``norm_2`` in one layer, ``norm_4`` in the next) have the same structure.
  """
  comps = []
  for c in path.split("/"):
    if c.isdigit():
      comps.append("#")
      continue
    keep, last = [], 0
    for m in _NUMBER.finditer(c):
      a = m.start() - 1 if c[m.start() - 1] in "_.-" else m.start()
      keep.append(c[last:a])
      last = m.end()
    comps.append("".join(keep) + c[last:])
  return "/".join(comps)


def _cuts(comp: str) -> list[tuple[int, int]]:
  """Where ``comp`` holds a unit number: the whole of a list index, else every ``_NUMBER``."""
  if comp.isdigit():
    return [(0, len(comp))]
  return [m.span() for m in _NUMBER.finditer(comp)]


def _numbered_members(names: list[str], leaves: list[int]
                      ) -> tuple[dict[tuple[str, ...], dict[str, list[tuple[int, str]]]],
                                 dict[str, tuple[int, tuple[str, ...]]]]:
  """pattern -> {member: [(leaf, path relative to it)]}, and member -> (number, enclosing units)."""
  fams: dict[tuple[str, ...], dict[str, list[tuple[int, str]]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  numbers: dict[str, tuple[int, tuple[str, ...]]] = {}
  for i in leaves:
    name = names[i]
    pattern: list[str] = []
    chain: tuple[str, ...] = ()
    start = 0
    for c in module_comps(name):
      starred, last = "", 0
      for a, b in _cuts(c):
        starred += c[last:a] + "*"
        last = b
        member = name[:start + b]
        fams[(*pattern, starred)][member].append((i, name[start + b:].lstrip("/")))
        numbers[member] = (int(c[a:b]), chain)
        chain = (*chain, member)
      pattern.append(starred + c[last:])
      start += len(c) + 1
  return fams, numbers


def _is_name(members: dict[str, Any], numbers: dict[str, tuple[int, tuple[str, ...]]]) -> bool:
  """Whether the family's number is the same in every unit: part of a name (``t5_``), no count."""
  return len({numbers[m][0] for m in members}) < 2


def families(names: list[str], leaves: list[int], shapes: list[Any]) -> Families:
  """The numbered families of ``leaves``, each member with its leaves and structure.

  A member's structure (``sig``) is its leaves' relative paths without unit numbers,
  with their shapes (``loose``: with their ranks only); it is ``composite`` when one of
  its leaves sits in a module below the member; ``chain`` lists the units enclosing it.
  """
  out = {}
  found, numbers = _numbered_members(names, leaves)
  for pattern, members in found.items():
    if _is_name(members, numbers):
      continue
    info = {}
    for member, items in members.items():
      rels = [(unnumbered(rel), shapes[i]) for i, rel in items]
      info[member] = {
          "leaves": [i for i, _ in items],
          "sig": tuple(sorted(rels)),
          "loose": tuple(sorted((rel, len(shape[0]), shape[1]) for rel, shape in rels)),
          "composite": any(rel and module_comps(rel) for _, rel in items),
          "chain": numbers[member][1],
      }
    out[pattern] = info
  return out


def _repeat(sigs: list[Any]) -> bool:
  """Two equal structures, or one that is another plus fewer leaves than it has."""
  if len(sigs) < 2:
    return False
  if len(set(sigs)) < len(sigs):
    return True
  counts = [collections.Counter(s) for s in sigs]
  return any(a < b and (b - a).total() < a.total() for a in counts for b in counts)


def repeats(members: dict[str, dict[str, Any]]) -> bool:
  """Whether two members have the same structure, up to a few extra leaves in one.

  The first layer often carries a leaf the others lack (T5's relative attention bias in
  block 0): with two layers no two members are identical, but one is the other plus it.
  Composite members (blocks of modules) may differ in their widths (a ResNet's stages):
  the same modules of the same ranks repeat.
  """
  if _repeat([m["sig"] for m in members.values()]):
    return True
  return (any(m.get("composite") for m in members.values())
          and _repeat([m["loose"] for m in members.values()]))


def _outer(member: dict[str, Any], outer: dict[str, Any]) -> str | None:
  """The member of ``outer`` that encloses ``member`` (a member of a nested family), else None."""
  return next((a for a in member["chain"] if a in outer), None)


def parts_of_layers(outer: dict[str, Any], inner: dict[str, Any], skips: list[int]) -> bool:
  """Whether the inner units are parts of the outer ones rather than layers inside them.

  A layer is bypassed by its own skip connections only: a skip (``x + f(x)``) whose branch
  ``f`` holds two inner units of one outer member (a ResNet basic block: conv, conv, add),
  or an inner unit and leaves of the outer member outside every inner unit (a
  transformer block: norm, attention, add), makes the inner units parts of a layer.
  """
  units: dict[str | None, list[int]] = collections.defaultdict(list)
  for info in inner.values():
    units[_outer(info, outer)].append(mask_of(info["leaves"]))
  for member, info in outer.items():
    whole = mask_of(info["leaves"])
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


def _repeats_within_one(inner: dict[str, Any], outer: dict[str, Any]) -> bool:
  """Whether two inner members of one outer member match."""
  by_outer: dict[str | None, dict[str, Any]] = collections.defaultdict(dict)
  for member, info in inner.items():
    by_outer[_outer(info, outer)][member] = info
  return any(repeats(group) for group in by_outer.values())


def _nested(inner: dict[str, Any], outer: dict[str, Any]) -> bool:
  """Whether every member of ``inner`` lies inside a member of ``outer``."""
  return all(_outer(info, outer) is not None for info in inner.values())


def select(fams: Families, skips: list[int]) -> list[tuple[str, ...]]:
  """The families whose members are the layers (repeated, innermost composite units)."""
  cands = [p for p, members in fams.items() if repeats(members)]
  composite = [p for p in cands if any(m["composite"] for m in fams[p].values())]
  if composite:
    cands = composite
  chosen = set(cands)
  by_depth = sorted(cands, key=lambda p: len("/".join(p)))
  for outer in by_depth:
    for inner in by_depth:
      if outer not in chosen or inner not in chosen or inner == outer:
        continue
      if not _nested(fams[inner], fams[outer]):
        continue
      # Prefer the inner family when it repeats within one member of the outer one
      # (identical stages of several identical blocks) and no skip connection runs
      # across its units; else the inner units are parts of each layer (T5's layer/0,
      # layer/1 inside block/N; the two attentions of a decoder block; the convs of a
      # ResNet basic block).
      if (_repeats_within_one(fams[inner], fams[outer])
          and not parts_of_layers(fams[outer], fams[inner], skips)):
        chosen.discard(outer)
      else:
        chosen.discard(inner)
  return sorted(chosen)


def pattern_name(pattern: tuple[str, ...]) -> str:
  """A family's stack name: its pattern without the last number (``layers_*`` -> ``layers``)."""
  last = pattern[-1].removesuffix("*").rstrip("_.-")
  return "/".join([*pattern[:-1], last] if last else pattern[:-1])


def family_label(pattern: tuple[str, ...]) -> str:
  """A family as the evidence shows it: ``layers_N``, ``encoder/layer/N``."""
  return "/".join(pattern).replace("*", "N")
