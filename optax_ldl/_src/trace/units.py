"""The layer units of the parameter tree: numbered families, and which of them are the layers.

A *family* is the set of numbered units of the tree that share one path pattern:
numbered siblings ``X_N`` (pattern element ``X_*``) or numbered children ``X/N``
(pattern element ``*``); nested numbering gives nested families
(``stages/*/blocks/*`` inside ``stages/*``). The layers are the units of the
families that repeat with the same structure, innermost composite units first,
unless the inner units are parts of the outer ones (a skip connection bypasses
them within one outer unit).
"""

from __future__ import annotations

import collections
import re
from typing import Any

from optax_ldl._src.trace.walk import mask_of

_SIBLING = re.compile(r"^(.*?[A-Za-z_])(\d+)$")

# pattern -> {member path: {"leaves": [leaf], "sig": structure, "composite": bool}}
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


def _numbered_members(names: list[str], leaves: list[int]
                      ) -> dict[tuple[str, ...], dict[str, list[tuple[int, str]]]]:
  """pattern -> {member path: [(leaf, path relative to the member)]}, one per numbered unit."""
  fams: dict[tuple[str, ...], dict[str, list[tuple[int, str]]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  for i in leaves:
    comps = names[i].split("/")
    pattern = []
    for pos, c in enumerate(module_comps(names[i])):
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
  return fams


def families(names: list[str], leaves: list[int], shapes: list[Any]) -> Families:
  """The numbered families of ``leaves``, each member with its leaves and structure.

  A member's structure (``sig``) is its leaves' relative paths with their shapes;
  it is ``composite`` when one of its leaves sits in a module below the member.
  """
  out = {}
  for pattern, members in _numbered_members(names, leaves).items():
    info = {}
    for member, items in members.items():
      sig = tuple(sorted((rel, shapes[i]) for i, rel in items))
      composite = any(rel and module_comps(rel) for _, rel in items)
      info[member] = {"leaves": [i for i, _ in items], "sig": sig, "composite": composite}
    out[pattern] = info
  return out


def repeats(members: dict[str, dict[str, Any]]) -> bool:
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


def parts_of_layers(outer: dict[str, Any], inner: dict[str, Any], depth: int,
                    skips: list[int]) -> bool:
  """Whether the inner units are parts of the outer ones rather than layers inside them.

  A layer is bypassed by its own skip connections only: a skip (``x + f(x)``) whose branch
  ``f`` holds two inner units of one outer member (a ResNet basic block: conv, conv, add),
  or an inner unit and leaves of the outer member outside every inner unit (a
  transformer block: norm, attention, add), makes the inner units parts of a layer.
  """
  units: dict[str, list[int]] = collections.defaultdict(list)
  for member, info in inner.items():
    units["/".join(member.split("/")[:depth])].append(mask_of(info["leaves"]))
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


def _repeats_within_one(inner: dict[str, Any], depth: int) -> bool:
  """Whether two inner members of one outer member (its first ``depth`` components) match."""
  by_outer: dict[str, list[Any]] = collections.defaultdict(list)
  for member, info in inner.items():
    by_outer["/".join(member.split("/")[:depth])].append(info["sig"])
  return any(len(s) != len(set(s)) for s in by_outer.values())


def select(fams: Families, skips: list[int]) -> list[tuple[str, ...]]:
  """The families whose members are the layers (repeated, innermost composite units)."""
  cands = [p for p, members in fams.items() if repeats(members)]
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
      if (_repeats_within_one(fams[inner], len(outer))
          and not parts_of_layers(fams[outer], fams[inner], len(outer), skips)):
        chosen.discard(outer)
      else:
        chosen.discard(inner)
  return sorted(chosen)


def pattern_name(pattern: tuple[str, ...]) -> str:
  """A family's stack name: its pattern without the number (``layers_*`` -> ``layers``)."""
  last = pattern[-1]
  base = list(pattern[:-1]) if last == "*" else list(pattern[:-1]) + [last[:-1].rstrip("_")]
  return "/".join(base)
