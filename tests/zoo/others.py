"""equinox, dm-haiku and keras-hub (JAX backend) models."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from tests.zoo.core import HEAD, Built, ZooModel, emb, fill, layer, nested

D, MLP, V = 16, 32, 64
I = r"(?P<i>\d+)"  # noqa: E741


def _image(size=16, batch=2, channels_last=True):
  shape = (batch, size, size, 3) if channels_last else (batch, 3, size, size)
  return jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)


def _ids(n=8, batch=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(1, V, (batch, n)), jnp.int32)


# ---------------------------------------------------------------- equinox (the docs' ViT)
def eqx_vit_make():
  import equinox as eqx

  class PatchEmbedding(eqx.Module):
    linear: eqx.nn.Linear
    patch: int = eqx.field(static=True)

    def __init__(self, patch, key):
      self.patch = patch
      self.linear = eqx.nn.Linear(3 * patch * patch, D, key=key)

    def __call__(self, x):  # (H, W, C) -> (N, D)
      p = self.patch
      h, w, c = x.shape
      x = x.reshape(h // p, p, w // p, p, c).transpose(0, 2, 1, 3, 4).reshape(-1, p * p * c)
      return jax.vmap(self.linear)(x)

  class AttentionBlock(eqx.Module):
    layer_norm1: eqx.nn.LayerNorm
    layer_norm2: eqx.nn.LayerNorm
    attention: eqx.nn.MultiheadAttention
    linear1: eqx.nn.Linear
    linear2: eqx.nn.Linear

    def __init__(self, key):
      k1, k2, k3 = jax.random.split(key, 3)
      self.layer_norm1 = eqx.nn.LayerNorm(D)
      self.layer_norm2 = eqx.nn.LayerNorm(D)
      self.attention = eqx.nn.MultiheadAttention(2, D, key=k1)
      self.linear1 = eqx.nn.Linear(D, MLP, key=k2)
      self.linear2 = eqx.nn.Linear(MLP, D, key=k3)

    def __call__(self, x):
      y = jax.vmap(self.layer_norm1)(x)
      x = x + self.attention(y, y, y)
      y = jax.vmap(self.layer_norm2)(x)
      return x + jax.vmap(lambda t: self.linear2(jax.nn.gelu(self.linear1(t))))(y)

  class VisionTransformer(eqx.Module):
    patch_embedding: PatchEmbedding
    positional_embedding: jax.Array
    cls_token: jax.Array
    attention_blocks: list
    norm: eqx.nn.LayerNorm
    mlp: eqx.nn.MLP

    def __init__(self, key):
      keys = jax.random.split(key, 7)
      self.patch_embedding = PatchEmbedding(8, keys[0])
      self.positional_embedding = jax.random.normal(keys[1], (5, D))
      self.cls_token = jax.random.normal(keys[2], (1, D))
      self.attention_blocks = [AttentionBlock(k) for k in keys[3:6]]
      self.norm = eqx.nn.LayerNorm(D)
      self.mlp = eqx.nn.MLP(D, 3, MLP, depth=2, key=keys[6])

    def __call__(self, img):
      x = jnp.concatenate([self.cls_token, self.patch_embedding(img)], axis=0)
      x = x + self.positional_embedding
      for block in self.attention_blocks:
        x = block(x)
      return self.mlp(self.norm(x[0]))

  model = eqx.filter_eval_shape(VisionTransformer, jax.random.key(0))
  params, static = eqx.partition(model, lambda x: isinstance(x, jax.ShapeDtypeStruct))
  params = fill(params)
  return Built(params, lambda p, x: jax.vmap(eqx.combine(p, static))(x), (_image(),))


# ---------------------------------------------------------------- dm-haiku
def hk_resnet_make():
  import haiku as hk

  def forward(x, is_training):
    net = hk.nets.ResNet(
        blocks_per_group=(2, 2, 2, 2), num_classes=3, bottleneck=False,
        channels_per_group=(8, 8, 16, 16), use_projection=(False, True, True, True),
        initial_conv_config={"output_channels": 8})  # ResNet18's layout, narrower
    return net(x, is_training=is_training)

  model = hk.without_apply_rng(hk.transform_with_state(forward))
  x = _image(32)
  shapes, state = jax.eval_shape(lambda r, img: model.init(r, img, True), jax.random.key(0), x)
  params, state = fill(shapes), fill(state)
  return Built(params, lambda p, img: model.apply(p, state, img, False)[0], (x,))


def hk_transformer_make():
  import haiku as hk

  class Block(hk.Module):
    def __call__(self, x):
      y = hk.LayerNorm(-1, True, True, name="ln_1")(x)
      x = x + hk.MultiHeadAttention(2, D // 2, w_init=hk.initializers.VarianceScaling(),
                                    name="attn")(y, y, y)
      y = hk.LayerNorm(-1, True, True, name="ln_2")(x)
      return x + hk.Linear(D, name="fc2")(jax.nn.gelu(hk.Linear(MLP, name="fc1")(y)))

  class Transformer(hk.Module):
    def __init__(self, name):
      super().__init__(name=name)  # submodules made here are named transformer/~/...
      self.embed = hk.Embed(V, D, name="embed")
      self.layers = [Block(name=f"layer_{i}") for i in range(3)]
      self.ln_f = hk.LayerNorm(-1, True, True, name="ln_f")

    def __call__(self, ids):
      x = self.embed(ids) + hk.get_parameter("pos_embs", [ids.shape[1], D], init=jnp.zeros)
      for block in self.layers:
        x = block(x)
      return self.ln_f(x)

  def forward(ids):
    return hk.Linear(V, name="unembed")(Transformer(name="transformer")(ids))

  model = hk.without_apply_rng(hk.transform(forward))
  ids = _ids()
  params = fill(jax.eval_shape(model.init, jax.random.key(0), ids))
  return Built(params, model.apply, (ids,))


# ---------------------------------------------------------------- keras-hub (JAX backend)
def _keras_backend():
  backend = os.environ.setdefault("KERAS_BACKEND", "jax")
  if backend != "jax":
    raise RuntimeError(f"the keras-hub zoo models need KERAS_BACKEND=jax, got {backend!r}")


def _keras(model, *args):
  trainable = list(model.trainable_variables)
  non_trainable = [v.value for v in model.non_trainable_variables]
  params = {v.path: jnp.asarray(v.value) for v in trainable}
  assert len(params) == len(trainable), "keras variable paths must be unique"
  paths = [v.path for v in trainable]

  def fn(p, *a):
    return model.stateless_call([p[k] for k in paths], non_trainable, *a)[0]

  return Built(params, fn, args)


def keras_vit_make():
  _keras_backend()
  import keras_hub

  model = keras_hub.models.ViTBackbone(
      image_shape=(16, 16, 3), patch_size=8, num_layers=3, num_heads=3, hidden_dim=18,
      mlp_dim=32)
  return _keras(model, _image())


def keras_bert_make():
  _keras_backend()
  import keras_hub

  model = keras_hub.models.BertBackbone(
      vocabulary_size=V, num_layers=2, num_heads=2, hidden_dim=D, intermediate_dim=MLP,
      max_sequence_length=16)
  ids = _ids()
  inputs = {"token_ids": ids, "segment_ids": jnp.zeros_like(ids),
            "padding_mask": jnp.ones_like(ids)}
  return _keras(model, inputs)


MODELS = (
    ZooModel(
        "eqx_vit", eqx_vit_make,
        ((r"patch_embedding/.*|positional_embedding|cls_token", emb()),
         (rf"attention_blocks/{I}/.*", layer()),
         (r"norm/.*|mlp/layers/\d+/.*", HEAD)),
        {"": 3}, "exact_or_raise",
        "equinox docs ViT: attention_blocks/N list, cls_token, eqx.nn.MLP head (mlp/layers/N)"),
    ZooModel(
        "hk_resnet18_style", hk_resnet_make,
        ((r"res_net/~/initial_(conv|batchnorm)/.*", emb()),
         (r"res_net/~/block_group_(?P<s>\d)/~/block_(?P<b>\d)/.*", nested("", (2, 2, 2, 2))),
         (r"res_net/~/logits/.*", HEAD)),
        {"": 8}, "exact_or_raise",
        "haiku ResNet18 layout: block_group_G/~/block_B flattened 0..7, stem, shortcut convs"),
    ZooModel(
        "hk_transformer", hk_transformer_make,
        ((r"transformer/~/embed/embeddings|transformer/pos_embs", emb()),
         (rf"transformer/~/layer_{I}/.*", layer()),
         (r"transformer/~/ln_f/.*|unembed/.*", HEAD)),
        {"": 3}, "exact_or_raise",
        "haiku transformer: ~/layer_N separators, untied 'unembed' output head"),
    ZooModel(
        "keras_hub_vit", keras_vit_make,
        ((r"vit_patching_and_embedding/.*", emb()),
         # keras-hub numbers its blocks from 1: transformer_block_1 is layer 0.
         (rf"vit_encoder/transformer_block_{I}/.*", layer(offset=-1)),
         (r"vit_encoder/ln/.*", HEAD)),
        {"": 3}, "exact_or_raise",
        "keras-hub ViTBackbone (stateless_call): 1-based transformer_block_N, class_token; "
        "3 heads = 3 layers (an attention kernel's head axis equals the depth)"),
    ZooModel(
        "keras_hub_bert", keras_bert_make,
        ((r"(token|position|segment)_embedding/embeddings|embeddings_layer_norm/.*", emb()),
         (rf"transformer_layer_{I}/.*", layer()),
         (r"pooled_dense/.*", HEAD)),
        {"": 2}, "exact_or_raise",
        "keras-hub BertBackbone: transformer_layer_N, pooled_dense; 2 heads = 2 layers"),
)
