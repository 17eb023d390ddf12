"""The rule table: one row per path layout or part name the default path rule recognises.

One table, :data:`RULES`, drives everything: :func:`classify` (one name),
:func:`path_layers` (a whole tree), the docs table (:func:`rule_table_markdown`),
the error texts (:data:`RECOGNISED`, :data:`OUTSIDE`, :data:`FIXES`) and the
evidence recorded per leaf (each row's ``name``). Outside the layers, its
``embedding``/``head``/``shared`` rows are the role vocabulary: the only names
the rule places there.
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
      ``"tower"`` (names a stack of a multi-stack model), ``"head"`` (a
      post-stack part: ratio 1), ``"shared"`` (used by every layer: ratio 1),
      ``"embedding"`` (an embedding-stage part), ``"other"`` (no evidence).
    name: the row's short name, cited in the evidence (``"layers_N"``).
    pattern: the regular expression.
    shown: the pattern as the docs show it.
    example: a path name the row applies to.
    expect: what :func:`classify` gives ``example`` (see :func:`describe_match`).
    meaning: what the row is for, in words.
    where: what the pattern is matched against: ``"name"`` (the whole name),
      ``"token"`` (one ``/``-separated key, ``X_N`` carries its number),
      ``"container"`` (a key followed by a numeric key ``N``), ``"key"`` (a key
      not followed by a numeric key), ``"leaf"`` (the parameter's own key),
      ``"any"`` (any key, before the first-from-the-root reading).
    inner: for ``"stage"`` rows, the inner containers that make the blocks
      (``None``: any layer row).
    proof: the name alone is not evidence enough: :func:`path_layers` reads the
      family as layers only when the structure proves it (``"same leaves"``: at
      least two members, numbered 0..n-1, each holding the same leaves, names and
      shapes, keras' auto-number suffixes ``_N`` aside); else it refuses.
  """

  kind: str
  name: str
  pattern: str
  shown: str
  example: str
  expect: str
  meaning: str
  where: str = "token"
  inner: str | None = None
  proof: str = ""

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
    Rule("paddle_layer", "encoder.layers.N", r"encoder\.layers",
         "`encoder.layers.N.` (Paddle name)",
         "ernie.encoder.layers.3.linear1.weight", "layer 3",
         "PaddleNLP: layer N (the key after `encoder.layers.`)", where="name"),
    Rule("paddle_embedding", "Paddle embedding", r"^(?=[^/]*embedding)[^/]*\.[^/]*$",
         "a Paddle name (dots, no `/`) containing `embedding`",
         "ernie.embeddings.word_embeddings.weight", "embedding", "PaddleNLP: embedding",
         where="name"),
    Rule("paddle_other", "Paddle other", r"^[^/]*\.[^/]*$", "any other Paddle name",
         "decoder.layers.3.linear1.weight", "other",
         "PaddleNLP: ratio 1 (Paddle reads only `encoder.layers.N`; path_layers warns about "
         "other numbered Paddle names)", where="name"),
    # Nested numbering: the blocks inside the stages are the layers, numbered through.
    Rule("stage", "stage_S/block_B", rf"^(?P<stem>stages?|block_groups?)_{_N}$",
         "`stage(s)_S/…_B`, `block_group_S/~/block_B`",
         "res_net50/~/block_group_1/~/block_0/~/conv_0/w", "layer 1.0",
         "stage S, block B (haiku ResNet): blocks numbered straight through the stages"),
    Rule("stage", "stages/S/layers/B", r"^(?P<stem>stages?|block_groups?)$",
         "`stages/S/layers/B`", "resnet/encoder/stages/1/layers/0/shortcut/convolution/kernel",
         "layer 1.0",
         "stage S, block B (HF ResNet/RegNet, timm ConvNeXt `stages.S.blocks.B`)",
         where="container"),
    Rule("stage", "layers/S/blocks/B", r"^(?P<stem>layers)$", "`layers/S/blocks/B`",
         "swin/layers/2/blocks/1/attn/qkv/kernel", "layer 2.1",
         "stage S, block B (Swin, timm `layers.S.blocks.B`)", where="container",
         inner=r"^blocks?$"),
    Rule("stage", "layers_S/blocks_B", rf"^(?P<stem>layers)_{_N}$", "`layers_S/blocks_B`",
         "params/layers_1/blocks_0/mlp/kernel", "layer 1.0", "stage S, block B (Flax names)",
         inner=r"^blocks?$"),
    # Numbered layers.
    Rule("layer", "layers_N", rf"^(?P<stem>{_LAYER_STEMS})_{_N}$",
         "`layers_N`, `layer_N`, `block(s)_N`, `resblocks_N`",
         "params/encoder/layers_3/attention/query/kernel", "layer 3",
         "Flax auto-names and `nn.Sequential` (`layers_N`), haiku `~/layer_N`, MaxText/T5X; "
         "`layers_C/layers_B` (the same key nested directly) is chunk C, block B"),
    Rule("layer", "encoderblock_N", rf"^(?P<stem>(?:[a-z0-9]+_)*(?:encoder|decoder|transformer"
         rf"|encoderdecoder)_?(?:block|layer)s?)_{_N}$",
         "`encoderblock_N`, `encoderdecoderblock_N`, `encoder_layer_N`, `decoder_block_N`, "
         "`decoder_layer_N`, `transformer_block_N`, `transformer_layer_N`, with a prefix: "
         "`*_encoder_block_N`, `transformer_encoder_layer_N`, `transformer_decoder_layer_N`",
         "text_encoder/text_encoder_encoder_block_1/attention/query/kernel", "layer 1",
         "big_vision / flax WMT example; keras-hub (`transformer_layer_N`, `decoder_block_N`, "
         "CLIP/SigLIP `<tower>_encoder_block_N`, T5/BART/Whisper `transformer_encoder_layer_N` "
         "and `transformer_decoder_layer_N`, DeBERTa `disentangled_attention_encoder_layer_N`)"),
    Rule("layer", "<Name>Layer_N",
         rf"^(?P<stem>(?!Scan)(?:[A-Z][A-Za-z0-9]*)?(?:Block|Layer))_{_N}$",
         "`<Name>Block_N`, `<Name>Layer_N`, `Block_N`", "params/BertLayer_2/attention/query/kernel",
         "layer 2", "Flax auto-names of a block class: `BertLayer_N`, `TransformerLayer_N`, "
         "`DecoderLayer_N`, `MixerBlock_N`, `ResNetBlock_N`"),
    Rule("layer", "<name>_block_N", rf"^(?P<stem>[a-z][a-z0-9]*(?:_[a-z0-9]+)*_(?:block|layer))"
         rf"_{_N}$", "`<name>_block_N`, `<name>_layer_N` (with proof)",
         "f_net_backbone/f_net_layer_1/mixing_layer_norm/gamma", "layer 1",
         "other snake-case numbered blocks (keras-hub `f_net_layer_N`, `rwkv_layer_N`, "
         "`conformer_block_N`): layers only when at least two members numbered 0..n-1 hold the "
         "same leaves (names and shapes); else refused", proof="same leaves"),
    Rule("layer", "resblocks.N", rf"^(?P<stem>{_LAYER_STEMS})\.{_N}$",
         "`resblocks.N`, `layers.N`, `blocks.N` as one key",
         "params/text/transformer/resblocks.1/mlp/c_fc/kernel", "layer 1",
         "a module named with a dot (scenic CLIP's `resblocks.N`)"),
    Rule("layer", "layerN", rf"^(?P<stem>layer|block){_N}$", "`layerN`, `blockN` (no `_`)",
         "block1/unit1/conv1/kernel", "layer 1",
         "numbered without `_`; path_layers refuses a family that has no index 0"),
    Rule("layer", "layer/N", r"^(?P<stem>layers?)$", "`layer/N`, `layers/N`",
         "params/bert/encoder/layer/5/attention/self/query/kernel", "layer 5",
         "HF BERT/RoBERTa/ELECTRA/ViT/BEiT `layer/N`; HF Llama/BART/CLIP/Whisper, `nnx.List` "
         "`layers/N`; `layers/C/layers/B` (the same key nested directly) is chunk C, block B",
         where="container"),
    Rule("layer", "h/N", r"^(?P<stem>h)$", "`h/N`", "params/transformer/h/11/attn/c_attn/kernel",
         "layer 11", "HF GPT-2", where="container"),
    Rule("layer", "blocks/N", r"^(?P<stem>blocks?|resblocks?|attention_blocks|transformer_blocks?"
         r"|(?:encoder|decoder)_?(?:layers?|blocks?))$",
         "`block(s)/N`, `resblocks/N`, `attention_blocks/N`",
         "params/encoder/block/2/layer/1/DenseReluDense/wi/kernel", "layer 2",
         "HF T5 `block/N` (its `layer/M` are sub-layers), equinox `attention_blocks/N`, "
         "timm `blocks.N.` (a flat dict of timm names is read with `.` as `/`); "
         "`blocks/C/blocks/B` (chunks or stages of blocks) is chunk C, block B, flattened when "
         "every chunk's blocks are numbered 0.. and hold the same leaves", where="container"),
    # Stacked (scanned) layers.
    Rule("stack", "ScanBlock_0", r"^(?P<stem>Scan[A-Z]\w*?(?:_[0-9]+)?|scan|scanned_layers"
         r"|scanned_blocks)$", "`ScanBlock_0`, `scan`, `scanned_layers`",
         "params/ScanBlock_0/Dense_0/kernel", "other [stack params/ScanBlock_0]",
         "`nn.scan(Block)`: every layer in one leaf (stacked='auto', axis 0)", where="key"),
    Rule("stack", "layers (stacked)", rf"^(?P<stem>{_STACK_KEYS})$",
         "`layers`, `blocks`, `encoderblock` (no `N` after)",
         "params/decoder/layers/mlp/kernel", "other [stack params/decoder/layers]",
         "`nnx.vmap`/`nnx.scan`/big_vision scan: with stacked='auto', used only when the tree "
         "has no numbered layers and every leaf under it has the same axis-0 length; a lone "
         "`<Name>_0` right under it (`blocks/EncoderBlock_0`: nn.scan's auto-named body) whose "
         "leaves share one axis-0 length > 1 is the scanned body, not layer 0",
         where="key"),
    # Several stacks.
    Rule("tower", "tower", r"(?i)encoder|decoder|text|vision|visual|image|img|txt|audio|speech"
         r"|tower", "`encoder`/`decoder`, `text_model`/`vision_model`, ...",
         "params/text_model/encoder/layers/2/mlp/fc1/kernel", "layer 2",
         "numbered families under different towers are separate stacks, each with its own "
         "depth; other sets of several families are refused"),
    # Outside the layers, only named parts (the role vocabulary): an output projection anywhere
    # in the path, else the first key from the root that a row matches. Nothing else is placed.
    Rule("head", "output projection", r"^(?:unembed\w*|embed_out|reverse_embeddings?"
         r"|output_embeddings?|output_projection|lm_head)$",
         "`unembed`, `embed_out`, `reverse_embeddings`, `output_projection`, `lm_head` "
         "(anywhere in the path)", "params/token_embedding/reverse_embeddings", "head",
         "an output projection is the head even inside the embedding module (keras-hub's "
         "untied `ReversibleEmbedding`); a tied table is one leaf: the embedding", where="any"),
    Rule("head", "head", r"(?i)head", "a key containing `head`", "params/head/kernel", "head",
         "`head`, `conv_head`, `fc_head`, `MAPHead_0`"),
    Rule("head", "final norm", r"^(?:ln_f|ln_final|ln_post|norm_f|norm_post|final_\w+"
         r"|(?:[a-z0-9]+_)*post_\w*norm\w*|norm|layernorm|fc_norm"
         r"|(?:encoder|decoder|encoderdecoder)_norm"
         r"|(?:\w+_)?output_(?:layer_?)?norm\w*)$",
         "`ln_f`, `final_layer_norm`, `final_*`, `norm`, `layernorm`, `post_layernorm`, "
         "`ln_post`, `<tower>_post_layer_norm`, `norm_f`, `fc_norm`, `encoder_norm`, "
         "`*output_layernorm`",
         "params/transformer/ln_f/scale", "head",
         "the norm after the last layer (GPT-2 `ln_f`, T5/CLIP `final_layer_norm`, Llama/timm "
         "`norm`, HF ViT `layernorm`, flax ViT `encoder_norm`, keras-hub "
         "`sequence_output_layernorm`); not `layer_norm` or `ln`, which come before the layers "
         "in some models (HF wav2vec2 without do_stable_layer_norm)"),
    Rule("head", "pooler", r"^(?:classifier|pooler|pooled\w*|\w*predictions|qa_outputs"
         r"|logit\w*|attn_pool|attention_pool|vocab_(?:transform|layer_norm|projector))$",
         "`classifier`, `pooler`, `pooled_dense`, `*predictions`, `logits`, `logit_scale`, "
         "`attn_pool`, `vocab_projector`", "params/classifier/kernel", "head",
         "poolers, classifiers, logits, MLM heads (HF BERT's `cls/predictions`, ELECTRA's "
         "`discriminator_predictions`, DistilBERT's `vocab_transform`/`vocab_projector`, CLIP's "
         "`logit_scale`, flax WMT's `logitdense`)"),
    Rule("head", "projection", r"^(?:(?:text|visual|vision|image|audio)_projection|project_out"
         r"|proj_out|enc_to_dec_proj)$",
         "`text_projection`, `visual_projection`, `project_out`, `enc_to_dec_proj`",
         "params/visual_projection/kernel", "head",
         "CLIP's projections, OPT's `project_out`, HF EncoderDecoder's `enc_to_dec_proj` (after "
         "the encoder); `feature_projection`, `project_in` are the input stage"),
    Rule("shared", "shared rel-pos bias", r"^(?:rel_pos_bias|shared_rel_pos_bias"
         r"|relative_position_bias|rel_embeddings?|relative_(?:position_)?embeddings?)$",
         "`rel_pos_bias`, `rel_embeddings` outside the layers",
         "beit/rel_pos_bias/relative_position_bias_table", "shared",
         "a relative-position bias or table shared by every layer (BEiT "
         "`use_shared_rel_pos_bias`, DeBERTa's `encoder/rel_embeddings`): "
         "ratio 1, as BEiT's `get_num_layer_for_vit`"),
    Rule("embedding", "input stage", r"^(?:feature_extractor|feature_projection|project_in)$",
         "`feature_extractor`, `feature_projection`, `project_in`",
         "params/wav2vec2/feature_projection/projection/kernel", "embedding",
         "wav2vec2's conv feature extractor and projection, OPT's `project_in`"),
    Rule("embedding", "embed", r"(?i)embed|^wte$|^wpe$", "a key containing `embed`; `wte`, `wpe`",
         "params/bert/embeddings/word_embeddings/embedding", "embedding",
         "token/position/patch embeddings (`embed_tokens`, `tok_embeddings`, `pos_embed`, "
         "`patch_embed`, `Embed_0`, `embedder`, `embed_ln`, `layernorm_embedding`)"),
    Rule("embedding", "emb", r"(?i)(?:^|_|pos|tok)embs?(?:_|$)",
         "`emb`/`embs` as a word: `pos_emb`, `pos_embs`, `posemb`, `tok_emb`",
         "transformer/pos_embs", "embedding",
         "learned position/token embeddings without `embed` (haiku's `pos_embs`, nanoGPT's "
         "`tok_emb`/`pos_emb`)"),
    Rule("embedding", "tokens", r"^(?:cls|cls_token|class_token|reg_tokens?|register_tokens?"
         r"|mask_token|dist_token|distillation_token)$",
         "`cls`, `cls_token`, `reg_token`, `dist_token`, `mask_token` (the parameter)",
         "params/cls", "embedding",
         "class/register/distillation/mask tokens; only the parameter's own key (HF's "
         "`cls/predictions` MLM head is a head)", where="leaf"),
    Rule("embedding", "pre-norm", r"^(?:(?:[a-z0-9]+_)*pre_\w*(?:norm|ln)\w*|ln_pre|norm_pre"
         r"|prenorm\w*)$",
         "`pre_layer_norm`, `pre_layrnorm`, `pre_norm`, `ln_pre`, `norm_pre`, "
         "`<tower>_pre_layer_norm`",
         "params/vision_model/pre_layrnorm/scale", "embedding",
         "norms before the first layer (CLIP `pre_layrnorm`/`ln_pre`, timm `norm_pre`, keras-hub "
         "CLIP `vision_encoder_pre_layer_norm`)"),
    Rule("embedding", "stem", r"^(?:stem\w*|\w+_stem|conv_root|gn_root|bn_root|conv_init"
         r"|bn_init|initial_\w+|patchify\w*)$",
         "`stem`, `conv_root`, `gn_root`, `initial_conv`, `conv_init`",
         "res_net50/~/initial_conv/w", "embedding", "CNN stems (ResNet, BiT, haiku, flax)"),
    Rule("embedding", "conv1/conv2", r"^conv[12]$", "`conv1`, `conv2` outside the layers",
         "params/model/encoder/conv1/kernel", "embedding",
         "the convolutions in front of the layers (Whisper's conv1/conv2, torchvision ResNet's "
         "conv1); not `conv` or auto-numbered `Conv_N`, which may come after them"),
    Rule("other", "no evidence", r"", "anything else", "params/transformer/out/kernel", "other",
         "no evidence: beside layers, path_layers refuses it (the per-name "
         "`layerwise_lr_decay` gives it ratio 1, as Paddle)", where="name"),
)

