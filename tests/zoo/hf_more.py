"""More Hugging Face ``transformers`` Flax models (issue 16's zoo growth): layouts the first set
(``hf.py``) does not have.

Conventions, as in the first set: a shared or tied embedding is in the embedding stage (of the
deepest stack when several read it); T5's relative-position biases live in block 0 of their stack
and stay there; a value computed outside the layers and read by every layer (BEiT's shared
relative-position bias, an encoder-to-decoder projection) is with the head (ratio 1), as BEiT's
reference code does; anything applied after a stack's last layer is the head.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np

from tests.zoo.core import HEAD, Built, ZooModel, allow_rank_promotion, arrays, emb, fill, layer
from tests.zoo.hf import _ids, _init, _model

I = r"(?P<i>\d+)"  # noqa: E741  (a layer index in a regex)


def _pixels(size=16, batch=2):
  return jnp.asarray(np.random.default_rng(0).standard_normal((batch, 3, size, size)), jnp.float32)


def _patch_clip(module):
  """transformers 4.57's Flax T5 family calls ``jnp.clip(a_max=)``, which jax 0.10 removed."""
  if isinstance(module.jnp, types.ModuleType) and module.jnp is jnp:

    class _Jnp(types.ModuleType):
      def __getattr__(self, name):
        return getattr(jnp, name)

      @staticmethod
      def clip(x, a_min=None, a_max=None, **kw):
        return jnp.clip(x, min=a_min, max=a_max, **kw)

    module.jnp = _Jnp("jnp")


def _lm(model):
  return allow_rank_promotion(lambda p, ids: arrays(model(ids, params=p)))


def electra_make():
  from transformers import ElectraConfig, FlaxElectraForPreTraining

  # embedding_size 8 < hidden 16: the embeddings are projected by `electra/embeddings_project`,
  # a sibling of `electra/embeddings` applied before layer 0.
  model = _model(FlaxElectraForPreTraining, ElectraConfig(
      vocab_size=64, embedding_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
      intermediate_size=32, max_position_embeddings=32))
  return Built(_init(model), _lm(model), (_ids(),))


def distilbert_make():
  from transformers import DistilBertConfig, FlaxDistilBertForMaskedLM

  model = _model(FlaxDistilBertForMaskedLM, DistilBertConfig(
      vocab_size=64, dim=16, n_layers=3, n_heads=2, hidden_dim=32, max_position_embeddings=32))
  return Built(_init(model), _lm(model), (_ids(),))


def opt_make():
  from transformers import FlaxOPTForCausalLM, OPTConfig

  # word_embed_proj_dim 8 != hidden 16: project_in after the token embedding, project_out after
  # the final norm (before the tied LM head), as in OPT-350m.
  model = _model(FlaxOPTForCausalLM, OPTConfig(
      vocab_size=64, hidden_size=16, word_embed_proj_dim=8, num_hidden_layers=3,
      num_attention_heads=2, ffn_dim=32, max_position_embeddings=32, do_layer_norm_before=True))
  return Built(_init(model), _lm(model), (_ids(),))


def bloom_make():
  from transformers import BloomConfig, FlaxBloomForCausalLM

  model = _model(FlaxBloomForCausalLM,
                 BloomConfig(vocab_size=64, hidden_size=16, n_layer=3, n_head=2))
  return Built(_init(model), _lm(model), (_ids(),))


def beit_make():
  from transformers import BeitConfig, FlaxBeitForImageClassification

  model = _model(FlaxBeitForImageClassification, BeitConfig(
      hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
      image_size=16, patch_size=8, num_labels=3, use_shared_relative_position_bias=True,
      use_relative_position_bias=False, use_mean_pooling=True, layer_scale_init_value=0.1))
  fn = allow_rank_promotion(lambda p, px: arrays(model(px, params=p)))
  return Built(_init(model), fn, (_pixels(),))


