"""More keras-hub models on the JAX backend (issue 16's zoo growth).

Keras variable paths (``v.path``) are not unique across a model's sub-models (CLIP's two towers
both have ``encoder_block_0/...``; T5's relative biases are both ``self_attention/embeddings``), so
these entries name each variable by the chain of layers that own it (``layer.name/.../v.name``).
Auto-numbered names (``t5_layer_norm_4``, ``res_net_backbone``) count per process; the rules
match any number.

Conventions: a tied (reversible) embedding is in the embedding stage; an untied output projection
kept inside the embedding layer (``token_embedding/reverse_embeddings``) is the head; T5's
relative-position bias is in layer 0 of its stack; a pre-norm applied to the embeddings before the
first layer (CLIP's ``pre_layer_norm``) is in the embedding stage; a projection shortcut inside a
residual block is part of that block.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from tests.zoo.core import HEAD, Built, ZooModel, emb, layer, nested
from tests.zoo.others import _keras_backend

D, MLP, V = 16, 32, 64
I = r"(?P<i>\d+)"  # noqa: E741  (a layer index in a regex)


def _ids(n=8, batch=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(1, V, (batch, n)), jnp.int32)


def _owned(layer, prefix="", seen=None):
  """``{owner chain/variable name: variable}`` for the trainable variables of ``layer``, depth
  first; a layer tracked twice (a task's ``token_embedding``, also in its backbone) keeps the
  first chain."""
  seen = set() if seen is None else seen
  out = {}
  for v in layer._trainable_variables:
    if id(v) not in seen:
      seen.add(id(v))
      out[prefix + v.name] = v
  for sub in layer._layers:
    out.update(_owned(sub, f"{prefix}{sub.name}/", seen))
  return out


def _keras_tree(model, *args):
  named = _owned(model)
  order = list(model.trainable_variables)
  assert len(named) == len(order), "every trainable variable must have one owner path"
  key_of = {id(v): k for k, v in named.items()}
  keys = [key_of[id(v)] for v in order]
  params = {k: jnp.asarray(named[k].value) for k in keys}
  non_trainable = [v.value for v in model.non_trainable_variables]

  def fn(p, *a):
    return model.stateless_call([p[k] for k in keys], non_trainable, *a)[0]

  return Built(params, fn, args)


def keras_resnet_make():
  _keras_backend()
  import keras_hub

  # keras-hub's basic-block ResNet (v1): its first stack must have 64 filters (identity shortcut
  # from the 64-filter stem); stack 1 opens with a strided block and a 1x1 projection shortcut.
  backbone = keras_hub.models.ResNetBackbone(
      input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 16],
      stackwise_num_blocks=[2, 2], stackwise_num_strides=[1, 2], block_type="basic_block",
      use_pre_activation=False, image_shape=(32, 32, 3))
  model = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=3)
  img = jnp.asarray(np.random.default_rng(0).standard_normal((2, 32, 32, 3)), jnp.float32)
  return _keras_tree(model, img)


def keras_clip_make():
  _keras_backend()
  import keras_hub

  vision = keras_hub.models.CLIPVisionEncoder(
      patch_size=8, hidden_dim=D, num_layers=2, num_heads=2, intermediate_dim=MLP,
      image_shape=(16, 16, 3), name="vision_encoder")
  text = keras_hub.models.CLIPTextEncoder(
      vocabulary_size=V, embedding_dim=D, hidden_dim=D, num_layers=3, num_heads=2,
      intermediate_dim=MLP, max_sequence_length=8, name="text_encoder")
  model = keras_hub.models.CLIPBackbone(vision, text, projection_dim=8)
  img = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 16, 3)), jnp.float32)
  return _keras_tree(model, {"images": img, "token_ids": _ids()})


def keras_mixtral_make():
  _keras_backend()
  import keras_hub

  backbone = keras_hub.models.MixtralBackbone(
      vocabulary_size=V, num_layers=2, num_query_heads=2, num_key_value_heads=1, hidden_dim=D,
      intermediate_dim=MLP, num_experts=4, top_k=2, sliding_window=8)
  # The causal LM applies the (untied) reverse embedding as its output layer.
  model = keras_hub.models.MixtralCausalLM(backbone=backbone, preprocessor=None)
  ids = _ids()
  return _keras_tree(model, {"token_ids": ids, "padding_mask": jnp.ones_like(ids)})


def keras_t5_make():
  _keras_backend()
  import keras_hub

  with warnings.catch_warnings():
    # keras-hub's T5 attention warns that it drops the Keras mask (it takes the padding mask as
    # an argument instead); the test suite turns warnings into errors, which would break the
    # functional model's build, so they are ignored while it is built and called.
    warnings.simplefilter("ignore", UserWarning)
    model = keras_hub.models.T5Backbone(
        vocabulary_size=V, num_layers=3, num_heads=2, hidden_dim=D, intermediate_dim=MLP,
        key_value_dim=8)
  enc, dec = _ids(8), _ids(5, seed=1)
  built = _keras_tree(model, {
      "encoder_token_ids": enc, "encoder_padding_mask": jnp.ones_like(enc),
      "decoder_token_ids": dec, "decoder_padding_mask": jnp.ones_like(dec)})

  def fn(p, *a):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", UserWarning)
      return built.fn(p, *a)

  return Built(built.params, fn, built.args)


# Named sub-models prefix their layers with their name: vision_encoder/vision_encoder_....
CV, CT = "vision_encoder/vision_encoder_encoder_block", "text_encoder/text_encoder_encoder_block"
T5E, T5D = "transformer_encoder_layer", "transformer_decoder_layer"

MODELS = (
    ZooModel(
        "keras_hub_resnet_flat_keys", keras_resnet_make,
        ((r"res_net_backbone(_\d+)?/conv1_(conv|bn)/.*", emb()),
         # One flat key per unit: stack<S>_block<B>_<k>_(conv|bn); k = 0 is the projection
         # shortcut of stack 1's first block, part of that block.
         (r"res_net_backbone(_\d+)?/stack(?P<s>\d+)_block(?P<b>\d+)_\d_(conv|bn)/.*",
          nested("", (2, 2))),
         (r"predictions/.*", HEAD)),
        {"": 4}, "exact_or_raise",
        "keras-hub ResNet (basic blocks) classifier: flat keys stack<S>_block<B>_<k>_conv "
        "flattened 0..3, conv1 stem, projection shortcut in its block, predictions head"),
    ZooModel(
        "keras_hub_clip_pre_norm", keras_clip_make,
        ((r"vision_encoder/vision_encoder_(embedding|pre_layer_norm)/.*", emb(CV)),
         (rf"{CV}_{I}/.*", layer(CV)),
         (r"text_encoder/text_encoder_embedding/.*", emb(CT)),
         (rf"{CT}_{I}/.*", layer(CT)),
         (r"(vision|text)_encoder/(vision|text)_encoder_layer_norm/.*", HEAD),
         (r"(vision|text)_projection/kernel|clip_head/logit_scale", HEAD)),
        {CV: 2, CT: 3}, "exact_or_raise",
        "keras-hub CLIP: two towers (2 and 3 layers), vision pre_layer_norm before the layers, "
        "class_embedding, projections and logit_scale"),
    ZooModel(
        "keras_hub_mixtral_moe_lm", keras_mixtral_make,
        ((r"mixtral_backbone(_\d+)?/token_embedding/embeddings", emb()),
         # The untied output projection lives in the embedding layer; it is applied last.
         (r"mixtral_backbone(_\d+)?/token_embedding/reverse_embeddings", HEAD),
         (rf"mixtral_backbone(_\d+)?/transformer_layer_{I}/.*", layer()),
         (r"mixtral_backbone(_\d+)?/sequence_output_layernorm/.*", HEAD)),
        {"": 2}, "exact_or_raise",
        "keras-hub Mixtral causal LM: sparse MoE with expert stacks (4, ...), router, untied "
        "reverse_embeddings inside token_embedding (the head)"),
    ZooModel(
        "keras_hub_t5_global_names", keras_t5_make,
        # The shared token embedding feeds both stacks (3 layers each).
        ((r"token_embedding/embeddings", emb(T5E)),
         # Layer 0 of each stack owns the relative-position bias (self_attention/embeddings).
         (rf"{T5E}_{I}/.*", layer(T5E)),
         (rf"{T5D}_{I}/.*", layer(T5D)),
         (r"(encoder|decoder)_output_layer_norm/weight", HEAD)),
        {T5E: 3, T5D: 3}, "exact",
        "keras-hub T5 3 / 3: norms auto-numbered across both stacks (t5_layer_norm_<k>), "
        "relative bias owned by layer 0 of each stack, shared embedding"),
)
