"""The rule table: one row per path layout the default path rule recognises.

One table, :data:`RULES`, drives everything: :func:`classify` (one name),
:func:`path_layers` (a whole tree), the docs table (:func:`rule_table_markdown`)
and the error texts (:data:`RECOGNISED`, :data:`FIXES`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import NamedTuple


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


def rows(kind: str, where: str | None = None) -> list[tuple[int, Rule]]:
  """The rows of ``kind`` (matched against ``where``, if given), with their indices."""
  return [(i, r) for i, r in enumerate(RULES)
          if r.kind == kind and (where is None or r.where == where)]


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