def dinov2_make():
  from transformers import Dinov2Config, FlaxDinov2ForImageClassification

  # use_mask_token=False: the Flax port never reads the mask token (no bool_masked_pos input).
  model = _model(FlaxDinov2ForImageClassification, Dinov2Config(
      hidden_size=16, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2, image_size=16,
      patch_size=8, num_labels=3, layerscale_value=0.1, use_mask_token=False))
  fn = allow_rank_promotion(lambda p, px: arrays(model(px, params=p)))
  return Built(_init(model), fn, (_pixels(),))


def longt5_make():
  from transformers import FlaxLongT5ForConditionalGeneration, LongT5Config
  from transformers.models.longt5 import modeling_flax_longt5

  _patch_clip(modeling_flax_longt5)
  model = _model(FlaxLongT5ForConditionalGeneration, LongT5Config(
      vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=3, num_decoder_layers=2, num_heads=2,
      relative_attention_num_buckets=8, encoder_attention_type="transient-global", local_radius=2,
      global_block_size=4, tie_word_embeddings=False))
  fn = allow_rank_promotion(
      lambda p, ids, dec: arrays(model(ids, decoder_input_ids=dec, params=p)))
  return Built(_init(model), fn, (_ids(8), _ids(5, seed=1)))


def vision_encoder_decoder_make():
  from transformers import (
    FlaxVisionEncoderDecoderModel,
    GPT2Config,
    VisionEncoderDecoderConfig,
    ViTConfig,
  )

  # A TrOCR-like pair: a ViT encoder (hidden 16) read by a GPT-2 decoder (hidden 8) through
  # cross-attention, after `enc_to_dec_proj` (16 -> 8).
  config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
      ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                image_size=16, patch_size=8),
      GPT2Config(vocab_size=64, n_embd=8, n_layer=3, n_head=2, n_positions=32))
  # This class refuses _do_init=False; built under eval_shape, its init stays abstract (the
  # instance keeps abstract params it never reads: every call passes params=).
  holder = []

  def build():
    holder.append(FlaxVisionEncoderDecoderModel(config, seed=0))  # pyright: ignore[reportArgumentType]
    return dict(holder[0].params)

  shapes = jax.eval_shape(build)
  model = holder[0]
  fn = allow_rank_promotion(
      lambda p, px, dec: arrays(model(px, decoder_input_ids=dec, params=p)))
  return Built(fill(shapes), fn, (_pixels(), _ids(5, seed=1)))


LT_ENC, LT_DEC = "encoder/block", "decoder/block"
VED_ENC, VED_DEC = "encoder/encoder/layer", "decoder/transformer/h"