RECOGNISED = (
    "The path rule (optax_ldl.rule_table_markdown()) recognises numbered layers "
    + ", ".join(r.shown for r in RULES if r.kind in ("stage", "layer"))
    + "; stacked (scanned) layers under "
    + ", ".join(r.shown for r in RULES if r.kind == "stack")
    + "; and Paddle names `encoder.layers.N`."
)

OUTSIDE = (
    "Outside the layers it places only named parts (optax_ldl.rule_table_markdown()): the "
    "embedding stage: " + "; ".join(r.shown for r in RULES if r.kind == "embedding")
    + ". After the layers (ratio 1): " + "; ".join(r.shown for r in RULES if r.kind == "head")
    + ". Shared by every layer (ratio 1): "
    + "; ".join(r.shown for r in RULES if r.kind == "shared") + "."
)

# How the evidence names the role rows' vocabularies.
ROLES = {"embedding": "embedding vocabulary", "head": "post-stack vocabulary",
         "shared": "shared vocabulary"}

FIXES = (
    "Fix it with one of:\n"
    "  layers=optax_ldl.trace_layers(fn, params, *example_args)  # layers from the forward "
    "pass, no naming rule\n"
    "  name_dict={path: name, ...}  # rename paths to a layout of the rule table (e.g. "
    "'encoder/layers_3/...', 'embeddings/...', 'head/...'), see optax_ldl.rule_table_markdown()\n"
    "  set_param_lr_fun=lambda decay, name_dict, n_layers, param: ...  # your own rule"
)


