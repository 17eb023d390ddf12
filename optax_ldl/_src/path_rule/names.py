"""One parameter name read with the rule table: a layer, the embeddings, a head, or no evidence.

Also where the name says stacked (scanned) layers are (:func:`stack_container`),
which tower a layer family is under (:func:`tower_key`) and the name the rule
reads through ``name_dict`` (:func:`static_name`).

Paddle static names (dots, no ``/``: ``encoder.layers.3.linear1.weight``) get
exactly PaddleNLP's ``layerwise_lr_decay``: ``encoder.layers.N`` is layer N, a
name containing ``embedding`` is the embedding, anything else ratio 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from optax_ldl._src.path_rule.table import RULES, LayerMatch, Rule, rows

# The role vocabulary, in table order: the only names placed outside the layers.
_ROLE_ROWS = [(i, r) for i, r in enumerate(RULES)
              if r.kind in ("head", "shared", "embedding") and r.where != "any"]
_ANYWHERE = [(i, r) for i, r in enumerate(RULES) if r.where == "any"]


def _paddle_index(name: str) -> int:
  """PaddleNLP's reading: the key after ``encoder.layers.`` (an error if not a number)."""
  idx = name.find("encoder.layers.")
  parts = name[idx:].split(".") if idx >= 0 else []
  if len(parts) < 3 or not parts[2].isdigit():
    raise ValueError(
        f"parameter name {name!r} contains 'encoder.layers' but not "
        "'encoder.layers.<N>.'; PaddleNLP's layerwise_lr_decay cannot read "
        "a layer index from it. Map it to a name of the form "
        "'encoder.layers.<N>.<...>' with name_dict, or pass set_param_lr_fun."
    )
  return int(parts[2])


def is_digits(token: str) -> bool:
  """``token`` is a numeric key (``3``, a list index or ``nnx.List`` member)."""
  return bool(token) and token.isascii() and token.isdigit()


class _Hit(NamedTuple):
  pos: int          # index of the container key (``X`` of ``X/N``, or ``X_N``)
  member: int       # index of the key that ends the member (``N`` or ``X_N``)
  number: int
  stem_path: str    # the family's path: parent keys + stem
  stem: str
  rule: int


def _layer_hit(tokens: list[str], i: int, kinds: tuple[str, ...]) -> _Hit | None:
  token = tokens[i]
  nxt = tokens[i + 1] if i + 1 < len(tokens) else None
  for kind in kinds:
    for r_i, row in rows(kind):
      if row.where == "token":
        m = row.regex.match(token)
        if m:
          stem = m.group("stem")
          return _Hit(i, i, int(m.group("n")), "/".join(tokens[:i] + [stem]), stem, r_i)
      elif row.where == "container" and nxt is not None and is_digits(nxt):
        m = row.regex.match(token)
        if m:
          return _Hit(i, i + 1, int(nxt), "/".join(tokens[:i + 1]), token, r_i)
  return None


def leaf_pos(tokens: list[str]) -> int:
  """The parameter's own key: the last, or the one before an NNX ``value``."""
  if len(tokens) > 1 and tokens[-1] == "value":
    return len(tokens) - 2
  return len(tokens) - 1


def classify(name: str) -> LayerMatch:
  """Places one parameter name: a layer, the embeddings, a head, or other (no evidence).

  Names without ``/`` that contain a ``.`` are Paddle static names and get
  exactly PaddleNLP's rule. Other names are tree paths, read key by key with
  the rows of :data:`RULES` (see :func:`rule_table_markdown`): a numbered layer
  anywhere in the path wins (as in Paddle); else an output projection anywhere
  in the path (``lm_head``, ``reverse_embeddings``: the head); else the first key
  from the root that a head, shared or embedding row matches; else ``"other"``
  (no evidence: :func:`path_layers` refuses such a leaf beside layers).

  >>> classify('encoder.layers.3.linear1.weight').layer
  3
  >>> classify('params/transformer/h/11/attn/c_attn/kernel').layer
  11
  >>> classify('resnet/encoder/stages/1/layers/0/convolution/kernel').indices
  (1, 0)
  >>> classify('params/transformer/wte/embedding').kind
  'embedding'
  >>> classify('params/lm_head/kernel').kind
  'head'

  Args:
    name: the name the rule reads (the path name, or its ``name_dict`` entry).

  Returns:
    A :class:`LayerMatch`.

  Raises:
    ValueError: a Paddle name with ``encoder.layers`` not followed by
      ``.N.``, as Paddle's own rule fails on it.
  """
  for r_i, row in rows("paddle_layer") + rows("paddle_embedding") + rows("paddle_other"):
    if row.regex.search(name):
      if row.kind == "paddle_layer":
        n = _paddle_index(name)
        return LayerMatch("layer", n, (n,), "encoder.layers", rule=r_i,
                          key=f"encoder.layers.{n}")
      return LayerMatch("embedding" if row.kind == "paddle_embedding" else "other", rule=r_i)
  return _path_match(name.split("/"))


