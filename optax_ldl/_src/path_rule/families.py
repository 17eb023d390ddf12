"""Numbered layer families: which numbered leaves are the layers, and their flat indices.

Phases of ``path_layers`` for the numbered layers: Paddle's ``encoder.layers.N``
(:func:`paddle_layers`), the families of the rule table
(:func:`number_families`: several only under distinct towers, nested stages
numbered through, index 0 required) and the numbered containers left unused
(:func:`unused_numbered`).
"""

from __future__ import annotations

from optax_ldl._src.path_rule.leaves import (
    FoundStack,
    Leaf,
    Problems,
    one_per_member,
    placed_paths,
    stack_named,
)
from optax_ldl._src.path_rule.names import classify, is_digits, leaf_pos, tower_key
from optax_ldl._src.path_rule.table import RULES, rows


def paddle_layers(rest: list[Leaf], stacks: dict[str, FoundStack], notes: list[str]) -> bool:
  """Paddle's ``encoder.layers.N`` names as the stack ``encoder.layers``; whether there are any.

  Other numbered Paddle names keep ratio 1, as in PaddleNLP, with a note.
  """
  paddle = [lf for lf in rest if RULES[lf.match.rule].kind == "paddle_layer"]
  if not paddle:
    return False
  st = stack_named(stacks, "encoder.layers")
  for lf in paddle:
    assert lf.match.layer is not None
    st.layers[lf.path] = lf.match.layer
  others = [lf.path for lf in rest if RULES[lf.match.rule].kind == "paddle_other"
            and classify(lf.rule_name.replace(".", "/")).kind == "layer"]
  if others:
    notes.append(
        "these Paddle names have numbered layers that PaddleNLP's rule does not read (it "
        f"reads only 'encoder.layers.N'), so they get ratio 1 as in PaddleNLP: "
        f"{sorted(others)[:6]}; pass name_dict or set_param_lr_fun to decay them")
  return True


def number_families(layered: list[Leaf], stacks: dict[str, FoundStack],
                    problems: Problems) -> None:
  """Each numbered family as a stack of its members' flat indices; refuses what is unclear."""
  families: dict[str, list[Leaf]] = {}
  for lf in layered:
    families.setdefault(lf.match.family, []).append(lf)
  # Several families: accepted as stacks only under distinct towers.
  if len(families) > 1:
    towers = {f: tower_key(f) for f in families}
    keys = [t for t in towers.values() if t is not None]
    if None in towers.values() or len(set(keys)) != len(keys):
      bad = [lf.path for f, lfs in families.items() for lf in lfs
             if towers[f] is None or keys.count(towers[f] or "") > 1]
      names = ", ".join(f"{f!r} ({len({lf.match.indices[0] for lf in lfs})} members)"
                        for f, lfs in sorted(families.items()))
      problems.append((f"several candidate layer families ({names}); which are the "
                       "model's layers is not clear from the names (a Sequential head "
                       "beside the layers?)", one_per_member(bad, layered)))
      return
  for family, lfs in families.items():
    if any(len(lf.match.indices) == 2 for lf in lfs):
      index = _nested_indices(family, lfs, problems)
      if index is None:
        continue
    else:
      members = {lf.match.indices[0] for lf in lfs}
      if 0 not in members:
        problems.append((f"the family {family!r} has no layer 0 (numbered from "
                         f"{min(members)}: 1-based?)", [lf.path for lf in lfs]))
        continue
      index = {lf.path: lf.match.indices[0] for lf in lfs}
    stack_named(stacks, family).layers.update(index)


def _nested_indices(family: str, lfs: list[Leaf], problems: Problems) -> dict[str, int] | None:
  """Stage ``S``, block ``B`` numbered straight through the stages, or ``None`` (a problem)."""
  nested = [lf for lf in lfs if len(lf.match.indices) == 2]
  flat = [lf.path for lf in lfs if len(lf.match.indices) == 1]
  if flat:
    problems.append((f"leaves of the stages of {family!r} outside their blocks (a "
                     "downsample or merge between blocks: before or after them is not "
                     "in the names)", flat))
    return None
  inner = {lf.match.inner for lf in nested}
  if len(inner) > 1:
    problems.append((f"the stages of {family!r} hold several block families "
                     f"{sorted(inner)}", [lf.path for lf in nested]))
    return None
  counts: dict[int, int] = {}
  for lf in nested:
    s, b = lf.match.indices
    counts[s] = max(counts.get(s, 0), b + 1)
  starts = {s: {lf.match.indices[1] for lf in nested if lf.match.indices[0] == s}
            for s in counts}
  one_based = [lf.path for lf in nested if 0 not in starts[lf.match.indices[0]]]
  if 0 not in counts or one_based:
    problems.append((f"numbering of {family!r} that does not start at 0 (1-based?)",
                     one_based or [lf.path for lf in nested]))
    return None
  offset, acc = {}, 0
  for s in sorted(counts):
    offset[s] = acc
    acc += counts[s]
  index: dict[str, int] = {}
  for lf in nested:
    s, b = lf.match.indices
    index[lf.path] = offset[s] + b
  return index


def unused_numbered(rest: list[Leaf], stacks: dict[str, FoundStack]) -> list[str]:
  """The paths under an ``X/N`` container that no stack holds and no row places."""
  placed = placed_paths(stacks)
  return [lf.path for lf in rest if lf.path not in placed and _under_unused_number(lf)]


def _under_unused_number(lf: Leaf) -> bool:
  """A leaf outside the layers under an ``X/N`` container that no row places."""
  tokens = lf.rule_name.split("/")
  if "." in lf.rule_name and "/" not in lf.rule_name:
    return False  # a Paddle name
  leaf = leaf_pos(tokens)
  for i, token in enumerate(tokens):
    for kind in ("head", "embedding"):
      for _, row in rows(kind):
        if (row.where != "leaf" or i == leaf) and row.regex.search(token):
          return False
    if is_digits(token):
      return True
  return False
