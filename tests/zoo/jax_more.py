"""More JAX-native models (issue 16's zoo growth): Equinox beyond the ViT, an NNX stage/block CNN,
scenic's CLIP (linen: ViT towers with ``ln_pre``, the modified ResNet), haiku's example transformer
(global auto-numbered names only), a plain-JAX LLM whose stacked layers run in ``fori_loop``.

Conventions: a downsample layer between two stages (ConvNeXt's ``stages/S/downsample``) belongs to
the first block of the stage it opens, as timm's ``group_matcher`` groups it
(``stages.S.downsample`` with ``stages.S.blocks.0``); blocks are numbered straight through the
stages; the stem is the embedding stage. A leaf stacked over the layers (``filter_vmap``-made
layers run by ``lax.scan``, or indexed in ``fori_loop``) holds layer ``j`` at slice ``j`` of its
axis 0, whatever other axes (experts) it has. A norm applied to the embeddings before the first
layer (``ln_pre``) is in the embedding stage; a projection shortcut inside a residual block is part
of that block; an attention pool after the last block (even with its own ``positional_embedding``)
is the head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx

from optax_ldl._src.layer_map import Placement
from tests.zoo.core import HEAD, Built, ZooModel, emb, fill, layer, nested, stacked

D, MLP, V = 16, 32, 64
I = r"(?P<i>\d+)"  # noqa: E741  (a layer index in a regex)


def _ids(n=8, batch=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(1, V, (batch, n)), jnp.int32)


def _eqx_built(cls, *args):
  import equinox as eqx

  model = eqx.filter_eval_shape(cls, jax.random.key(0))
  params, static = eqx.partition(model, lambda x: isinstance(x, jax.ShapeDtypeStruct))
  return fill(params), static


# ---------------------------------------------------------------- equinox: the docs' BERT example
def eqx_bert_make():
  """The layout of Equinox's BERT example (examples/bert): ``encoder/embedder_block``,
  ``encoder/layers/N/{attention_block,ff_block}`` (post-norm), ``encoder/pooler``,
  ``classifier_head``."""
  import equinox as eqx

  class EmbedderBlock(eqx.Module):
    token_embedder: eqx.nn.Embedding
    segment_embedder: eqx.nn.Embedding
    position_embedder: eqx.nn.Embedding
    layernorm: eqx.nn.LayerNorm

    def __init__(self, key):
      k1, k2, k3 = jax.random.split(key, 3)
      self.token_embedder = eqx.nn.Embedding(V, D, key=k1)
      self.segment_embedder = eqx.nn.Embedding(2, D, key=k2)
      self.position_embedder = eqx.nn.Embedding(16, D, key=k3)
      self.layernorm = eqx.nn.LayerNorm(D)

    def __call__(self, token_ids, position_ids, segment_ids):
      x = (jax.vmap(self.token_embedder)(token_ids) + jax.vmap(self.segment_embedder)(segment_ids)
           + jax.vmap(self.position_embedder)(position_ids))
      return jax.vmap(self.layernorm)(x)

  class FeedForwardBlock(eqx.Module):
    mlp: eqx.nn.Linear
    output: eqx.nn.Linear
    layernorm: eqx.nn.LayerNorm

    def __init__(self, key):
      k1, k2 = jax.random.split(key)
      self.mlp = eqx.nn.Linear(D, MLP, key=k1)
      self.output = eqx.nn.Linear(MLP, D, key=k2)
      self.layernorm = eqx.nn.LayerNorm(D)

    def __call__(self, x):
      return self.layernorm(self.output(jax.nn.gelu(self.mlp(x))) + x)

  class AttentionBlock(eqx.Module):
    attention: eqx.nn.MultiheadAttention
    layernorm: eqx.nn.LayerNorm

    def __init__(self, key):
      self.attention = eqx.nn.MultiheadAttention(
          2, D, use_query_bias=True, use_key_bias=True, use_value_bias=True,
          use_output_bias=True, key=key)
      self.layernorm = eqx.nn.LayerNorm(D)

    def __call__(self, x, mask):
      return jax.vmap(self.layernorm)(self.attention(x, x, x, mask=mask) + x)

  class TransformerLayer(eqx.Module):
    attention_block: AttentionBlock
    ff_block: FeedForwardBlock

    def __init__(self, key):
      k1, k2 = jax.random.split(key)
      self.attention_block = AttentionBlock(k1)
      self.ff_block = FeedForwardBlock(k2)

    def __call__(self, x, mask):
      return jax.vmap(self.ff_block)(self.attention_block(x, mask))

  class Encoder(eqx.Module):
    embedder_block: EmbedderBlock
    layers: list
    pooler: eqx.nn.Linear

    def __init__(self, key):
      keys = jax.random.split(key, 5)
      self.embedder_block = EmbedderBlock(keys[0])
      self.layers = [TransformerLayer(k) for k in keys[1:4]]
      self.pooler = eqx.nn.Linear(D, D, key=keys[4])

    def __call__(self, token_ids, segment_ids):
      n = token_ids.shape[0]
      x = self.embedder_block(token_ids, jnp.arange(n), segment_ids)
      mask = jnp.ones((n, n), bool)
      for lyr in self.layers:
        x = lyr(x, mask)
      return jnp.tanh(self.pooler(x[0]))

  class BertClassifier(eqx.Module):
    encoder: Encoder
    classifier_head: eqx.nn.Linear

    def __init__(self, key):
      k1, k2 = jax.random.split(key)
      self.encoder = Encoder(k1)
      self.classifier_head = eqx.nn.Linear(D, 2, key=k2)

    def __call__(self, token_ids, segment_ids):
      return self.classifier_head(self.encoder(token_ids, segment_ids))

  params, static = _eqx_built(BertClassifier)
  ids = _ids()
  fn = lambda p, t, s: jax.vmap(eqx.combine(p, static))(t, s)
  return Built(params, fn, (ids, jnp.zeros_like(ids)))


# ------------------------------------------ equinox: an MoE LLM with filter_vmap-stacked layers
E = 3  # experts per layer; equal to the depth on purpose (an expert axis is not a layer axis)


def eqx_scan_moe_make():
  """A decoder-only LLM in the usual Equinox style: the layers made by ``eqx.filter_vmap`` (every
  leaf of ``layers`` has the layer axis 0) and run by ``lax.scan``; each layer an attention and a
  top-2 mixture of experts whose expert weights are one array ``(E, ...)`` per projection."""
  import equinox as eqx

  class MoE(eqx.Module):
    router: eqx.nn.Linear
    w_gate: jax.Array
    w_up: jax.Array
    w_down: jax.Array

    def __init__(self, key):
      k = jax.random.split(key, 4)
      self.router = eqx.nn.Linear(D, E, use_bias=False, key=k[0])
      self.w_gate = 0.02 * jax.random.normal(k[1], (E, D, MLP))
      self.w_up = 0.02 * jax.random.normal(k[2], (E, D, MLP))
      self.w_down = 0.02 * jax.random.normal(k[3], (E, MLP, D))

    def __call__(self, x):  # (T, D)
      logits = jax.vmap(self.router)(x)  # (T, E)
      top = jax.lax.top_k(logits, 2)[0][:, -1:]
      gates = jax.nn.softmax(jnp.where(logits >= top, logits, -jnp.inf), axis=-1)
      h = jax.nn.silu(jnp.einsum("td,edf->tef", x, self.w_gate))
      h = h * jnp.einsum("td,edf->tef", x, self.w_up)
      return jnp.einsum("tef,efd,te->td", h, self.w_down, gates)

  class DecoderLayer(eqx.Module):
    attn_norm: eqx.nn.RMSNorm
    attn: eqx.nn.MultiheadAttention
    moe_norm: eqx.nn.RMSNorm
    moe: MoE

    def __init__(self, key):
      k1, k2 = jax.random.split(key)
      self.attn_norm = eqx.nn.RMSNorm(D, use_bias=False)
      self.attn = eqx.nn.MultiheadAttention(2, D, key=k1)
      self.moe_norm = eqx.nn.RMSNorm(D, use_bias=False)
      self.moe = MoE(k2)

    def __call__(self, x):
      n = x.shape[0]
      y = jax.vmap(self.attn_norm)(x)
      x = x + self.attn(y, y, y, mask=jnp.tril(jnp.ones((n, n), bool)))
      return x + self.moe(jax.vmap(self.moe_norm)(x))

  class LLM(eqx.Module):
    embed: eqx.nn.Embedding
    layers: DecoderLayer
    norm: eqx.nn.RMSNorm
    lm_head: eqx.nn.Linear

    def __init__(self, key):
      k1, k2, k3 = jax.random.split(key, 3)
      self.embed = eqx.nn.Embedding(V, D, key=k1)
      self.layers = eqx.filter_vmap(DecoderLayer)(jax.random.split(k2, 3))
      self.norm = eqx.nn.RMSNorm(D, use_bias=False)
      self.lm_head = eqx.nn.Linear(D, V, use_bias=False, key=k3)

    def __call__(self, ids):
      x = jax.vmap(self.embed)(ids)
      dynamic, static_layer = eqx.partition(self.layers, eqx.is_array)

      def body(h, layer_params):
        return eqx.combine(layer_params, static_layer)(h), None

      x, _ = jax.lax.scan(body, x, dynamic)
      return jax.vmap(lambda t: self.lm_head(self.norm(t)))(x)

  params, static = _eqx_built(LLM)
  return Built(params, lambda p, ids: jax.vmap(eqx.combine(p, static))(ids), (_ids(),))


# -------------------------------------------------------- NNX: a ConvNeXt (stages of blocks)
CNX_DEPTHS, CNX_DIMS = (2, 1, 3), (8, 16, 16)


class _CnxBlock(nnx.Module):
  def __init__(self, dim, rngs):
    self.dwconv = nnx.Conv(dim, dim, (7, 7), padding=3, feature_group_count=dim, rngs=rngs)
    self.norm = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
    self.pwconv1 = nnx.Linear(dim, 4 * dim, rngs=rngs)
    self.pwconv2 = nnx.Linear(4 * dim, dim, rngs=rngs)
    self.gamma = nnx.Param(jnp.full((dim,), 1e-6))  # layer scale

  def __call__(self, x):
    y = self.pwconv2(nnx.gelu(self.pwconv1(self.norm(self.dwconv(x)))))
    return x + self.gamma[...] * y


class _CnxStage(nnx.Module):
  def __init__(self, in_dim, dim, depth, downsample, rngs):
    # Stage 0 keeps the stem's resolution; later stages open with LayerNorm + 2x2 stride-2 conv.
    self.downsample = None if not downsample else nnx.Sequential(
        nnx.LayerNorm(in_dim, epsilon=1e-6, rngs=rngs),
        nnx.Conv(in_dim, dim, (2, 2), strides=(2, 2), rngs=rngs))
    self.blocks = nnx.List([_CnxBlock(dim, rngs) for _ in range(depth)])

  def __call__(self, x):
    if self.downsample is not None:
      x = self.downsample(x)
    for block in self.blocks:
      x = block(x)
    return x


class NnxConvNeXt(nnx.Module):
  """timm / facebookresearch ConvNeXt layout in NNX: ``stem`` (patchify conv + LayerNorm),
  ``stages/S/downsample`` (stages 1..), ``stages/S/blocks/B`` (depthwise conv, LayerNorm, MLP,
  layer scale ``gamma``), a final ``norm`` on the pooled features and a ``head``."""

  def __init__(self, rngs):
    self.stem = nnx.Sequential(nnx.Conv(3, CNX_DIMS[0], (4, 4), strides=(4, 4), rngs=rngs),
                               nnx.LayerNorm(CNX_DIMS[0], epsilon=1e-6, rngs=rngs))
    ins = (CNX_DIMS[0], *CNX_DIMS[:-1])
    self.stages = nnx.List([_CnxStage(i, o, d, s > 0, rngs)
                            for s, (i, o, d) in enumerate(zip(ins, CNX_DIMS, CNX_DEPTHS))])
    self.norm = nnx.LayerNorm(CNX_DIMS[-1], epsilon=1e-6, rngs=rngs)
    self.head = nnx.Linear(CNX_DIMS[-1], 3, rngs=rngs)

  def __call__(self, img):
    x = self.stem(img)
    for stage in self.stages:
      x = stage(x)
    return self.head(self.norm(x.mean(axis=(1, 2))))


def nnx_convnext_make():
  model = nnx.eval_shape(lambda: NnxConvNeXt(nnx.Rngs(0)))
  graphdef, state = nnx.split(model, nnx.Param)
  params = fill(nnx.to_pure_dict(state))

  def fn(p, img):
    st = nnx.split(nnx.merge(graphdef, state), nnx.Param)[1]  # a fresh copy of the state
    nnx.replace_by_pure_dict(st, p)
    return nnx.merge(graphdef, st)(img)

  img = jnp.asarray(np.random.default_rng(0).standard_normal((2, 32, 32, 3)), jnp.float32)
  return Built(params, fn, (img,))


# ---------------------------------------- scenic's CLIP (projects/baselines/clip/layers.py), linen
def _ln(name):
  return nn.LayerNorm(epsilon=1e-5, name=name)


class _ScMlp(nn.Module):
  @nn.compact
  def __call__(self, x):
    ch = x.shape[-1]
    h = nn.Dense(4 * ch, name="c_fc")(x)
    return nn.Dense(ch, name="c_proj")(h * jax.nn.sigmoid(1.702 * h))


class _ScResBlock(nn.Module):
  heads: int

  @nn.compact
  def __call__(self, x, mask=None):
    x = x + nn.SelfAttention(self.heads, name="attn", deterministic=True)(_ln("ln_1")(x), mask)
    return x + _ScMlp(name="mlp")(_ln("ln_2")(x))


class _ScTransformer(nn.Module):
  depth: int
  heads: int

  @nn.compact
  def __call__(self, x, mask=None):
    for i in range(self.depth):  # scenic names them with a dot: resblocks.0, resblocks.1, ...
      x = _ScResBlock(self.heads, name=f"resblocks.{i}")(x, mask)
    return x


class _ScVisual(nn.Module):
  @nn.compact
  def __call__(self, img):
    x = nn.Conv(D, (8, 8), strides=(8, 8), use_bias=False, name="conv1")(img)
    x = x.reshape(x.shape[0], -1, D)
    cls = self.param("class_embedding", nn.initializers.normal(0.02), (D,))
    x = jnp.concatenate([jnp.tile(cls[None, None], (x.shape[0], 1, 1)), x], axis=1)
    x = x + self.param("positional_embedding", nn.initializers.normal(0.02), (x.shape[1], D))[None]
    x = _ScTransformer(2, 2, name="transformer")(_ln("ln_pre")(x))
    return nn.Dense(8, use_bias=False, name="proj")(_ln("ln_post")(x[:, 0]))


class _ScText(nn.Module):
  @nn.compact
  def __call__(self, text):
    pos = self.param("positional_embedding", nn.initializers.normal(0.02), (text.shape[1], D))
    mask = nn.combine_masks(nn.make_attention_mask(text > 0, text > 0), nn.make_causal_mask(text))
    x = nn.Embed(V, D, name="token_embedding")(text) + pos[None]
    x = _ln("ln_final")(_ScTransformer(3, 2, name="transformer")(x, mask))
    x = x[jnp.arange(x.shape[0]), text.argmax(-1)]
    return nn.Dense(8, use_bias=False, name="text_projection")(x)


class ScenicClip(nn.Module):
  """scenic's CLIP, ViT towers: ``visual`` (2 blocks), ``text`` (3 blocks), ``logit_scale``."""

  def setup(self):
    self.visual = _ScVisual()
    self.text = _ScText()
    self.logit_scale = self.param("logit_scale", nn.initializers.zeros, ())

  def __call__(self, img, text):
    x, y = self.visual(img), self.text(text)
    x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    y = y / jnp.linalg.norm(y, axis=-1, keepdims=True)
    return jnp.exp(self.logit_scale) * x @ y.T  # the contrastive logits of the training loss