def stack_container(name: str) -> str:
  """The container of ``name`` that may hold stacked (scanned) layers, or ``""``.

  The one reading of stacked layers from a name: :func:`classify` gives it as
  ``LayerMatch.stack`` (``path_layers`` groups stacked leaves by it) and
  ``leaf_spec`` (a custom ``set_param_lr_fun``) reads it too, so both see the
  same stacks. It is the first key from the root that a ``"stack"`` row of
  :data:`RULES` matches and that no numeric key follows, above the parameter's
  own key, in a name with no numbered layer (``layers/3/...`` is layer 3).

  >>> stack_container('params/decoder/layers/mlp/kernel')
  'params/decoder/layers'
  >>> stack_container('params/layers_3/mlp/kernel')
  ''
  """
  return _path_match(name.split("/")).stack


def _path_match(tokens: list[str]) -> LayerMatch:
  """:func:`classify` of a tree path (keys ``tokens``)."""
  scan_rows = [r for _, r in rows("stack") if r.regex.pattern.startswith("^(?P<stem>Scan")]
  body = next((i for i, t in enumerate(tokens) if any(r.regex.match(t) for r in scan_rows)),
              len(tokens))  # numbered keys inside a scanned body are not layers.
  for i in range(body):
    hit = _layer_hit(tokens, i, ("stage", "layer"))
    if hit is None:
      continue
    row = RULES[hit.rule]
    if row.kind == "stage":
      inner = _inner_hit(tokens, hit, row)
      if inner is not None:
        rel = "/".join(tokens[hit.member + 1:inner.pos] + [inner.stem])
        return LayerMatch("layer", None, (hit.number, inner.number), hit.stem_path, rel,
                          rule=hit.rule, key="/".join(tokens[hit.pos:inner.member + 1]))
      if row.inner is not None:  # `layers/S` without blocks: an ordinary layer row.
        plain = _layer_hit(tokens, i, ("layer",))
        if plain is not None:
          hit = plain
    return _same_kind_nesting(tokens, hit, body)
  stack = ""
  leaf = leaf_pos(tokens)
  for i in range(leaf):
    nxt = tokens[i + 1]
    if not is_digits(nxt) and any(r.regex.match(tokens[i]) for _, r in rows("stack")):
      stack = "/".join(tokens[:i + 1])
      break
  role = role_hit(tokens)
  if role is None:
    return LayerMatch("other", stack=stack, rule=rows("other")[0][0])
  pos, r_i = role
  return LayerMatch(RULES[r_i].kind, stack=stack, rule=r_i, key=tokens[pos])


def _same_kind_nesting(tokens: list[str], hit: _Hit, body: int) -> LayerMatch:
  """Layer ``hit``, or chunk C, block B when the same numbered key follows it directly.

  ``blocks/C/blocks/B``, ``layers_C/layers_B``: the indices ``(C, B[, ...])``,
  which ``number_families`` flattens only when the structure proves it. A
  numbered key under a named part of the layer (``layers_0/mlp/layers_1``, an
  ``nn.Sequential`` inside a block) is a part of layer ``hit``.
  """
  found = [hit]
  while found[-1].member + 1 < body:
    inner = _layer_hit(tokens, found[-1].member + 1, ("layer",))
    if inner is None or inner.stem != hit.stem:
      break
    found.append(inner)
  key = "/".join(tokens[hit.pos:found[-1].member + 1])
  if len(found) == 1:
    return LayerMatch("layer", hit.number, (hit.number,), hit.stem_path, rule=hit.rule, key=key)
  return LayerMatch("layer", None, tuple(h.number for h in found), hit.stem_path, hit.stem,
                    rule=hit.rule, key=key)


def role_hit(tokens: list[str]) -> tuple[int, int] | None:
  """``(key index, row index)`` of the role row that places a path outside the layers, or None.

  An output projection (``where="any"``) anywhere in the path wins; else the
  first key from the root that a ``head``, ``shared`` or ``embedding`` row
  matches (``"leaf"`` rows only at the parameter's own key).
  """
  for r_i, row in _ANYWHERE:
    for i, token in enumerate(tokens):
      if row.regex.search(token):
        return i, r_i
  leaf = leaf_pos(tokens)
  for i, token in enumerate(tokens):
    for r_i, row in _ROLE_ROWS:
      if row.where == "leaf" and i != leaf:
        continue
      if row.regex.search(token):
        return i, r_i
  return None


def _inner_hit(tokens: list[str], outer: _Hit, row: Rule) -> _Hit | None:
  for j in range(outer.member + 1, len(tokens)):
    hit = _layer_hit(tokens, j, ("layer",))
    if hit is not None:
      inner_re = row.inner_regex
      if inner_re is None or inner_re.match(hit.stem):
        return hit
      return None
  return None


def tower_key(family: str) -> str | None:
  """The path up to the last key of ``family`` that names a tower (``encoder``, ...), or None."""
  tokens = family.split("/")
  tower = rows("tower")[0][1].regex
  last = None
  for i, t in enumerate(tokens):
    if tower.search(t):
      last = i
  return None if last is None else "/".join(tokens[:last + 1])


def static_name(owner: str, name_dict: Mapping[str, str] | None, name: str) -> str:
  """``name_dict[name]``, or a ``ValueError`` naming ``owner`` that says what is missing."""
  if name_dict is None:
    return name
  try:
    return name_dict[name]
  except KeyError:
    raise ValueError(
        f"{owner}: name_dict has no entry for parameter {name!r}. name_dict maps every "
        "parameter's path name (keys joined by '/') to the name the layer rule "
        f"sees; it has {len(name_dict)} entries, e.g. {sorted(name_dict)[:3]!r}."
    ) from None