MODELS = (
    ZooModel(
        "hf_electra_pretraining", electra_make,
        # embeddings_project (8 -> 16) runs after the embedding LayerNorm, before layer 0.
        ((r"electra/(embeddings|embeddings_project)/.*", emb()),
         (rf"electra/encoder/layer/{I}/.*", layer()),
         (r"discriminator_predictions/.*", HEAD)),
        {"": 3}, "exact_or_raise",
        "ELECTRA discriminator: embedding_size < hidden_size, embeddings_project beside "
        "embeddings, discriminator_predictions head"),
    ZooModel(
        "hf_distilbert_mlm", distilbert_make,
        ((r"distilbert/embeddings/.*", emb()),
         (rf"distilbert/transformer/layer/{I}/.*", layer()),
         # vocab_projector is the word embedding (tied) plus its own bias: the head.
         (r"vocab_(transform|layer_norm|projector)/.*", HEAD)),
        {"": 3}, "exact_or_raise",
        "DistilBERT MLM: transformer/layer/N, top-level vocab_transform / vocab_layer_norm / "
        "vocab_projector (tied, bias only) head"),
    ZooModel(
        "hf_opt_project_in_out", opt_make,
        ((r"model/decoder/(embed_tokens|embed_positions|project_in)/.*", emb()),
         (rf"model/decoder/layers/{I}/.*", layer()),
         # final_layer_norm, then project_out (16 -> 8), then the tied LM head.
         (r"model/decoder/(final_layer_norm|project_out)/.*", HEAD)),
        {"": 3}, "exact_or_raise",
        "OPT: project_in / project_out around the stack (word_embed_proj_dim != hidden), "
        "offset position table, tied LM head"),
    ZooModel(
        "hf_bloom_lm", bloom_make,
        # word_embeddings_layernorm: a norm applied to the embeddings, before layer 0.
        ((r"transformer/(word_embeddings|word_embeddings_layernorm)/.*", emb()),
         (rf"transformer/h/{I}/.*", layer()),
         (r"transformer/ln_f/.*", HEAD)),
        {"": 3}, "exact",
        "BLOOM: ALiBi (no position table), embedding LayerNorm before the layers, fused QKV, "
        "tied LM head"),
    ZooModel(
        "hf_beit_shared_bias", beit_make,
        ((r"beit/embeddings/.*", emb()),
         (rf"beit/encoder/layer/{I}/.*", layer()),
         # The shared relative-position bias table: one module of the encoder, evaluated before
         # each layer and added to every layer's attention: BEiT's own recipe gives it ratio 1.
         (r"beit/encoder/relative_position_bias/.*", HEAD),
         (r"beit/pooler/.*|classifier/.*", HEAD)),
        {"": 3}, "exact_or_raise",
        "BEiT: shared relative-position bias (encoder level, read by every layer) -> ratio 1, "
        "layer scale lambda_1/lambda_2, mean-pooling LayerNorm"),
    ZooModel(
        "hf_dinov2_cls", dinov2_make,
        ((r"dinov2/embeddings/.*", emb()),
         (rf"dinov2/encoder/layer/{I}/.*", layer()),
         (r"dinov2/layernorm/.*|classifier/.*", HEAD)),
        {"": 3}, "exact",
        "DINOv2 classifier: layer_scale1/lambda1, bare position_embeddings param, class token + "
        "mean of patch tokens into the classifier"),
    ZooModel(
        "hf_longt5_tglobal_3x2", longt5_make,
        # The shared embedding feeds both stacks: the deepest (the encoder, 3) decides.
        ((r"shared/embedding", emb(LT_ENC)),
         # Block 0 of each stack holds its relative-position biases (and, in the encoder, the
         # transient-global one): T5's convention, they stay in layer 0.
         (rf"encoder/block/{I}/.*", layer(LT_ENC)),
         (rf"decoder/block/{I}/.*", layer(LT_DEC)),
         (r"(encoder|decoder)/final_layer_norm/weight|lm_head/kernel", HEAD)),
        {LT_ENC: 3, LT_DEC: 2}, "exact",
        "LongT5 transient-global encoder 3 / decoder 2: global_relative_attention_bias and "
        "global_input_layer_norm, untied lm_head"),
    ZooModel(
        "hf_vit_gpt2_encoder_decoder", vision_encoder_decoder_make,
        ((r"encoder/embeddings/.*", emb(VED_ENC)),
         (rf"encoder/encoder/layer/{I}/.*", layer(VED_ENC)),
         (r"encoder/(layernorm|pooler)/.*", HEAD),
         # Applied once to the encoder's output, read by every decoder layer's cross-attention.
         (r"enc_to_dec_proj/.*", HEAD),
         (r"decoder/transformer/(wte|wpe)/.*", emb(VED_DEC)),
         (rf"decoder/transformer/h/{I}/.*", layer(VED_DEC)),
         (r"decoder/transformer/ln_f/.*", HEAD)),
        {VED_ENC: 2, VED_DEC: 3}, "exact_or_raise",
        "VisionEncoderDecoder ViT (2) -> GPT-2 (3): two libraries' layouts under encoder/ and "
        "decoder/, cross-attention, enc_to_dec_proj"),
)
