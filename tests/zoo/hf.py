"""Hugging Face ``transformers`` Flax models (4.x, the last major with Flax classes)."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np

from optax_ldl._src.layer_map import Placement
from tests.zoo.core import HEAD, Built, ZooModel, allow_rank_promotion, arrays, emb, fill, layer
from tests.zoo.core import nested as nested_layer

I = r"(?P<i>\d+)"  # noqa: E741  (a layer index in a regex)
S, B = r"(?P<s>\d+)", r"(?P<b>\d+)"


def _init(model):
  """The model's parameters, shaped by its own ``init_weights`` (abstractly) and filled."""
  shapes = jax.eval_shape(lambda: model.init_weights(jax.random.PRNGKey(0), model.input_shape))
  shapes = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), dict(shapes))
  return fill(shapes)


def _ids(n=8, vocab=64, batch=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(3, vocab, (batch, n)), jnp.int32)


def _patch_t5_clip():
  """transformers 4.57's Flax T5 calls ``jnp.clip(a_max=)``, which jax 0.10 removed."""
  from transformers.models.t5 import modeling_flax_t5 as t5

  module_jnp = getattr(t5, "jnp")  # noqa: B009  (a private import of transformers)
  if isinstance(module_jnp, types.ModuleType) and module_jnp is jnp:

    class _Jnp(types.ModuleType):
      def __getattr__(self, name):
        return getattr(jnp, name)

      @staticmethod
      def clip(x, a_min=None, a_max=None, **kw):
        return jnp.clip(x, min=a_min, max=a_max, **kw)

    setattr(t5, "jnp", _Jnp("jnp"))  # noqa: B010


def _model(cls, config):
  return cls(config, seed=0, _do_init=False)


def bert_make():
  from transformers import BertConfig, FlaxBertForMaskedLM

  model = _model(FlaxBertForMaskedLM, BertConfig(
      vocab_size=64, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
      intermediate_size=32, max_position_embeddings=32))
  fn = allow_rank_promotion(lambda p, ids: arrays(model(ids, params=p)))
  return Built(_init(model), fn, (_ids(),))


def gpt2_make():
  from transformers import FlaxGPT2LMHeadModel, GPT2Config

  model = _model(FlaxGPT2LMHeadModel, GPT2Config(
      vocab_size=64, n_embd=16, n_layer=3, n_head=2, n_positions=32))
  fn = allow_rank_promotion(lambda p, ids: arrays(model(ids, params=p)))
  return Built(_init(model), fn, (_ids(),))


def llama_make():
  from transformers import FlaxLlamaForCausalLM, LlamaConfig

  model = _model(FlaxLlamaForCausalLM, LlamaConfig(
      vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
      num_key_value_heads=1, intermediate_size=32, max_position_embeddings=32,
      tie_word_embeddings=False))
  fn = allow_rank_promotion(lambda p, ids: arrays(model(ids, params=p)))
  return Built(_init(model), fn, (_ids(),))


def t5_make():
  from transformers import FlaxT5ForConditionalGeneration, T5Config

  _patch_t5_clip()
  model = _model(FlaxT5ForConditionalGeneration, T5Config(
      vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=3, num_decoder_layers=2,
      num_heads=2, relative_attention_num_buckets=8, tie_word_embeddings=True))
  fn = allow_rank_promotion(
      lambda p, ids, dec: arrays(model(ids, decoder_input_ids=dec, params=p)))
  return Built(_init(model), fn, (_ids(8), _ids(5, seed=1)))


def bart_make():
  from transformers import BartConfig, FlaxBartForConditionalGeneration

  model = _model(FlaxBartForConditionalGeneration, BartConfig(
      vocab_size=64, d_model=16, encoder_layers=4, decoder_layers=2, encoder_attention_heads=2,
      decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
      max_position_embeddings=32))
  fn = allow_rank_promotion(
      lambda p, ids, dec: arrays(model(ids, decoder_input_ids=dec, params=p)))
  return Built(_init(model), fn, (_ids(8), _ids(5, seed=1)))


def clip_make():
  from transformers import CLIPConfig, FlaxCLIPModel

  model = _model(FlaxCLIPModel, CLIPConfig(
      text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                       num_attention_heads=2, max_position_embeddings=16),
      vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=6,
                         num_attention_heads=2, image_size=16, patch_size=8),
      projection_dim=8))
  pixels = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 16, 16)), jnp.float32)
  fn = allow_rank_promotion(lambda p, ids, px: arrays(model(ids, px, params=p)))
  return Built(_init(model), fn, (_ids(), pixels))


