"""The default path rule: which layer a parameter is in, from its path name alone.

One table, :data:`RULES`, drives everything: :func:`classify` (one name),
:func:`path_layers` (a whole tree, as an :class:`optax_ldl.LayerMap`), the docs
table (:func:`rule_table_markdown`) and the error texts (:data:`RECOGNISED`).

The rule never guesses silently: a tree it cannot place with confidence (several
candidate layer families, numbered containers it did not use, 1-based numbering,
a stage's own leaves between its blocks, a scanned container whose layer axis is
not clear) raises :class:`LayerRuleError`, which lists the paths in question and
the one-line fixes (``layers=optax_ldl.trace_layers(...)``, ``name_dict``,
``set_param_lr_fun``).

Paddle static names (dots, no ``/``: ``encoder.layers.3.linear1.weight``) get
exactly PaddleNLP's ``layerwise_lr_decay``: ``encoder.layers.N`` is layer N, a
name containing ``embedding`` is the embedding, anything else ratio 1.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.core  # jax.core.Tracer: named for type checkers.
import jax.numpy as jnp
import numpy as np

from optax_ldl._src.layer_map import LayerMap, Placement

__all__ = [
    "RECOGNISED", "RULES", "LayerMatch", "LayerRuleError", "Rule", "check_stacked_arg",
    "classify", "path_layers", "rule_table_markdown",
]


class LayerRuleError(ValueError):
  """The path rule cannot place some parameters with confidence (it never guesses)."""


@dataclasses.dataclass(frozen=True)
class Rule:
  """One row of the rule table.

  Attributes:
    kind: what a match means: ``"paddle_layer"``, ``"paddle_embedding"``,
      ``"paddle_other"`` (Paddle static names); ``"stage"`` (an outer numbered
      container whose blocks are the layers), ``"layer"`` (a numbered layer),
      ``"stack"`` (an unnumbered container that may hold scanned layers),
      ``"tower"`` (names a stack of a multi-stack model), ``"head"``,
      ``"embedding"``, ``"other"`` (the fallback).
    pattern: the regular expression.
    shown: the pattern as the docs show it.
    example: a path name the row applies to.
    expect: what :func:`classify` gives ``example`` (see :func:`describe_match`).
    meaning: what the row is for, in words.
    where: what the pattern is matched against: ``"name"`` (the whole name),
      ``"token"`` (one ``/``-separated key, ``X_N`` carries its number),
      ``"container"`` (a key followed by a numeric key ``N``), ``"key"`` (a key
      not followed by a numeric key), ``"leaf"`` (the parameter's own key).
    inner: for ``"stage"`` rows, the inner containers that make the blocks
      (``None``: any layer row).
  """

  kind: str
  pattern: str
  shown: str
  example: str
  expect: str
  meaning: str
  where: str = "token"
  inner: str | None = None

  @property
  def regex(self) -> re.Pattern[str]:
    return _compiled(self.pattern)

  @property
  def inner_regex(self) -> re.Pattern[str] | None:
    return None if self.inner is None else _compiled(self.inner)


_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
  if pattern not in _CACHE:
    _CACHE[pattern] = re.compile(pattern, re.ASCII)
  return _CACHE[pattern]


_N = r"(?P<n>[0-9]+)"
_LAYER_STEMS = r"layers?|blocks?|resblocks?"
_STACK_KEYS = (
    r"layers?|blocks?|encoderblock|encoderdecoderblock|(?:encoder|decoder|transformer)_"
    r"(?:layers?|blocks?)"
)

RULES: tuple[Rule, ...] = (
    # Paddle static names: PaddleNLP's rule, verbatim.
    Rule("paddle_layer", r"encoder\.layers", "`encoder.layers.N.` (Paddle name)",
         "ernie.encoder.layers.3.linear1.weight", "layer 3",
         "PaddleNLP: layer N (the key after `encoder.layers.`)", where="name"),
    Rule("paddle_embedding", r"^(?=[^/]*embedding)[^/]*\.[^/]*$",
         "a Paddle name (dots, no `/`) containing `embedding`",
         "ernie.embeddings.word_embeddings.weight", "embedding", "PaddleNLP: embedding",
         where="name"),
    Rule("paddle_other", r"^[^/]*\.[^/]*$", "any other Paddle name",
         "decoder.layers.3.linear1.weight", "other",
         "PaddleNLP: ratio 1 (Paddle reads only `encoder.layers.N`; path_layers warns about "
         "other numbered Paddle names)", where="name"),
    # Nested numbering: the blocks inside the stages are the layers, numbered through.
    Rule("stage", rf"^(?P<stem>stages?|block_groups?)_{_N}$", "`stage(s)_S/…_B`, "
         "`block_group_S/~/block_B`", "res_net50/~/block_group_1/~/block_0/~/conv_0/w",
         "layer 1.0", "stage S, block B (haiku ResNet): blocks numbered straight through "
         "the stages"),
    Rule("stage", r"^(?P<stem>stages?|block_groups?)$", "`stages/S/layers/B`",
         "resnet/encoder/stages/1/layers/0/shortcut/convolution/kernel", "layer 1.0",
         "stage S, block B (HF ResNet/RegNet, timm ConvNeXt `stages.S.blocks.B`)",
         where="container"),
    Rule("stage", r"^(?P<stem>layers)$", "`layers/S/blocks/B`",
         "swin/layers/2/blocks/1/attn/qkv/kernel", "layer 2.1",
         "stage S, block B (Swin, timm `layers.S.blocks.B`)", where="container",
         inner=r"^blocks?$"),
    Rule("stage", rf"^(?P<stem>layers)_{_N}$", "`layers_S/blocks_B`",
         "params/layers_1/blocks_0/mlp/kernel", "layer 1.0", "stage S, block B (Flax names)",
         inner=r"^blocks?$"),
    # Numbered layers.
    Rule("layer", rf"^(?P<stem>{_LAYER_STEMS})_{_N}$", "`layers_N`, `layer_N`, `block(s)_N`, "
         "`resblocks_N`", "params/encoder/layers_3/attention/query/kernel", "layer 3",
         "Flax auto-names and `nn.Sequential` (`layers_N`), haiku `~/layer_N`, MaxText/T5X"),
    Rule("layer", rf"^(?P<stem>(?:encoder|decoder|transformer|encoderdecoder)_?"
         rf"(?:block|layer)s?)_{_N}$",
         "`encoderblock_N`, `encoderdecoderblock_N`, `encoder_layer_N`, `decoder_block_N`, "
         "`decoder_layer_N`, `transformer_block_N`, `transformer_layer_N`",
         "params/decoder/encoderdecoderblock_1/MlpBlock_0/Dense_0/kernel", "layer 1",
         "big_vision / flax WMT example, keras-hub"),
    Rule("layer", rf"^(?P<stem>(?!Scan)(?:[A-Z][A-Za-z0-9]*)?(?:Block|Layer))_{_N}$",
         "`<Name>Block_N`, `<Name>Layer_N`, `Block_N`", "params/BertLayer_2/attention/query/kernel",
         "layer 2", "Flax auto-names of a block class: `BertLayer_N`, `TransformerLayer_N`, "
         "`DecoderLayer_N`, `MixerBlock_N`, `ResNetBlock_N`"),
    Rule("layer", rf"^(?P<stem>layer|block){_N}$", "`layerN`, `blockN` (no `_`)",
         "block1/unit1/conv1/kernel", "layer 1",
         "numbered without `_`; path_layers refuses a family that has no index 0"),
    Rule("layer", r"^(?P<stem>layers?)$", "`layer/N`, `layers/N`",
         "params/bert/encoder/layer/5/attention/self/query/kernel", "layer 5",
         "HF BERT/RoBERTa/ELECTRA/ViT/BEiT `layer/N`; HF Llama/BART/CLIP/Whisper, `nnx.List` "
         "`layers/N`", where="container"),
    Rule("layer", r"^(?P<stem>h)$", "`h/N`", "params/transformer/h/11/attn/c_attn/kernel",
         "layer 11", "HF GPT-2", where="container"),
    Rule("layer", r"^(?P<stem>blocks?|resblocks?|attention_blocks|transformer_blocks?"
         r"|(?:encoder|decoder)_?(?:layers?|blocks?))$",
         "`block(s)/N`, `resblocks/N`, `attention_blocks/N`",
         "params/encoder/block/2/layer/1/DenseReluDense/wi/kernel", "layer 2",
         "HF T5 `block/N` (its `layer/M` are sub-layers), equinox `attention_blocks/N`, "
         "timm `blocks.N.` (a flat dict of timm names is read with `.` as `/`)",
         where="container"),
    # Stacked (scanned) layers.
    Rule("stack", r"^(?P<stem>Scan[A-Z]\w*?(?:_[0-9]+)?|scan|scanned_layers|scanned_blocks)$",
         "`ScanBlock_0`, `scan`, `scanned_layers`", "params/ScanBlock_0/Dense_0/kernel",
         "other [stack params/ScanBlock_0]",
         "`nn.scan(Block)`: every layer in one leaf (stacked='auto', axis 0)", where="key"),
    Rule("stack", rf"^(?P<stem>{_STACK_KEYS})$",
         "`layers`, `blocks`, `encoderblock` (no `N` after)",
         "params/decoder/layers/mlp/kernel", "other [stack params/decoder/layers]",
         "`nnx.vmap`/`nnx.scan`/big_vision scan: with stacked='auto', used only when the tree "
         "has no numbered layers and every leaf under it has the same axis-0 length; a lone "
         "`<Name>_0` right under it (`blocks/EncoderBlock_0`: nn.scan's auto-named body) whose "
         "leaves share one axis-0 length > 1 is the scanned body, not layer 0",
         where="key"),
    # Several stacks.
    Rule("tower", r"(?i)encoder|decoder|text|vision|visual|image|img|txt|audio|speech|tower",
         "`encoder`/`decoder`, `text_model`/`vision_model`, ...",
         "params/text_model/encoder/layers/2/mlp/fc1/kernel", "layer 2",
         "numbered families under different towers are separate stacks, each with its own "
         "depth; other sets of several families are refused"),
    # Outside the layers (the first key, from the root, that a row matches decides).
    Rule("head", r"^(?:unembed\w*|embed_out|reverse_embeddings?|output_embeddings?)$",
         "`unembed`, `embed_out`, `reverse_embeddings`", "params/decoder/embed_out/kernel",
         "head", "output heads that mention `embed`: ratio 1, not the embedding ratio"),
    Rule("head", r"(?i)head", "a key containing `head`", "params/lm_head/kernel", "head",
         "`lm_head`, `head`, `conv_head`: ratio 1"),
    Rule("head", r"^(?:classifier|pooler|logits?|logit_scale|(?!feature_)\w+_projection)$",
         "`classifier`, `pooler`, `logits`, `logit_scale`, `*_projection`",
         "params/classifier/kernel", "head",
         "after the last layer: ratio 1 (but `feature_projection` is the input stage)"),
    Rule("embedding", r"^(?:feature_extractor|feature_projection|project_in)$",
         "`feature_extractor`, `feature_projection`, `project_in`",
         "params/wav2vec2/feature_projection/projection/kernel", "embedding",
         "wav2vec2's conv feature extractor and projection, OPT's `project_in`"),
    Rule("embedding", r"(?i)embed|^wte$|^wpe$", "a key containing `embed`, `wte`, `wpe`",
         "params/bert/embeddings/word_embeddings/embedding", "embedding",
         "token/position/patch embeddings (`pos_embed*`, `patch_embed`, `Embed_0`, `embedder`)"),
    Rule("embedding", r"(?i)(?:^|_|pos|tok)embs?(?:_|$)",
         "`emb`/`embs` as a word: `pos_emb`, `pos_embs`, `posemb`, `tok_emb`",
         "transformer/pos_embs", "embedding",
         "learned position/token embeddings without `embed` (haiku's `pos_embs`, nanoGPT's "
         "`tok_emb`/`pos_emb`)"),
    Rule("embedding", r"^(?:cls|cls_token|class_token|reg_tokens?|register_tokens?|mask_token"
         r"|dist_token)$", "`cls`, `cls_token`, `reg_token`, `mask_token` (the parameter)",
         "params/cls", "embedding",
         "class/register/mask tokens; only the parameter's own key (HF's `cls/predictions` "
         "MLM head is a head)", where="leaf"),
    Rule("embedding", r"^(?:pre_layrnorm|pre_layernorm|ln_pre|norm_pre|pre_norm)$",
         "`pre_layrnorm`, `ln_pre`, `norm_pre`", "params/vision_model/pre_layrnorm/scale",
         "embedding", "norms before the first layer (CLIP)"),
    Rule("embedding", r"^(?:stem\w*|\w+_stem|conv_root|gn_root|bn_root|conv_init|bn_init"
         r"|initial_\w+|patchify\w*)$",
         "`stem`, `conv_root`, `gn_root`, `initial_conv`, `conv_init`",
         "res_net50/~/initial_conv/w", "embedding", "CNN stems (ResNet, BiT, haiku, flax)"),
    Rule("embedding", r"^(?:conv[0-9]*|conv_[0-9]+|Conv_[0-9]+)$",
         "`conv`, `conv1`, `conv2`, `Conv_0` outside the layers",
         "params/model/encoder/conv1/kernel", "embedding",
         "a convolution in front of the layers (Whisper's conv1/conv2, a patch conv)"),
    Rule("other", r"", "anything else", "params/transformer/ln_f/scale", "other",
         "final norms, poolers, heads: ratio 1 (Paddle's 'other')", where="name"),
)

RECOGNISED = (
    "The path rule (optax_ldl.rule_table_markdown()) recognises numbered layers "
    + ", ".join(r.shown for r in RULES if r.kind in ("stage", "layer"))
    + "; stacked (scanned) layers under "
    + ", ".join(r.shown for r in RULES if r.kind == "stack")
    + "; and Paddle names `encoder.layers.N`."
)

FIXES = (
    "Fix it with one of:\n"
    "  layers=optax_ldl.trace_layers(fn, params, *example_args)  # layers from the forward "
    "pass, no naming rule\n"
    "  name_dict={path: name, ...}  # rename paths to a layout of the rule table (e.g. "
    "'encoder/layers_3/...'), see optax_ldl.rule_table_markdown()\n"
    "  set_param_lr_fun=lambda decay, name_dict, n_layers, param: ...  # your own rule"
)


class LayerMatch(NamedTuple):
  """Where the default rule places one name.

  Attributes:
    kind: ``"layer"``, ``"embedding"``, ``"head"`` or ``"other"`` (both ratio
      1; ``"other"`` is Paddle's and the fallback).
    layer: the layer index; for nested numbering (stage ``S``, block ``B``),
      ``None``: the flat index needs the whole tree (:func:`path_layers`).
    indices: ``(N,)``, or ``(S, B)`` for nested numbering; ``()`` if not a layer.
    family: the numbered container's path (``params/encoder/layers`` for
      ``params/encoder/layers_3/...``; the stage container for nested numbering;
      ``"encoder.layers"`` for Paddle names); ``""`` if not a layer.
    inner: for nested numbering, the block container's path inside a stage
      (``layers`` for ``stages/S/layers/B``), else ``""``.
    stack: an unnumbered container that may hold scanned layers (the path up to
      it), else ``""``.
    rule: the index in :data:`RULES` of the row that decided.
  """

  kind: str
  layer: int | None = None
  indices: tuple[int, ...] = ()
  family: str = ""
  inner: str = ""
  stack: str = ""
  rule: int = -1


def describe_match(m: LayerMatch) -> str:
  """``m`` in the words of the table's ``expect`` column (``'layer 3'``, ``'layer 1.0'``)."""
  if m.kind == "layer":
    out = "layer " + ".".join(str(i) for i in m.indices)
  else:
    out = m.kind
  return out + (f" [stack {m.stack}]" if m.stack else "")


def _rows(kind: str, where: str | None = None) -> list[tuple[int, Rule]]:
  return [(i, r) for i, r in enumerate(RULES)
          if r.kind == kind and (where is None or r.where == where)]


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


def _is_digits(token: str) -> bool:
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
    for r_i, row in _rows(kind):
      if row.where == "token":
        m = row.regex.match(token)
        if m:
          stem = m.group("stem")
          return _Hit(i, i, int(m.group("n")), "/".join(tokens[:i] + [stem]), stem, r_i)
      elif row.where == "container" and nxt is not None and _is_digits(nxt):
        m = row.regex.match(token)
        if m:
          return _Hit(i, i + 1, int(nxt), "/".join(tokens[:i + 1]), token, r_i)
  return None


def _leaf_pos(tokens: list[str]) -> int:
  """The parameter's own key: the last, or the one before an NNX ``value``."""
  if len(tokens) > 1 and tokens[-1] == "value":
    return len(tokens) - 2
  return len(tokens) - 1


def classify(name: str) -> LayerMatch:
  """Places one parameter name: a layer, the embeddings, a head, or other.

  Names without ``/`` that contain a ``.`` are Paddle static names and get
  exactly PaddleNLP's rule. Other names are tree paths, read key by key with
  the rows of :data:`RULES` (see :func:`rule_table_markdown`): a numbered layer
  anywhere in the path wins (as in Paddle); else the first key from the root
  that a head or embedding row matches; else ``"other"``.

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
  for r_i, row in _rows("paddle_layer") + _rows("paddle_embedding") + _rows("paddle_other"):
    if row.regex.search(name):
      if row.kind == "paddle_layer":
        n = _paddle_index(name)
        return LayerMatch("layer", n, (n,), "encoder.layers", rule=r_i)
      return LayerMatch("embedding" if row.kind == "paddle_embedding" else "other", rule=r_i)
  tokens = name.split("/")
  scan_rows = [r for _, r in _rows("stack") if r.regex.pattern.startswith("^(?P<stem>Scan")]
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
                          rule=hit.rule)
      if row.inner is not None:  # `layers/S` without blocks: an ordinary layer row.
        plain = _layer_hit(tokens, i, ("layer",))
        if plain is not None:
          hit = plain
    return LayerMatch("layer", hit.number, (hit.number,), hit.stem_path, rule=hit.rule)
  stack = ""
  leaf = _leaf_pos(tokens)
  for i in range(leaf):
    nxt = tokens[i + 1]
    if not _is_digits(nxt) and any(r.regex.match(tokens[i]) for _, r in _rows("stack")):
      stack = "/".join(tokens[:i + 1])
      break
  for i, token in enumerate(tokens):
    for kind in ("head", "embedding"):
      for r_i, row in _rows(kind):
        if row.where == "leaf" and i != leaf:
          continue
        if row.regex.search(token):
          return LayerMatch(kind, stack=stack, rule=r_i)
  return LayerMatch("other", stack=stack, rule=_rows("other")[0][0])


def _inner_hit(tokens: list[str], outer: _Hit, row: Rule) -> _Hit | None:
  for j in range(outer.member + 1, len(tokens)):
    hit = _layer_hit(tokens, j, ("layer",))
    if hit is not None:
      inner_re = row.inner_regex
      if inner_re is None or inner_re.match(hit.stem):
        return hit
      return None
  return None


def rule_table_markdown() -> str:
  """The rule table (for the README and docs), generated from :data:`RULES`.

  >>> print(rule_table_markdown().splitlines()[0])
  | pattern | kind | example | classify gives | meaning |
  """
  lines = ["| pattern | kind | example | classify gives | meaning |",
           "|---|---|---|---|---|"]
  for row in RULES:
    lines.append(f"| {row.shown} | {row.kind} | `{row.example}` | {row.expect} | "
                 f"{row.meaning} |")
  return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# stacked=: the accepted forms (as stacked.py).
# ----------------------------------------------------------------------------------------

ACCEPTED = (
    "'auto', None/False, a dict {path prefix (keys joined by '/'): axis (int)}, "
    "or a function path_name -> axis (int) or None"
)


def check_stacked_arg(owner: str, stacked: Any) -> None:
  """Raises ``TypeError`` if ``stacked`` is not one of the accepted forms."""
  if stacked is None or stacked is False or stacked == "auto" or callable(stacked):
    if isinstance(stacked, str) and stacked != "auto":
      raise TypeError(f"{owner}: stacked must be {ACCEPTED}; got {stacked!r}")
    return
  if isinstance(stacked, Mapping):
    for prefix, axis in stacked.items():
      if not isinstance(prefix, str) or not (
          axis is None or (isinstance(axis, (int, np.integer)) and not isinstance(axis, bool))
      ):
        raise TypeError(
            f"{owner}: stacked must be {ACCEPTED}; the entry {prefix!r}: {axis!r} "
            "is not a str prefix mapped to an int axis (or None)."
        )
    return
  raise TypeError(f"{owner}: stacked must be {ACCEPTED}; got {stacked!r}")


def _lookup_prefix(stacked: Mapping[str, Any], name: str) -> tuple[bool, Any, str]:
  best = None
  for prefix in stacked:
    p = prefix.rstrip("/")
    if p == "" or name == p or name.startswith(p + "/"):
      if best is None or len(p) > len(best.rstrip("/")):
        best = prefix
  if best is None:
    return False, None, ""
  return True, stacked[best], best.rstrip("/")


def explicit_axis(stacked: Any, name: str, shape: tuple[int, ...],
                   n_given: int | None) -> tuple[int, str] | None:
  """``(axis, container)`` for an explicitly stacked leaf, else ``None``."""
  if stacked is None or stacked is False or isinstance(stacked, str):
    return None
  if isinstance(stacked, Mapping):
    found, axis, prefix = _lookup_prefix(stacked, name)
    if not found or axis is None:
      return None
    source = f"stacked[{prefix!r}]"
    container = prefix if prefix and prefix != name else _parent(name)
  else:
    axis = stacked(name)
    if axis is None or axis is False:
      return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
      raise TypeError(
          f"stacked({name!r}) returned {axis!r}; the function must return an int axis or None."
      )
    source = f"stacked({name!r})"
    container = classify(name).stack or _parent(name)
  ndim = len(shape)
  if not -ndim <= axis < ndim:
    raise ValueError(
        f"parameter {name!r} of shape {tuple(shape)} is stacked along axis {axis} "
        f"({source}), which is out of range for its {ndim} dimension(s); the axis "
        f"must be in [{-ndim}, {ndim}) (n_layers={n_given}). stacked accepts {ACCEPTED}."
    )
  axis = int(axis) % ndim
  if n_given is not None and shape[axis] != n_given:
    raise ValueError(
        f"parameter {name!r} of shape {tuple(shape)} is stacked along axis {axis} "
        f"({source}), whose length {shape[axis]} is not n_layers={n_given}; "
        "the stacked axis must hold one slice per layer. Fix the axis or "
        f"n_layers; stacked accepts {ACCEPTED}."
    )
  return axis, container


def _parent(name: str) -> str:
  return name.rsplit("/", 1)[0] if "/" in name else ""


# ----------------------------------------------------------------------------------------
# path_layers
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Leaf:
  path: str                 # the path name (the LayerMap's key)
  rule_name: str            # what the rule reads (name_dict, timm dots as '/')
  shape: tuple[int, ...]
  plain_keys: bool          # only str dict keys (and NNX's trailing .value)
  match: LayerMatch = LayerMatch("other")


@dataclasses.dataclass
class _Stack:
  name: str                           # the family / container path
  anchor: list[str]                   # keys the stack lives under (for the embeddings)
  layers: dict[str, int] = dataclasses.field(default_factory=dict)   # path -> flat index
  stacked: dict[str, int] = dataclasses.field(default_factory=dict)  # path -> axis
  length: int | None = None           # a stacked stack's axis length
  depth: int = 0


def _is_float(x: Any) -> bool:
  dtype = getattr(x, "dtype", None)
  try:
    return bool(jnp.issubdtype(jnp.result_type(x) if dtype is None else dtype, jnp.inexact))
  except TypeError:
    return False


def _plain_keys(path: tuple[Any, ...]) -> bool:
  for j, key in enumerate(path):
    if isinstance(key, jax.tree_util.DictKey) and isinstance(key.key, str):
      continue
    if (j == len(path) - 1 and isinstance(key, jax.tree_util.GetAttrKey)
        and key.name == "value"):
      continue  # an NNX Variable's value
    return False
  return True


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


def _n_layers_arg(owner: str, n_layers: Any) -> int | dict[str, int] | None:
  """``n_layers`` as None, an int >= 1 or a dict; a traced value is ignored (None)."""
  if n_layers is None or isinstance(n_layers, jax.core.Tracer):
    return None
  if isinstance(n_layers, Mapping):
    out = {}
    for k, v in n_layers.items():
      if not isinstance(k, str):
        raise TypeError(f"{owner}: n_layers dict keys must be stack prefixes (str), got {k!r}")
      out[k] = _one_n(owner, v, f"n_layers[{k!r}]")
    return out
  return _one_n(owner, n_layers, "n_layers")


def _one_n(owner: str, v: Any, what: str) -> int:
  if isinstance(v, bool) or not (isinstance(v, (int, np.integer)) or (
      hasattr(v, "shape") and np.shape(v) == () and np.issubdtype(np.asarray(v).dtype,
                                                                   np.integer))):
    raise TypeError(
        f"{owner}: {what} must be an int >= 1, a dict {{stack prefix: int}} or None; "
        f"got {v!r}"
    )
  n = int(np.asarray(v))
  if n < 1:
    raise ValueError(f"{owner}: {what} must be >= 1, got {n}")
  return n


def _show(paths: list[str], limit: int = 8) -> list[str]:
  paths = sorted(paths)
  out = [f"    {p}" for p in paths[:limit]]
  if len(paths) > limit:
    out.append(f"    ... and {len(paths) - limit} more")
  return out


def _refuse(owner: str, problems: list[tuple[str, list[str]]]) -> LayerRuleError:
  lines = [f"{owner}: the default path rule cannot place these parameters with confidence "
           "(it never guesses):"]
  for title, paths in problems:
    lines.append(f"  - {title}:")
    lines += _show(paths)
  lines.append(FIXES)
  return LayerRuleError("\n".join(lines))


def _tower_key(family: str) -> str | None:
  tokens = family.split("/")
  tower = _rows("tower")[0][1].regex
  last = None
  for i, t in enumerate(tokens):
    if tower.search(t):
      last = i
  return None if last is None else "/".join(tokens[:last + 1])


def _common(a: list[str], b: list[str]) -> int:
  n = 0
  for x, y in zip(a, b):
    if x != y:
      break
    n += 1
  return n


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
    (``stages/S/layers/B``) is flattened through the stages in order.
  * Several families under different towers (``encoder``/``decoder``,
    ``text_model``/``vision_model``) are separate stacks, each with its depth;
    with one stack its name is ``""``.
  * Leaves outside the layers are the embedding stage of the stack they share
    the longest path prefix with (the deepest stack on a tie) or the head.
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
    An :class:`optax_ldl.LayerMap` of the float leaves. A tree with no layers
    at all gives every leaf ``Placement("head")`` (the caller refuses it unless
    the decay is 1).

  Raises:
    LayerRuleError: a tree the rule cannot place with confidence (the message
      lists the paths and the fixes).
    ValueError, TypeError: bad ``n_layers``, ``name_dict`` or ``stacked``.
  """
  check_stacked_arg(owner, stacked)
  n_arg = _n_layers_arg(owner, n_layers)
  n_int = n_arg if isinstance(n_arg, int) else None
  leaves: list[_Leaf] = []
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    if not _is_float(x):
      continue
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    leaves.append(_Leaf(name, static_name(owner, name_dict, name), tuple(np.shape(x)),
                        _plain_keys(path)))
  _read_dotted_names(leaves)
  for leaf in leaves:
    leaf.match = classify(leaf.rule_name)

  problems: list[tuple[str, list[str]]] = []
  notes: list[str] = []
  stacks: dict[str, _Stack] = {}

  # 1. Explicitly stacked leaves (stacked={prefix: axis} or a function).
  explicit: dict[str, tuple[int, str]] = {}
  for leaf in leaves:
    spec = explicit_axis(stacked, leaf.path, leaf.shape, n_int)
    if spec is not None:
      explicit[leaf.path] = spec
  for leaf in leaves:
    if leaf.path in explicit:
      axis, container = explicit[leaf.path]
      st = stacks.setdefault(container, _Stack(container, container.split("/")[:-1]))
      length = leaf.shape[axis]
      if st.length is not None and st.length != length:
        raise ValueError(
            f"{owner}: the stacked leaves under {container!r} disagree on the number of "
            f"layers: {leaf.path!r} has {length} along axis {axis}, others {st.length}; "
            f"stacked accepts {ACCEPTED}."
        )
      st.length = length
      st.stacked[leaf.path] = axis
  rest = [leaf for leaf in leaves if leaf.path not in explicit]

  # 2. Numbered layers.
  paddle = [lf for lf in rest if RULES[lf.match.rule].kind == "paddle_layer"]
  layered = [lf for lf in rest if lf.match.kind == "layer"]
  if paddle:
    st = stacks.setdefault("encoder.layers", _Stack("encoder.layers", []))
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
  else:
    layered = _scan_bodies(layered, rest, stacked, stacks, problems)
    _number_families(layered, stacks, problems)

  # 3. stacked="auto": only without numbered layers.
  placed = {p for st in stacks.values() for p in (*st.layers, *st.stacked)}
  if stacked == "auto" and not layered and not paddle and not problems:
    _auto_stack([lf for lf in rest if lf.path not in placed], stacks, problems)
    placed = {p for st in stacks.values() for p in (*st.layers, *st.stacked)}

  # 4. Numbered containers the rule did not use.
  unused = [lf.path for lf in rest if lf.path not in placed and _unused_numbered(lf)]
  if unused:
    problems.append(("numbered containers that the rule does not read as layers (not a known "
                     "layer family, and not inside a layer, an embedding or a head)", unused))
  if problems:
    raise _refuse(owner, problems)

  # 5. Depths, n_layers.
  _depths(owner, stacks, n_arg, notes)
  if notes:
    warnings.warn(f"{owner}: " + "; ".join(notes), UserWarning, stacklevel=2)

  # 6. Placements.
  single = len(stacks) == 1
  label = {s: ("" if single else s) for s in stacks}
  placements: dict[str, Placement] = {}
  for st in stacks.values():
    for path, i in st.layers.items():
      if i >= st.depth:  # index == n_layers: ratio 1, as Paddle.
        placements[path] = Placement("ratio", label[st.name], ratio=1.0)
      else:
        placements[path] = Placement("layer", label[st.name], layer=i)
    for path, axis in st.stacked.items():
      placements[path] = Placement("layer", label[st.name], layer=0, axis=axis)
  for lf in leaves:
    if lf.path in placements:
      continue
    if lf.match.kind == "embedding" and stacks:
      owner_stack = _embedding_stack(lf, stacks)
      placements[lf.path] = Placement("embedding", label[owner_stack])
    else:
      placements[lf.path] = Placement("head")
  return LayerMap.build(placements, {label[s]: st.depth for s, st in stacks.items()})


def _read_dotted_names(leaves: list[_Leaf]) -> None:
  """A flat dict of timm names (``blocks.0.attn.qkv.weight``): read ``.`` as ``/``.

  Only when no name is a Paddle layer name (``encoder.layers``) and some dotted
  name has a numbered layer once read so.
  """
  dotted = [lf for lf in leaves if "." in lf.rule_name and "/" not in lf.rule_name]
  if not dotted or any("encoder.layers" in lf.rule_name for lf in leaves):
    return
  if any(classify(lf.rule_name.replace(".", "/")).kind == "layer" for lf in dotted):
    for lf in dotted:
      lf.rule_name = lf.rule_name.replace(".", "/")


def _scan_bodies(layered: list[_Leaf], rest: list[_Leaf], stacked: Any,
                 stacks: dict[str, _Stack], problems: list[tuple[str, list[str]]]
                 ) -> list[_Leaf]:
  """Flax ``nn.scan`` bodies read as layer 0: stacks them, or refuses; returns the other leaves.

  ``nn.scan(Body, name='blocks')`` stores every layer in one leaf under
  ``blocks/<Name>_0/...`` (the module the body makes, auto-named ``_0``), so
  ``<Name>_0`` is no layer 0. A family whose only member is ``<Name>_0``, when
  every leaf under its parent container has the same axis-0 length ``n > 1``,
  is such a body: with ``stacked='auto'`` and a container the table knows as a
  stack (``blocks``, ``layers``, ...) it is a stack of ``n`` layers on axis 0;
  otherwise, when the shapes clearly say stacked (several leaves, none 1-D), the
  rule refuses rather than guess between a scanned stack and a 1-layer model.
  With ``stacked=None``/``False`` the caller has said there are no stacks.
  """
  if stacked is None or stacked is False:
    return layered
  families: dict[str, list[_Leaf]] = {}
  for lf in layered:
    families.setdefault(lf.match.family, []).append(lf)
  by_container: dict[str, list[str]] = {}
  for family, lfs in families.items():
    row = RULES[lfs[0].match.rule]
    parts = family.split("/")
    if (row.where != "token" or any(lf.match.indices != (0,) for lf in lfs)
        or any(lf.rule_name.split("/")[len(parts) - 1] != parts[-1] + "_0" for lf in lfs)):
      continue
    by_container.setdefault("/".join(parts[:-1]), []).append(family)
  stack_rows = [r.regex for _, r in _rows("stack")]
  bodies: dict[str, list[_Leaf]] = {}
  for container, fams in by_container.items():
    inside = [lf for lf in rest
              if container == "" or lf.rule_name.startswith(container + "/")]
    if any(lf.match.kind == "layer" and lf.match.family not in fams for lf in inside):
      continue  # other numbered families under it: not a scan body.
    lengths = {lf.shape[0] if lf.shape else None for lf in inside}
    if (len(lengths) != 1 or None in lengths or (lengths.pop() or 0) < 2
        or not all(lf.plain_keys for lf in inside)):
      continue
    key = container.rsplit("/", 1)[-1]
    if stacked == "auto" and container and any(r.match(key) for r in stack_rows):
      bodies[container] = inside
    elif len(inside) > 1 and all(len(lf.shape) >= 2 for lf in inside):
      members = sorted({f.rsplit("/", 1)[-1] + "_0" for f in fams})
      problems.append((
          f"{container or 'the root'!r} may be an nn.scan stack: its only numbered module "
          f"{'/'.join(members)} has no siblings and every leaf under it has the same axis-0 "
          f"length {inside[0].shape[0]} (a scanned body, or layer 0 of a 1-layer model?); "
          f"give the axis with stacked={{{container!r}: 0}}, or stacked=None for one layer",
          [lf.path for lf in inside]))
      return []
  if not bodies:
    return layered
  taken = {lf.path for lfs in bodies.values() for lf in lfs}
  left = [lf for lf in layered if lf.path not in taken]
  names = list(bodies) + sorted({lf.match.family for lf in left})
  if len(names) > 1:
    towers = [_tower_key(n) for n in names]
    if None in towers or len(set(towers)) != len(towers):
      problems.append((
          f"several candidate layer stacks ({', '.join(repr(n) for n in names)}: scanned "
          "bodies and numbered families); which are the model's layers is not clear from "
          "the names", sorted(taken)[:4] + _one_per_member([lf.path for lf in left], left)))
      return []
  for container, lfs in bodies.items():
    st = stacks.setdefault(container, _Stack(container, container.split("/")[:-1]))
    st.length = lfs[0].shape[0]
    for lf in lfs:
      st.stacked[lf.path] = 0
  return left


def _number_families(layered: list[_Leaf], stacks: dict[str, _Stack],
                     problems: list[tuple[str, list[str]]]) -> None:
  families: dict[str, list[_Leaf]] = {}
  for lf in layered:
    families.setdefault(lf.match.family, []).append(lf)
  # Several families: accepted as stacks only under distinct towers.
  if len(families) > 1:
    towers = {f: _tower_key(f) for f in families}
    keys = [t for t in towers.values() if t is not None]
    if None in towers.values() or len(set(keys)) != len(keys):
      bad = [lf.path for f, lfs in families.items() for lf in lfs
             if towers[f] is None or keys.count(towers[f] or "") > 1]
      names = ", ".join(f"{f!r} ({len({lf.match.indices[0] for lf in lfs})} members)"
                        for f, lfs in sorted(families.items()))
      problems.append((f"several candidate layer families ({names}); which are the "
                       "model's layers is not clear from the names (a Sequential head "
                       "beside the layers?)", _one_per_member(bad, layered)))
      return
  for family, lfs in families.items():
    nested = [lf for lf in lfs if len(lf.match.indices) == 2]
    index: dict[str, int] = {}
    if nested:
      flat = [lf.path for lf in lfs if len(lf.match.indices) == 1]
      if flat:
        problems.append((f"leaves of the stages of {family!r} outside their blocks (a "
                         "downsample or merge between blocks: before or after them is not "
                         "in the names)", flat))
        continue
      inner = {lf.match.inner for lf in nested}
      if len(inner) > 1:
        problems.append((f"the stages of {family!r} hold several block families "
                         f"{sorted(inner)}", [lf.path for lf in nested]))
        continue
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
        continue
      offset, acc = {}, 0
      for s in sorted(counts):
        offset[s] = acc
        acc += counts[s]
      for lf in nested:
        s, b = lf.match.indices
        index[lf.path] = offset[s] + b
    else:
      members = {lf.match.indices[0] for lf in lfs}
      if 0 not in members:
        problems.append((f"the family {family!r} has no layer 0 (numbered from "
                         f"{min(members)}: 1-based?)", [lf.path for lf in lfs]))
        continue
      index = {lf.path: lf.match.indices[0] for lf in lfs}
    anchor = family.split("/")[:-1]
    st = stacks.setdefault(family, _Stack(family, anchor))
    st.layers.update(index)


def _one_per_member(paths: list[str], layered: list[_Leaf]) -> list[str]:
  """One example path per family member (the message lists members, not every leaf)."""
  seen, out = set(), []
  by_path = {lf.path: lf for lf in layered}
  for p in sorted(paths):
    m = by_path[p].match
    key = (m.family, m.indices)
    if key not in seen:
      seen.add(key)
      out.append(p)
  return out


def _auto_stack(candidates: list[_Leaf], stacks: dict[str, _Stack],
                problems: list[tuple[str, list[str]]]) -> None:
  groups: dict[str, list[_Leaf]] = {}
  for lf in candidates:
    if lf.match.stack:
      groups.setdefault(lf.match.stack, []).append(lf)
  for container, lfs in groups.items():
    lengths = {lf.shape[0] if lf.shape else None for lf in lfs}
    if all(lf.plain_keys for lf in lfs) and len(lengths) == 1 and None not in lengths:
      st = stacks.setdefault(container, _Stack(container, container.split("/")[:-1]))
      st.length = lengths.pop()
      for lf in lfs:
        st.stacked[lf.path] = 0
    else:
      why = ("its leaves' axis-0 lengths differ "
             f"({sorted((lf.shape[0] if lf.shape else 'scalar') for lf in lfs)[:6]!s})"
             if all(lf.plain_keys for lf in lfs) else
             "its path has list indices, integer keys or custom pytree nodes")
      problems.append((f"{container!r} may hold scanned layers, but {why}; give the axis "
                       "with stacked={'path/prefix': axis} (or stacked=None)",
                       [lf.path for lf in lfs]))


def _unused_numbered(lf: _Leaf) -> bool:
  """A leaf outside the layers under an ``X/N`` container that no row places."""
  tokens = lf.rule_name.split("/")
  if "." in lf.rule_name and "/" not in lf.rule_name:
    return False  # a Paddle name
  leaf = _leaf_pos(tokens)
  for i, token in enumerate(tokens):
    for kind in ("head", "embedding"):
      for _, row in _rows(kind):
        if (row.where != "leaf" or i == leaf) and row.regex.search(token):
          return False
    if _is_digits(token):
      return True
  return False


def _depths(owner: str, stacks: dict[str, _Stack], n_arg: int | dict[str, int] | None,
            notes: list[str]) -> None:
  shown = {s: (st.length if st.length is not None else max(st.layers.values()) + 1)
           for s, st in stacks.items()}
  if isinstance(n_arg, dict):
    given = _match_depths(owner, n_arg, list(stacks))
  elif isinstance(n_arg, int):
    if len(set(shown.values())) > 1:
      raise ValueError(
          f"{owner}: n_layers={n_arg} is one number, but the tree has stacks of different "
          f"depths: {shown}. Pass n_layers as a dict {{stack prefix: depth}} (e.g. "
          f"{ {s.split('/')[-2] if '/' in s else s: d for s, d in shown.items()} }) or "
          "n_layers=None to infer each stack's depth."
      )
    given = dict.fromkeys(stacks, n_arg)
  else:
    given = {}
  for s, st in stacks.items():
    n = given.get(s)
    if n is None:
      st.depth = shown[s]
      continue
    if st.length is not None:
      if n != st.length:
        raise ValueError(
            f"{owner}: n_layers={n} but the stacked leaves under {s!r} hold {st.length} "
            f"layers on their axis (e.g. {sorted(st.stacked)[0]!r}); pass "
            f"n_layers={st.length}, or give the axis with stacked={{'path/prefix': axis}}."
        )
      st.depth = n
      continue
    top = max(st.layers.values())
    if top > n:
      path = min(p for p, i in st.layers.items() if i == top)
      raise ValueError(
          f"{owner}: parameter {path!r} is in layer {top}, but n_layers={n} is smaller, which "
          "would give it a ratio above 1 (layers are numbered from 0); pass "
          f"n_layers >= {top + 1} (the tree has {top + 1} layers"
          f"{'' if len(stacks) == 1 else f' in {s!r}'})."
      )
    if n != top + 1:
      where = "" if len(stacks) == 1 else f" in {s!r}"
      extra = (f" (layer {n} gets ratio 1, as in PaddleNLP)" if top == n else
               f" (the top layer gets decay**{n - top}, not decay)")
      notes.append(f"n_layers={n} but the tree shows {top + 1} layers{where}{extra}; "
                   f"pass n_layers={top + 1} (or None) to silence this")
    st.depth = n


def _match_depths(owner: str, n_arg: dict[str, int], names: list[str]) -> dict[str, int]:
  def matches(key: str, stack: str) -> bool:
    if key == "" or key == stack:
      return True
    return f"/{key}/" in f"/{stack}/" or stack.startswith(key + "/")

  out: dict[str, int] = {}
  for s in names:
    keys = [k for k in n_arg if matches(k, s)]
    if not keys:
      raise ValueError(
          f"{owner}: n_layers={n_arg} gives no depth for the stack {s!r}; its stacks are "
          f"{sorted(names)} (a key may be any run of keys of a stack's path, e.g. 'encoder')."
      )
    out[s] = n_arg[max(keys, key=len)]
  unused = [k for k in n_arg if not any(matches(k, s) for s in names)]
  if unused:
    raise ValueError(
        f"{owner}: n_layers keys {unused} match no stack; the stacks are {sorted(names)}."
    )
  return out


def _embedding_stack(lf: _Leaf, stacks: dict[str, _Stack]) -> str:
  tokens = lf.rule_name.split("/")
  scored = [(_common(tokens, st.anchor), st.depth, s) for s, st in stacks.items()]
  best = max(c for c, _, _ in scored)
  tied = [(d, s) for c, d, s in scored if c == best]
  deepest = max(d for d, _ in tied)
  return min(s for d, s in tied if d == deepest)

