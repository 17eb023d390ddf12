"""Numbered layer families: which numbered leaves are the layers, and their flat indices.

Phases of ``path_layers`` for the numbered layers: Paddle's ``encoder.layers.N``
(:func:`paddle_layers`), the families of the rule table
(:func:`number_families`: several only under distinct towers, index 0
required, nested stages or chunks numbered through when every chunk is numbered
0..n-1 and, for the same key nested directly, its blocks hold the same leaves)
and the numbered containers left unused (:func:`unused_numbered`). Each leaf's
reason (the row and the key) is kept for the evidence.
"""

from __future__ import annotations

import re

from optax_ldl._src.path_rule.leaves import (
    FoundStack,
    Leaf,
    Problems,
    one_per_member,
    placed_paths,
    stack_named,
)
from optax_ldl._src.path_rule.names import classify, is_digits, role_hit, tower_key
from optax_ldl._src.path_rule.table import RULES

_AUTO_NUMBER = re.compile(r"_[0-9]+$")  # keras' per-model counter on a sublayer's name


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
    st.why[lf.path] = f"Paddle rule: '{lf.match.key}'"
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
    if all(len(lf.match.indices) == 1 for lf in lfs):
      members = {lf.match.indices[0] for lf in lfs}
      if 0 not in members:
        problems.append((f"the family {family!r} has no layer 0 (numbered from "
                         f"{min(members)}: 1-based?)", [lf.path for lf in lfs]))
        continue
      unproven = _unproven(family, lfs)
      if unproven:
        problems.append(unproven)
        continue
      index = {lf.path: (lf.match.indices[0], _row_said(lf)) for lf in lfs}
    else:
      index = _nested_indices(family, lfs, problems)
      if index is None:
        continue
    st = stack_named(stacks, family)
    for path, (i, why) in index.items():
      st.layers[path] = i
      st.why[path] = why


def _row_said(lf: Leaf) -> str:
  said = f"row '{RULES[lf.match.rule].name}' matched '{lf.match.key}'"
  return said + (", members alike" if RULES[lf.match.rule].proof else "")


def _unproven(family: str, lfs: list[Leaf]) -> tuple[str, list[str]] | None:
  """For a row that needs proof (``Rule.proof``): why the family is not proven, or ``None``.

  Proof: at least two members, numbered 0..n-1, each holding the same leaves
  (names below the member and shapes; keras' auto-number suffixes ``_N`` aside,
  since keras numbers sublayers across the whole model).
  """
  row = RULES[lfs[0].match.rule]
  if not row.proof:
    return None
  held: dict[int, set[tuple[str, tuple[int, ...]]]] = {}
  for lf in lfs:
    tokens = lf.rule_name.split("/")
    end = len(lf.match.family.split("/"))
    rest = "/".join(_AUTO_NUMBER.sub("", t) for t in tokens[end:])
    held.setdefault(lf.match.indices[0], set()).add((rest, lf.shape))
  members = sorted(held)
  if len(members) >= 2 and members == list(range(len(members))) and all(
      held[m] == held[0] for m in members):
    return None
  return (f"the family {family!r} (row '{row.name}': a name that is evidence only with the "
          f"structure) is not proven to be the layers: it needs two or more members numbered "
          f"0..n-1 holding the same leaves (names and shapes); members {members}",
          one_per_member([lf.path for lf in lfs], lfs))


def _nested_indices(family: str, lfs: list[Leaf],
                    problems: Problems) -> dict[str, tuple[int, str]] | None:
  """Chunk (stage) ``C``, block ``B`` numbered straight through, or ``None`` (a problem).

  A stage row of the table (``stages/S/layers/B``) is evidence enough; the same
  numbered key nested directly (``blocks/C/blocks/B``) is flattened only when the
  structure proves it: within each chunk, every block holds the same leaves
  (names and shapes). Either way every chunk's blocks are numbered 0..n-1.
  """
  same_kind = RULES[lfs[0].match.rule].kind == "layer"
  parts = "chunks" if same_kind else "stages"
  nested = [lf for lf in lfs if len(lf.match.indices) >= 2]
  flat = [lf.path for lf in lfs if len(lf.match.indices) == 1]
  if flat:
    problems.append((f"leaves of the {parts} of {family!r} outside their blocks (a downsample "
                     "or merge between blocks: before or after them is not in the names)", flat))
    return None
  deep = [lf.path for lf in nested if len(lf.match.indices) > 2]
  inner = {lf.match.inner for lf in nested}
  if deep or len(inner) > 1:
    problems.append((f"the {parts} of {family!r} hold several block families {sorted(inner)} "
                     "or blocks numbered more than two levels deep",
                     deep or [lf.path for lf in nested]))
    return None
  blocks: dict[int, set[int]] = {}
  for lf in nested:
    blocks.setdefault(lf.match.indices[0], set()).add(lf.match.indices[1])
  gaps = [lf.path for lf in nested
          if blocks[lf.match.indices[0]] != set(range(len(blocks[lf.match.indices[0]])))]
  if set(blocks) != set(range(len(blocks))) or gaps:
    problems.append((f"numbering of {family!r} that is not numbered 0..n-1 in every chunk "
                     "(1-based, or with gaps?): the flat order is not proven",
                     gaps or [lf.path for lf in nested]))
    return None
  if same_kind:
    unlike = _unlike_blocks(nested)
    if unlike:
      problems.append((f"blocks of {family!r} that do not all hold the same leaves (names "
                       "and shapes) within a chunk: chunks of repeated blocks, or one layer "
                       "made of numbered parts? (not proven)", unlike))
      return None
  sizes = [len(blocks[c]) for c in range(len(blocks))]
  offsets = [sum(sizes[:c]) for c in range(len(sizes))]
  index: dict[str, tuple[int, str]] = {}
  for lf in nested:
    c, b = lf.match.indices
    if same_kind:
      how = f"{c}*{sizes[0]}+{b}" if len(set(sizes)) == 1 else f"{offsets[c]}+{b}"
      why = f"nested '{lf.match.key}' flattened: {how}"
    else:
      why = f"{_row_said(lf)}, flattened: {offsets[c]}+{b}"
    index[lf.path] = (offsets[c] + b, why)
  return index


def _unlike_blocks(nested: list[Leaf]) -> list[str]:
  """The paths of the chunks whose blocks differ in the leaves (names, shapes) they hold."""
  content: dict[tuple[int, ...], set[tuple[str, tuple[int, ...]]]] = {}
  for lf in nested:
    tokens = lf.rule_name.split("/")
    end = len(lf.match.family.split("/")) - 1 + len(lf.match.key.split("/"))
    content.setdefault(lf.match.indices, set()).add(("/".join(tokens[end:]), lf.shape))
  bad = {c for (c, _), held in content.items() if held != content[(c, 0)]}
  return [lf.path for lf in nested if lf.match.indices[0] in bad]


def unused_numbered(rest: list[Leaf], stacks: dict[str, FoundStack]) -> list[str]:
  """The paths under an ``X/N`` container that no stack holds and no row places."""
  placed = placed_paths(stacks)
  return [lf.path for lf in rest if lf.path not in placed and _under_unused_number(lf)]


def _under_unused_number(lf: Leaf) -> bool:
  """A leaf outside the layers under an ``X/N`` container that no role row places first."""
  if "." in lf.rule_name and "/" not in lf.rule_name:
    return False  # a Paddle name
  tokens = lf.rule_name.split("/")
  role = role_hit(tokens)
  first = next((i for i, t in enumerate(tokens) if is_digits(t)), None)
  return first is not None and (role is None or first < role[0])
