"""The default layer rule on Paddle names and the common JAX layouts."""

import jax
import jax.numpy as jnp
import pytest

import optax_ldl
from optax_ldl import LayerMatch


@pytest.mark.parametrize("name, expected", [
    # Paddle static names: Paddle's exact rule.
    ("encoder.layers.3.linear1.weight", LayerMatch("layer", 3)),
    ("ernie.encoder.layers.11.norm2.bias", LayerMatch("layer", 11)),
    ("embeddings.word_embeddings.weight", LayerMatch("embedding")),
    ("decoder.layers.3.linear1.weight", LayerMatch("other")),  # Paddle: not encoder layers.
    ("pooler.dense.weight", LayerMatch("other")),
    # Flax auto-names, MaxText/T5X, big_vision ViT.
    ("params/encoder/layers_3/attention/query/kernel", LayerMatch("layer", 3)),
    ("params/Encoder_0/layer_7/mlp/kernel", LayerMatch("layer", 7)),
    ("params/blocks_2/attn/qkv/kernel", LayerMatch("layer", 2)),
    ("params/Transformer/encoderblock_10/MlpBlock_0/Dense_0/kernel", LayerMatch("layer", 10)),
    ("params/encoder/encoder_layer_4/kernel", LayerMatch("layer", 4)),
    # HF-Flax BERT, GPT-2, nnx.List.
    ("bert/encoder/layer/5/attention/self/query/kernel", LayerMatch("layer", 5)),
    ("transformer/h/11/attn/c_attn/kernel", LayerMatch("layer", 11)),
    ("layers/0/linear/kernel", LayerMatch("layer", 0)),
    # Embedding tables.
    ("bert/embeddings/word_embeddings/embedding", LayerMatch("embedding")),
    ("transformer/wte/embedding", LayerMatch("embedding")),
    ("transformer/wpe/embedding", LayerMatch("embedding")),
    ("params/Transformer/posembed_input/pos_embedding", LayerMatch("embedding")),
    ("params/Embed_0/embedding", LayerMatch("embedding")),
    # A layer wins over an embedding-like name inside it, as in Paddle.
    ("params/layers_2/rel_pos_embedding", LayerMatch("layer", 2)),
    # Not layers: norms, heads, Dense_N.
    ("params/Dense_0/kernel", LayerMatch("other")),
    ("params/layer_norm/scale", LayerMatch("other")),
    ("classifier/kernel", LayerMatch("other")),
])
def test_classify(name, expected):
  assert optax_ldl.classify(name) == expected


def test_ratios_follow_paddle():
  decay, n = 0.9, 12
  assert optax_ldl.layerwise_lr_decay(decay, None, n, "layers_0/w") == pytest.approx(decay**12)
  assert optax_ldl.layerwise_lr_decay(decay, None, n, "layers_11/w") == pytest.approx(decay)
  assert optax_ldl.layerwise_lr_decay(decay, None, n, "wte/embedding") == pytest.approx(
      decay**13)
  assert optax_ldl.layerwise_lr_decay(decay, None, n, "head/kernel") == 1.0


def test_param_forms_and_name_dict():
  path = (jax.tree_util.DictKey("encoder"), jax.tree_util.DictKey("layers_2"))
  param = optax_ldl.Param("x", shape=(2,))
  by_path = optax_ldl.layerwise_lr_decay(0.5, None, 3, path)
  by_param = optax_ldl.layerwise_lr_decay(0.5, {"x": "encoder.layers.2.w"}, 3, param)
  assert by_path == by_param == 0.5
  assert param.optimize_attr["learning_rate"] == 1.0  # Paddle 2.8 returns, never mutates.
  with pytest.raises(ValueError, match="name_dict has no entry for parameter 'y'"):
    optax_ldl.layerwise_lr_decay(0.5, {"x": "a"}, 3, "y")
  with pytest.raises(TypeError, match="param must be a name"):
    optax_ldl.layerwise_lr_decay(0.5, None, 3, 3.0)


def test_layer_groups_are_labels_of_equal_ratio():
  params = {"embeddings": jnp.ones(1), "layers_0": jnp.ones(1), "layers_1": jnp.ones(1),
            "head": jnp.ones(1)}
  groups = optax_ldl.layer_groups(params, layerwise_decay=0.5, n_layers=2,
                                  set_param_lr_fun=None, name_dict=None)
  assert groups.labels == {"embeddings": "embedding", "layers_0": "layer_0",
                           "layers_1": "layer_1", "head": "other"}
  assert groups.ratios == {"embedding": 0.125, "layer_0": 0.25, "layer_1": 0.5, "other": 1.0}
  one = optax_ldl.layer_groups(params, layerwise_decay=1.0, n_layers=2,
                               set_param_lr_fun=None, name_dict=None)
  assert set(jax.tree.leaves(one.labels)) == {"all"} and one.ratios == {"all": 1.0}


def test_layer_index_equal_to_n_layers_is_allowed_like_paddle():
  # Paddle gives encoder.layers.12 ratio decay**0 = 1 with n_layers=12; 13 would exceed 1.
  assert optax_ldl.layerwise_lr_decay(0.9, None, 12, "encoder.layers.12.x") == 1.0
  with pytest.raises(ValueError, match="'layers_13/w' is in layer 13, but n_layers=12"):
    optax_ldl.layerwise_lr_decay(0.9, None, 12, "layers_13/w")