def vit_make():
  from transformers import FlaxViTForImageClassification, ViTConfig

  model = _model(FlaxViTForImageClassification, ViTConfig(
      hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
      image_size=16, patch_size=8, num_labels=3))
  pixels = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 16, 16)), jnp.float32)
  fn = allow_rank_promotion(lambda p, px: arrays(model(px, params=p)))
  return Built(_init(model), fn, (pixels,))


def whisper_make():
  from transformers import FlaxWhisperForConditionalGeneration, WhisperConfig

  model = _model(FlaxWhisperForConditionalGeneration, WhisperConfig(
      vocab_size=64, num_mel_bins=8, encoder_layers=3, decoder_layers=2,
      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
      decoder_ffn_dim=32, d_model=16, max_source_positions=16, max_target_positions=16,
      pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
      begin_suppress_tokens=None, suppress_tokens=None))
  features = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 32)), jnp.float32)
  fn = allow_rank_promotion(
      lambda p, x, dec: arrays(model(x, decoder_input_ids=dec, params=p)))
  return Built(_init(model), fn, (features, _ids(5, seed=1)))


def wav2vec2_make():
  from transformers import FlaxWav2Vec2Model, Wav2Vec2Config

  # The Flax port supports only do_stable_layer_norm=True (the encoder's norm after the layers).
  model = _model(FlaxWav2Vec2Model, Wav2Vec2Config(
      hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
      conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=4,
      num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True))
  audio = jnp.asarray(np.random.default_rng(0).standard_normal((2, 400)), jnp.float32)
  frames = (400 - 10) // 5 + 1
  frames = (frames - 3) // 2 + 1
  # Masking some frames makes the mask token (masked_spec_embed) part of the forward pass.
  mask = jnp.asarray(np.arange(frames)[None, :].repeat(2, 0) % 4 == 0)
  fn = allow_rank_promotion(
      lambda p, x, m: arrays(model(x, mask_time_indices=m, params=p)))
  return Built(_init(model), fn, (audio, mask))


def resnet_make():
  from transformers import FlaxResNetForImageClassification, ResNetConfig

  model = _model(FlaxResNetForImageClassification, ResNetConfig(
      num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[2, 2], layer_type="basic",
      num_labels=3))
  variables = _init(model)
  stats = variables["batch_stats"]
  pixels = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 32, 32)), jnp.float32)
  fn = allow_rank_promotion(
      lambda p, px: arrays(model(px, params={"params": p, "batch_stats": stats})))
  return Built(variables["params"], fn, (pixels,))


def albert_make():
  from transformers import AlbertConfig, FlaxAlbertModel

  model = _model(FlaxAlbertModel, AlbertConfig(
      vocab_size=64, embedding_size=8, hidden_size=16, num_hidden_layers=3,
      num_attention_heads=2, intermediate_size=32, max_position_embeddings=32))
  fn = allow_rank_promotion(lambda p, ids: arrays(model(ids, params=p)))
  return Built(_init(model), fn, (_ids(),))


ENC, DEC = "encoder/block", "decoder/block"
BART_ENC, BART_DEC = "model/encoder/layers", "model/decoder/layers"
CLIP_T, CLIP_V = "text_model/encoder/layers", "vision_model/encoder/layers"
WH_ENC, WH_DEC = "model/encoder/layers", "model/decoder/layers"

