"""The whole-tree rule: :func:`path_layers` places every float leaf, in named phases.

Leaves are read (:func:`~optax_ldl._src.path_rule.leaves.read_leaves`), then the
stacks of layers are found: explicitly stacked leaves, Paddle names, nn.scan
bodies and numbered families, auto-detected stacked containers; every problem is
collected and refused at once (a leaf beside the layers that no role row names
is one); each stack gets its depth; last, every leaf its :class:`Placement` and
the evidence for it (the row and the key, :meth:`optax_ldl.LayerMap.why`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from optax_ldl._src.layer_map import LayerMap, Placement
from optax_ldl._src.path_rule.depths import n_layers_arg, set_depths
from optax_ldl._src.path_rule.families import number_families, paddle_layers, unused_numbered
from optax_ldl._src.path_rule.leaves import (
    FoundStack,
    Leaf,
    Problems,
    placed_paths,
    read_leaves,
    refuse,
)
from optax_ldl._src.path_rule.stacks import (
    auto_stacks,
    check_stacked_arg,
    explicit_stacks,
    scan_bodies,
)
from optax_ldl._src.path_rule.table import OUTSIDE, ROLES, RULES, rows


def path_layers(
    tree: Any,
    *,
    n_layers: Any = None,
    name_dict: Mapping[str, str] | None = None,
    stacked: Any = "auto",
    owner: str = "adamwdl",
) -> LayerMap:
  """The default path rule for a whole tree: every float leaf's :class:`Placement`.

  Reads path names only (``jax.tree_util.keystr(path, simple=True,
  separator='/')``, through ``name_dict`` when given) and shapes, never values or
  the decay, so eager, jitted and ``describe`` results agree. Leaves that are
  not floating point are skipped.

  * Numbered families (:data:`RULES`) are the layers; nested numbering
    (``stages/S/layers/B``) is flattened through the stages in order, and so
    is the same numbered key nested directly (``blocks/C/blocks/B``) when every
    chunk is numbered 0..n-1 and its blocks hold the same leaves; else refused.
  * Several families under different towers (``encoder``/``decoder``,
    ``text_model``/``vision_model``) are separate stacks, each with its depth;
    with one stack its name is ``""``.
  * Outside the layers only named parts are placed (positive evidence): an
    embedding-stage name (``wte``, ``patch_embed``, ``cls_token``, ``ln_pre``,
    ``stem``, ...) is the embedding stage of the stack it shares the longest
    path prefix with (the deepest stack on a tie); a post-stack name (``ln_f``,
    ``norm``, ``pooler``, ``lm_head``, ...; an output projection even inside
    the embedding module) is the head; a shared relative-position bias
    (``rel_pos_bias``) gets ratio 1. Any other leaf is refused by name.
  * ``stacked="auto"``: when the tree has no numbered layers, a container
    ``layers``/``scan``/``ScanBlock_0``/... whose leaves (plain dict keys
    only) all have the same axis-0 length holds that many layers on axis 0.
    So does such a container whose only numbered module is a lone
    ``<Name>_0`` (``blocks/EncoderBlock_0``: the body ``nn.scan`` names), even
    beside numbered layers; a lone ``<Name>_0`` under another container whose
    leaves all look stacked is refused (scanned body or 1-layer model?).

  >>> import jax.numpy as jnp
  >>> params = {'embed': jnp.zeros((5, 2)), 'head': jnp.zeros(2),
  ...           'layers_0': {'w': jnp.zeros(2)}, 'layers_1': {'w': jnp.zeros(2)}}
  >>> lm = path_layers(params)
  >>> [str(lm[p]) for p in ('embed', 'layers_0/w', 'layers_1/w', 'head')]
  ['embedding', '0', '1', 'head']

  Args:
    tree: parameters (arrays or ``jax.ShapeDtypeStruct`` leaves).
    n_layers: ``None`` (each stack's depth from the tree: max index + 1), an
      int (every stack; an error if the tree's stacks differ in depth), or
      ``{stack prefix: depth}``. A value that differs from the tree's count
      warns once (``UserWarning``); a layer index above it is an error. A traced
      value is ignored (depths come from the tree).
    name_dict: path name -> the name the rule reads, or ``None``.
    stacked: ``"auto"``, ``None``/``False``, ``{path prefix: axis}`` or a
      function ``path_name -> axis | None``.
    owner: the function named in messages.

  Returns:
    An :class:`optax_ldl.LayerMap` of the float leaves, with the evidence for
    each placement (``LayerMap.why(path)``). A tree with no layers
    at all gives every leaf ``Placement("head")`` (the caller refuses it unless
    the decay is 1).

  Raises:
    LayerRuleError: a tree the rule cannot place with confidence (the message
      lists the paths and the fixes).
    ValueError, TypeError: bad ``n_layers``, ``name_dict`` or ``stacked``.
  """
  check_stacked_arg(owner, stacked)
  n_arg = n_layers_arg(owner, n_layers)
  leaves = read_leaves(tree, name_dict, owner)
  problems: Problems = []
  notes: list[str] = []
  stacks: dict[str, FoundStack] = {}

  rest = explicit_stacks(owner, leaves, stacked, n_arg if isinstance(n_arg, int) else None,
                         stacks)
  paddle = paddle_layers(rest, stacks, notes)
  layered: list[Leaf] = []
  if not paddle:
    layered = scan_bodies([lf for lf in rest if lf.match.kind == "layer"], rest, stacked,
                          stacks, problems)
    number_families(layered, stacks, problems)
  if stacked == "auto" and not paddle and not layered and not problems:
    placed = placed_paths(stacks)  # stacked='auto' only without numbered layers.
    auto_stacks([lf for lf in rest if lf.path not in placed], stacks, problems)
  unused = unused_numbered(rest, stacks)
  if unused:
    problems.append(("numbered containers that the rule does not read as layers (not a known "
                     "layer family, and not inside a layer, an embedding or a head)", unused))
  unplaced = no_evidence(rest, stacks, problems) if stacks else []
  if unplaced:
    problems.append(("leaves outside the layers that no row of the rule table places (no "
                     "embedding-stage or post-stack name: which side of the layers they are "
                     "on is not in the names)", unplaced))
  if problems:
    raise refuse(owner, problems, OUTSIDE if unplaced else "")

  set_depths(owner, stacks, n_arg, notes)
  if notes:
    warnings.warn(f"{owner}: " + "; ".join(notes), UserWarning, stacklevel=2)
  return _layer_map(leaves, stacks)


def no_evidence(rest: list[Leaf], stacks: dict[str, FoundStack], problems: Problems) -> list[str]:
  """The leaves beside the layers that no stack holds and no role row places (not yet refused)."""
  placed = placed_paths(stacks)
  named = {p for _, paths in problems for p in paths}
  return [lf.path for lf in rest if lf.path not in placed and lf.path not in named
          and lf.match.kind not in ("embedding", "head", "shared")
          and RULES[lf.match.rule].kind != "paddle_other"]


def _layer_map(leaves: list[Leaf], stacks: dict[str, FoundStack]) -> LayerMap:
  """Every leaf's :class:`Placement` and the reason for it, once the stacks and depths are known.

  A stack's layers (index ``n_layers`` gets ratio 1, as Paddle), its stacked
  leaves (layer 0 along their axis), the embeddings of the stack they share the
  longest path prefix with, a shared part (ratio 1), and the head.
  """
  single = len(stacks) == 1
  label = {s: ("" if single else s) for s in stacks}
  placements: dict[str, Placement] = {}
  why: dict[str, str] = {}
  for st in stacks.values():
    for path, i in st.layers.items():
      if i >= st.depth:  # index == n_layers: ratio 1, as Paddle.
        placements[path] = Placement("ratio", label[st.name], ratio=1.0)
        why[path] = f"{st.why[path]}; index {i} = n_layers: ratio 1, as Paddle"
      else:
        placements[path] = Placement("layer", label[st.name], layer=i)
        why[path] = st.why[path]
    for path, axis in st.stacked.items():
      placements[path] = Placement("layer", label[st.name], layer=0, axis=axis)
      why[path] = st.why[path]
  for lf in leaves:
    if lf.path in placements:
      continue
    if not stacks:
      placements[lf.path] = Placement("head")
      why[lf.path] = "no layers found in the tree: ratio 1 (a decay other than 1 is refused)"
      continue
    kind = RULES[lf.match.rule].kind
    if kind.startswith("paddle"):
      placements[lf.path] = Placement("embedding" if kind == "paddle_embedding" else "head")
      why[lf.path] = ("Paddle rule: the name contains 'embedding'" if kind == "paddle_embedding"
                      else "Paddle rule: any other name, ratio 1")
      continue
    said = f"{ROLES[lf.match.kind]}: '{lf.match.key}'"
    if lf.match.kind == "embedding":
      stack = _embedding_stack(lf, stacks)
      placements[lf.path] = Placement("embedding", label[stack])
      why[lf.path] = said + ("" if single else f", stack '{stack}' (longest common path)")
    elif lf.match.kind == "shared":
      placements[lf.path] = Placement("ratio", ratio=1.0)
      why[lf.path] = said + " (used by every layer: ratio 1, as BEiT)"
    else:
      placements[lf.path] = Placement("head")
      why[lf.path] = said + _inside_embedding(lf)
  return LayerMap.build(placements, {label[s]: st.depth for s, st in stacks.items()}, why)


def _inside_embedding(lf: Leaf) -> str:
  """For an output projection kept inside the embedding module: a note naming that module."""
  tokens = lf.rule_name.split("/")
  before = tokens[:tokens.index(lf.match.key)] if lf.match.key in tokens else []
  module = next((t for t in before for _, r in rows("embedding") if r.regex.search(t)), None)
  return "" if module is None else f" (an output projection, although inside '{module}')"


def _embedding_stack(lf: Leaf, stacks: dict[str, FoundStack]) -> str:
  """The stack sharing the longest path prefix with ``lf``.

  On a tie, the one stack whose tower word (``encoder``, ``decoder``, ``text``,
  ...) the leaf's own keys name (keras-hub BART's ``encoder_position_embedding``
  beside ``transformer_encoder_layer_N`` at the root); else the deepest (a table
  shared by the stacks, as a tied embedding), then the first by name.
  """
  tokens = lf.rule_name.split("/")
  scored = [(_common(tokens, st.anchor), st.depth, s) for s, st in stacks.items()]
  best = max(c for c, _, _ in scored)
  tied = [(d, s) for c, d, s in scored if c == best]
  words = _tower_words(tokens[best:])
  named = [(d, s) for d, s in tied if words & _tower_words(s.split("/")[best:])]
  if len(named) == 1:
    return named[0][1]
  deepest = max(d for d, _ in tied)
  return min(s for d, s in tied if d == deepest)


def _tower_words(tokens: list[str]) -> set[str]:
  """The tower words (``encoder``, ``decoder``, ``text``, ...) that ``tokens`` contain."""
  tower = rows("tower")[0][1].regex
  return {w.lower() for t in tokens for w in tower.findall(t)}


def _common(a: list[str], b: list[str]) -> int:
  n = 0
  for x, y in zip(a, b):
    if x != y:
      break
    n += 1
  return n