class _ScBottleneck(nn.Module):
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    out = nn.relu(nn.BatchNorm(True, name="bn1")(
        nn.Conv(self.features, (1, 1), use_bias=False, name="conv1")(x)))
    out = nn.relu(nn.BatchNorm(True, name="bn2")(
        nn.Conv(self.features, (3, 3), padding=1, use_bias=False, name="conv2")(out)))
    out = nn.avg_pool(out, (self.stride, self.stride), (self.stride, self.stride))
    out = nn.BatchNorm(True, name="bn3")(
        nn.Conv(4 * self.features, (1, 1), use_bias=False, name="conv3")(out))
    if self.stride > 1 or x.shape[-1] != 4 * self.features:
      x = _ScShortcut(4 * self.features, self.stride, name="downsample")(x)
    return nn.relu(out + x)


class _ScShortcut(nn.Module):
  features: int
  stride: int

  @nn.compact
  def __call__(self, x):
    x = nn.avg_pool(x, (self.stride, self.stride), (self.stride, self.stride))
    return nn.BatchNorm(True, name="1")(
        nn.Conv(self.features, (1, 1), use_bias=False, name="0")(x))


class _ScStage(nn.Module):
  features: int
  depth: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    for i in range(self.depth):
      x = _ScBottleneck(self.features, self.stride if i == 0 else 1, name=str(i))(x)
    return x