MODELS = (
    ZooModel(
        "hf_bert_mlm", bert_make,
        ((r"bert/embeddings/.*", emb()),
         (rf"bert/encoder/layer/{I}/.*", layer()),
         # The MLM head (its decoder is the word embedding, tied): after the last layer.
         (r"cls/predictions/.*", HEAD)),
        {"": 3}, "exact", "BERT, tied MLM decoder, cls/predictions head"),
    ZooModel(
        "hf_gpt2_lm", gpt2_make,
        ((r"transformer/(wte|wpe)/embedding", emb()),
         (rf"transformer/h/{I}/.*", layer()),
         (r"transformer/ln_f/.*", HEAD)),
        {"": 3}, "exact", "GPT-2, tied LM head (wte is embedding stage), final norm"),
    ZooModel(
        "hf_llama_lm", llama_make,
        ((r"model/embed_tokens/embedding", emb()),
         (rf"model/layers/{I}/.*", layer()),
         (r"model/norm/weight|lm_head/kernel", HEAD)),
        {"": 2}, "exact", "Llama (GQA, RMSNorm), untied lm_head"),
    ZooModel(
        "hf_t5_3x2", t5_make,
        # The shared embedding feeds both stacks: the deepest (the encoder, 3) decides.
        ((r"shared/embedding", emb(ENC)),
         (rf"encoder/block/{I}/.*", layer(ENC)),
         (rf"decoder/block/{I}/.*", layer(DEC)),
         (r"(encoder|decoder)/final_layer_norm/weight", HEAD)),
        {ENC: 3, DEC: 2}, "exact",
        "T5 encoder 3 / decoder 2: per-stack depth, shared embedding -> deepest stack, "
        "relative bias in block 0"),
    ZooModel(
        "hf_bart_4x2", bart_make,
        ((r"model/shared/embedding", emb(BART_ENC)),
         (r"model/encoder/(embed_positions|layernorm_embedding)/.*", emb(BART_ENC)),
         (r"model/decoder/(embed_positions|layernorm_embedding)/.*", emb(BART_DEC)),
         (rf"model/encoder/layers/{I}/.*", layer(BART_ENC)),
         (rf"model/decoder/layers/{I}/.*", layer(BART_DEC)),
         (r"final_logits_bias", HEAD)),
        {BART_ENC: 4, BART_DEC: 2}, "exact",
        "BART encoder 4 / decoder 2: each stack's own embedding stage, shared embedding"),
    ZooModel(
        "hf_clip_4x6", clip_make,
        ((r"text_model/embeddings/.*", emb(CLIP_T)),
         (r"vision_model/(embeddings/.*|pre_layrnorm/.*)", emb(CLIP_V)),
         (rf"text_model/encoder/layers/{I}/.*", layer(CLIP_T)),
         (rf"vision_model/encoder/layers/{I}/.*", layer(CLIP_V)),
         (r"text_model/final_layer_norm/.*|vision_model/post_layernorm/.*", HEAD),
         (r"(text|visual)_projection/kernel|logit_scale", HEAD)),
        {CLIP_T: 4, CLIP_V: 6}, "exact_or_raise",
        "CLIP two towers of depth 4 and 6, class_embedding, pre_layrnorm, projections"),
    ZooModel(
        "hf_vit_cls", vit_make,
        ((r"vit/embeddings/.*", emb()),
         (rf"vit/encoder/layer/{I}/.*", layer()),
         (r"vit/layernorm/.*|classifier/.*", HEAD)),
        {"": 2}, "exact", "ViT classifier: cls_token, patch and position embeddings"),
    ZooModel(
        "hf_whisper_3x2", whisper_make,
        ((r"model/encoder/(conv1|conv2|embed_positions)/.*", emb(WH_ENC)),
         # The decoder's token embedding is also the (tied) output projection: first use decides.
         (r"model/decoder/(embed_tokens|embed_positions)/.*", emb(WH_DEC)),
         (rf"model/encoder/layers/{I}/.*", layer(WH_ENC)),
         (rf"model/decoder/layers/{I}/.*", layer(WH_DEC)),
         (r"model/(encoder|decoder)/layer_norm/.*", HEAD)),
        {WH_ENC: 3, WH_DEC: 2}, "exact_or_raise",
        "Whisper encoder 3 / decoder 2: conv1/conv2 stem, tied decoder embedding"),
    ZooModel(
        "hf_wav2vec2", wav2vec2_make,
        ((r"(feature_extractor|feature_projection)/.*", emb()),
         (r"encoder/pos_conv_embed/.*|masked_spec_embed", emb()),
         (rf"encoder/layers/{I}/.*", layer()),
         (r"encoder/layer_norm/.*", HEAD)),
        {"": 2}, "exact_or_raise",
        "wav2vec2: conv feature extractor (numbered conv_layers) + projection + conv position "
        "embedding + mask token in the embedding stage"),
    ZooModel(
        "hf_resnet_2x2", resnet_make,
        ((r"resnet/embedder/.*", emb()),
         (rf"resnet/encoder/stages/{S}/layers/{B}/.*", nested_layer("", (2, 2))),
         (r"classifier/1/.*", HEAD)),
        {"": 4}, "exact_or_raise",
        "ResNet stages/S/layers/B flattened (0..3), stem, classifier/1 head"),
    ZooModel(
        "hf_albert_shared", albert_make,
        # One layer (albert_layer_groups/0/albert_layers/0) applied by all 3 layers: no single
        # layer, trace_layers refuses; pinned as the only layer (layer 0 of 1) it passes.
        ((r"embeddings/.*|encoder/embedding_hidden_mapping_in/.*", emb()),
         (r"encoder/albert_layer_groups/0/.*", Placement("layer", "", layer=0)),
         (r"pooler/.*", HEAD)),
        {"": 1}, "exact_or_raise",
        "ALBERT: one shared layer used by every layer: the documented shared-weight refusal, "
        "placed with overrides",
        refusal=r"(?s)shared weights.*albert_layer_groups/0/albert_layers/0.*applied 3 times",
        overrides={"encoder/albert_layer_groups/0/albert_layers/0": 0}),
)