class LayerMatch(NamedTuple):
  """Where the default rule places one name.

  Attributes:
    kind: ``"layer"``, ``"embedding"``, ``"head"``, ``"shared"`` or ``"other"``
      (Paddle's "anything else", or a path name no row places).
    layer: the layer index; for nested numbering (stage ``S``, block ``B``),
      ``None``: the flat index needs the whole tree (:func:`path_layers`).
    indices: ``(N,)``, or ``(S, B)`` for nested numbering (stage rows, or the same
      numbered key nested directly: ``blocks/C/blocks/B``); ``()`` if not a layer.
    family: the numbered container's path (``params/encoder/layers`` for
      ``params/encoder/layers_3/...``; the stage container for nested numbering;
      ``"encoder.layers"`` for Paddle names); ``""`` if not a layer.
    inner: for nested numbering, the block container's path inside a stage
      (``layers`` for ``stages/S/layers/B``), else ``""``.
    stack: an unnumbered container that may hold scanned layers (the path up to
      it), else ``""``.
    rule: the index in :data:`RULES` of the row that decided.
    key: the keys that matched, as written in the path (``layers_3``,
      ``layer/3``, ``blocks/1/blocks/2``, ``wte``); ``""`` for the fallback.
  """

  kind: str
  layer: int | None = None
  indices: tuple[int, ...] = ()
  family: str = ""
  inner: str = ""
  stack: str = ""
  rule: int = -1
  key: str = ""


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
  | row | pattern | kind | example | classify gives | meaning |
  """
  lines = ["| row | pattern | kind | example | classify gives | meaning |",
           "|---|---|---|---|---|---|"]
  for row in RULES:
    lines.append(f"| {row.name} | {row.shown} | {row.kind} | `{row.example}` | {row.expect} | "
                 f"{row.meaning} |")
  return "\n".join(lines)