class _ScAttentionPool(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)
    pos = self.param("positional_embedding", nn.initializers.normal(0.02), x.shape[1:])
    x = x + pos[None]
    return nn.MultiHeadDotProductAttention(2, out_features=8, name="attn")(x[:, :1], x)[:, 0]


RN_DEPTHS = (1, 2, 1, 1)


class ScenicModifiedResNet(nn.Module):
  """scenic's CLIP ``ModifiedResNet`` (RN50 layout, narrower): a 3-conv stem ``conv1..3``/``bn1..3``
  beside ``layer1..layer4`` (blocks ``0``, ``1``, ...; bottlenecks with ``downsample/0``,
  ``downsample/1``), then ``attnpool`` (its own ``positional_embedding``)."""

  @nn.compact
  def __call__(self, x):
    w = 4
    for k, (ch, stride) in enumerate(((w // 2, 2), (w // 2, 1), (w, 1)), start=1):
      x = nn.Conv(ch, (3, 3), strides=stride, padding=1, use_bias=False, name=f"conv{k}")(x)
      x = nn.relu(nn.BatchNorm(True, name=f"bn{k}")(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    for s, depth in enumerate(RN_DEPTHS):
      x = _ScStage(w * 2**s, depth, 1 if s == 0 else 2, name=f"layer{s + 1}")(x)
    return _ScAttentionPool(name="attnpool")(x)


def _linen_with_stats(module, *args):
  def make():
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    stats = fill(shapes.get("batch_stats", {}))
    params = fill({"params": shapes["params"]})

    def fn(p, *a):
      return module.apply({**p, "batch_stats": stats} if stats else p, *a)

    return Built(params, fn, args)

  return make


def _image(size, batch=2):
  return jnp.asarray(np.random.default_rng(0).standard_normal((batch, size, size, 3)), jnp.float32)


def _rn_block(m):
  """``layer<S>/<B>`` (stages numbered from 1) flattened through the stages."""
  return nested("", RN_DEPTHS)({"s": int(m["s"]) - 1, "b": m["b"]})


# ------------------------------------------- haiku's example transformer (examples/transformer)
HK_LAYERS = 3


def hk_example_lm_make():
  """haiku's examples/transformer/model.py layout: one ``transformer`` module whose loop creates
  ``multi_head_attention(_k)``, ``layer_norm(_k)`` and ``linear(_k)`` with global counters (no
  module per layer), under a ``language_model`` with ``embed``, ``positional_embeddings`` and an
  untied output ``linear``."""
  import haiku as hk

  def layer_norm(x):
    return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x)

  class Transformer(hk.Module):
    def __call__(self, h, mask):
      n = h.shape[1]
      mask = mask[:, None, None, :] * np.tril(np.ones((1, 1, n, n)))
      init = hk.initializers.VarianceScaling(2 / HK_LAYERS)
      for _ in range(HK_LAYERS):
        attn = hk.MultiHeadAttention(num_heads=2, key_size=8, model_size=D, w_init=init)
        y = layer_norm(h)
        h = h + attn(y, y, y, mask=mask)
        dense = hk.Sequential([hk.Linear(4 * D, w_init=init), jax.nn.gelu,
                               hk.Linear(D, w_init=init)])
        h = h + dense(layer_norm(h))
      return layer_norm(h)

  class LanguageModel(hk.Module):
    def __init__(self, transformer):
      super().__init__(name="language_model")
      self.transformer = transformer

    def __call__(self, tokens):
      init = hk.initializers.TruncatedNormal(stddev=0.02)
      x = hk.Embed(V, embed_dim=D, w_init=init)(tokens)
      x = x + hk.get_parameter("positional_embeddings", [tokens.shape[1], D], init=init)
      return hk.Linear(V)(self.transformer(x, tokens > 0))

  model = hk.without_apply_rng(hk.transform(
      lambda t: LanguageModel(Transformer(name="transformer"))(t)))
  ids = _ids()
  return Built(fill(jax.eval_shape(model.init, jax.random.key(0), ids)), model.apply, (ids,))


def _hk_numbered(per_layer: int):
  """``name`` / ``name_k``: the k-th module of its kind (k = 0 unsuffixed), ``per_layer`` a layer;
  the layer norm after the last layer (k = 2 L) is the head."""

  def where(m):
    k = int(m["k"] or 0)
    return HEAD if k >= per_layer * HK_LAYERS else Placement("layer", "", layer=k // per_layer)

  return where


# ------------------------------------------------- plain JAX: a Llama-style LLM in fori_loop
FL_LAYERS = 3


def jax_fori_llm_make():
  """Functional JAX LLM code (names after Meta's reference Llama: ``tok_embeddings``, ``layers``
  with ``attention_norm``, ``wq``..``wo``, ``ffn_norm``, ``w1``..``w3``, ``norm``, ``output``): the
  layers' weights stacked on axis 0 and run by ``lax.fori_loop``, which indexes the stack with
  the loop counter (a closed-over array, not a scanned input)."""
  shapes = {
      "tok_embeddings": (V, D),
      "layers": {"attention_norm": (FL_LAYERS, D), "wq": (FL_LAYERS, D, D),
                 "wk": (FL_LAYERS, D, D), "wv": (FL_LAYERS, D, D), "wo": (FL_LAYERS, D, D),
                 "ffn_norm": (FL_LAYERS, D), "w1": (FL_LAYERS, D, MLP),
                 "w2": (FL_LAYERS, MLP, D), "w3": (FL_LAYERS, D, MLP)},
      "norm": (D,),
      "output": (D, V),
  }
  params = fill(jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes,
                                       is_leaf=lambda s: isinstance(s, tuple)))

  def rms(x, w):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6) * w

  def fn(p, ids):
    n = ids.shape[1]
    causal = jnp.tril(jnp.ones((n, n), bool))

    def block(i, h):
      lp = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, i, 0, False),
                                  p["layers"])
      x = rms(h, lp["attention_norm"])
      q, k, v = x @ lp["wq"], x @ lp["wk"], x @ lp["wv"]
      att = jnp.where(causal, q @ jnp.swapaxes(k, -1, -2) / np.sqrt(D), -1e9)
      h = h + jax.nn.softmax(att, axis=-1) @ v @ lp["wo"]
      x = rms(h, lp["ffn_norm"])
      return h + (jax.nn.silu(x @ lp["w1"]) * (x @ lp["w3"])) @ lp["w2"]

    h = jax.lax.fori_loop(0, FL_LAYERS, block, p["tok_embeddings"][ids])
    return rms(h, p["norm"]) @ p["output"]

  return Built(params, fn, (_ids(),))

def _first_block_of_stage(m):
  """``stages/S/downsample``: the first block of stage S (timm's grouping)."""
  return nested("", CNX_DEPTHS)({"s": m["s"], "b": "0"})


SC_V, SC_T = "params/visual/transformer", "params/text/transformer"

MODELS = (
    ZooModel(
        "eqx_bert_classifier", eqx_bert_make,
        ((r"encoder/embedder_block/.*", emb()),
         (rf"encoder/layers/{I}/.*", layer()),
         (r"encoder/pooler/.*|classifier_head/.*", HEAD)),
        {"": 3}, "exact_or_raise",
        "Equinox's BERT example: embedder_block (token/segment/position embedders + LayerNorm), "
        "post-norm layers/N, pooler + classifier_head"),
    ZooModel(
        "eqx_scan_moe_llm", eqx_scan_moe_make,
        ((r"embed/weight", emb()),
         # Every leaf of `layers` (router, expert stacks (3, E, ...), norms, attention): axis 0.
         (r"layers/.*", stacked(axis=0)),
         (r"(norm|lm_head)/weight", HEAD)),
        {"": 3}, "exact_or_raise",
        "Equinox LLM: filter_vmap-made layers run by lax.scan (axis 0), top-2 MoE with expert "
        "stacks (3 experts = 3 layers), untied lm_head"),
    ZooModel(
        "nnx_convnext_stages", nnx_convnext_make,
        ((r"stem/layers/\d+/.*", emb()),
         (r"stages/(?P<s>\d+)/blocks/(?P<b>\d+)/.*", nested("", CNX_DEPTHS)),
         # The downsample opening stage S: with the first block of stage S (layer 2 for S=1,
         # layer 3 for S=2), as timm groups it.
         (r"stages/(?P<s>\d+)/downsample/layers/\d+/.*", _first_block_of_stage),
         (r"(norm|head)/.*", HEAD)),
        {"": sum(CNX_DEPTHS)}, "exact_or_raise",
        "NNX ConvNeXt: stages/S/blocks/B of uneven depths (2, 1, 3) flattened 0..5, "
        "stages/S/downsample -> first block of stage S, stem, layer scale gamma"),
    ZooModel(
        "scenic_clip_vit_ln_pre", _linen_with_stats(ScenicClip(), _image(16), _ids()),
        ((r"params/visual/(conv1/.*|class_embedding|positional_embedding|ln_pre/.*)",
          emb(SC_V)),
         (rf"params/visual/transformer/resblocks\.{I}/.*", layer(SC_V)),
         (r"params/visual/(ln_post|proj)/.*", HEAD),
         (r"params/text/(token_embedding/embedding|positional_embedding)", emb(SC_T)),
         (rf"params/text/transformer/resblocks\.{I}/.*", layer(SC_T)),
         (r"params/text/(ln_final|text_projection)/.*|params/logit_scale", HEAD)),
        {SC_V: 2, SC_T: 3}, "exact_or_raise",
        "scenic CLIP (linen): towers of 2 and 3 resblocks.N (a dot in the name), ln_pre between "
        "the embeddings and block 0, ln_post / ln_final, proj, logit_scale"),
    ZooModel(
        "scenic_clip_modified_resnet", _linen_with_stats(ScenicModifiedResNet(), _image(32)),
        ((r"params/(conv[123]|bn[123])/.*", emb()),
         # The shortcut (downsample/0 conv, downsample/1 BatchNorm) is inside its block.
         (r"params/layer(?P<s>[1-4])/(?P<b>\d+)/.*", _rn_block),
         (r"params/attnpool/.*", HEAD)),
        {"": sum(RN_DEPTHS)}, "exact_or_raise",
        "scenic CLIP ModifiedResNet: stem conv1..3/bn1..3 beside layer1..4 (1-based stages, "
        "blocks 0..), downsample/0|1 in the block, attnpool with its own positional_embedding"),
    ZooModel(
        "hk_example_lm_global_names", hk_example_lm_make,
        ((r"language_model/(embed/embeddings|positional_embeddings)", emb()),
         (r"transformer/multi_head_attention(_(?P<k>\d+))?/.*", _hk_numbered(1)),
         (r"transformer/layer_norm(_(?P<k>\d+))?/.*", _hk_numbered(2)),
         (r"transformer/linear(_(?P<k>\d+))?/.*", _hk_numbered(2)),
         (r"language_model/linear/.*", HEAD)),
        {"": HK_LAYERS}, "exact_or_raise",
        "haiku examples/transformer: no module per layer, multi_head_attention_k / "
        "layer_norm_k / linear_k counted through the whole stack, untied output linear"),
    ZooModel(
        "jax_fori_llm_stacked", jax_fori_llm_make,
        ((r"tok_embeddings", emb()),
         (r"layers/.*", stacked(axis=0)),
         (r"norm|output", HEAD)),
        {"": FL_LAYERS}, "exact_or_raise",
        "plain-JAX Llama-style LLM: layers stacked on axis 0, run by lax.fori_loop indexing the "
        "stack with the loop counter"),
)
