"""flax linen and NNX models written here, after common layouts (big_vision / vision_transformer
ViT, the flax WMT example, ``nn.scan`` stacks, NNX lists and ``nnx.vmap`` stacks)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx

from tests.zoo.core import HEAD, Built, ZooModel, emb, fill, layer, stacked

D, MLP, V = 16, 32, 64
I = r"(?P<i>\d+)"  # noqa: E741


def _ids(n=8, batch=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(1, V, (batch, n)), jnp.int32)


def _image(size=16, batch=2):
  return jnp.asarray(np.random.default_rng(0).standard_normal((batch, size, size, 3)), jnp.float32)


class MlpBlock(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(D)(nn.gelu(nn.Dense(MLP)(x)))


class EncoderBlock(nn.Module):
  @nn.compact
  def __call__(self, x):
    y = nn.MultiHeadDotProductAttention(num_heads=2)(nn.LayerNorm()(x))
    x = x + y
    return x + MlpBlock()(nn.LayerNorm()(x))


class LinenViT(nn.Module):
  """vision_transformer-style: ``embedding`` conv, ``cls``, ``Transformer/posembed_input``,
  ``Transformer/encoderblock_N``, ``Transformer/encoder_norm``, an ``nn.Sequential`` head."""

  depth: int = 3

  def setup(self):
    self.embedding = nn.Conv(D, (8, 8), strides=(8, 8))
    self.cls = self.param("cls", nn.initializers.zeros, (1, 1, D))
    self.Transformer = _LinenEncoder(self.depth)  # noqa: N815  (the vision_transformer name)
    self.head = nn.Sequential([nn.Dense(MLP), nn.tanh, nn.Dense(3)])

  def __call__(self, img):
    x = self.embedding(img)
    x = x.reshape(x.shape[0], -1, D)
    x = jnp.concatenate([jnp.tile(self.cls, (x.shape[0], 1, 1)), x], axis=1)
    return self.head(self.Transformer(x)[:, 0])


class _LinenEncoder(nn.Module):
  depth: int

  @nn.compact
  def __call__(self, x):
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], D))
    x = x + pos  # vision_transformer names this module posembed_input; a param here is the same.
    for i in range(self.depth):
      x = EncoderBlock(name=f"encoderblock_{i}")(x)
    return nn.LayerNorm(name="encoder_norm")(x)


class _ScanBlock(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    return EncoderBlock()(x), None


class LinenScan(nn.Module):
  """Blocks stacked by ``nn.scan`` (and ``nn.remat``): each leaf holds all 3 layers on axis 0."""

  @nn.compact
  def __call__(self, ids):
    x = nn.Embed(V, D, name="embed")(ids)
    blocks = nn.scan(nn.remat(_ScanBlock), variable_axes={"params": 0},
                     split_rngs={"params": True}, length=3)
    x, _ = blocks(name="blocks")(x, None)
    x = nn.LayerNorm(name="final_norm")(x)
    return nn.Dense(V, name="head")(x)


class _AddPositionEmbs(nn.Module):
  @nn.compact
  def __call__(self, x):
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, 16, D))
    return x + pos[:, : x.shape[1]]


class _EncoderDecoderBlock(nn.Module):
  @nn.compact
  def __call__(self, y, encoded):
    n = y.shape[1]
    mask = nn.make_causal_mask(jnp.ones((y.shape[0], n)))
    y = y + nn.MultiHeadDotProductAttention(num_heads=2)(nn.LayerNorm()(y), mask=mask)
    y = y + nn.MultiHeadDotProductAttention(num_heads=2)(nn.LayerNorm()(y), encoded)
    return y + MlpBlock()(nn.LayerNorm()(y))


class _WmtEncoder(nn.Module):
  shared_embedding: nn.Module
  layers: int

  @nn.compact
  def __call__(self, ids):
    x = _AddPositionEmbs(name="posembed_input")(self.shared_embedding(ids))
    for lyr in range(self.layers):
      x = EncoderBlock(name=f"encoderblock_{lyr}")(x)
    return nn.LayerNorm(name="encoder_norm")(x)


class _WmtDecoder(nn.Module):
  shared_embedding: nn.Module
  layers: int

  @nn.compact
  def __call__(self, encoded, targets):
    y = _AddPositionEmbs(name="posembed_output")(self.shared_embedding(targets))
    for lyr in range(self.layers):
      y = _EncoderDecoderBlock(name=f"encoderdecoderblock_{lyr}")(y, encoded)
    y = nn.LayerNorm(name="encoderdecoder_norm")(y)
    return self.shared_embedding.attend(y)  # logits_via_embedding=True


class WmtTransformer(nn.Module):
  """The flax WMT example's layout: encoder 3 / decoder 2, shared and tied embedding."""

  def setup(self):
    self.shared_embedding = nn.Embed(V, D, name="shared_embedding")
    self.encoder = _WmtEncoder(self.shared_embedding, 3)
    self.decoder = _WmtDecoder(self.shared_embedding, 2)

  def __call__(self, inputs, targets):
    return self.decoder(self.encoder(inputs), targets)


def _linen(module, *args):
  def make():
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    return Built(fill({"params": shapes["params"]}), lambda v, *a: module.apply(v, *a), args)

  return make


class _NnxBlock(nnx.Module):
  def __init__(self, rngs):
    self.ln1 = nnx.LayerNorm(D, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(2, D, decode=False, rngs=rngs)
    self.ln2 = nnx.LayerNorm(D, rngs=rngs)
    self.fc1 = nnx.Linear(D, MLP, rngs=rngs)
    self.fc2 = nnx.Linear(MLP, D, rngs=rngs)

  def __call__(self, x):
    x = x + self.attn(self.ln1(x))
    return x + self.fc2(nnx.gelu(self.fc1(self.ln2(x))))


class NnxListModel(nnx.Module):
  """``nnx.List`` of blocks (paths ``blocks/N``) and an ``nnx.Sequential`` head
  (``head/layers/0``, ``head/layers/2``)."""

  def __init__(self, rngs):
    self.embed = nnx.Embed(V, D, rngs=rngs)
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 8, D)))
    self.blocks = nnx.List([_NnxBlock(rngs) for _ in range(3)])
    self.norm = nnx.LayerNorm(D, rngs=rngs)
    self.head = nnx.Sequential(nnx.Linear(D, MLP, rngs=rngs), nnx.gelu,
                               nnx.Linear(MLP, 5, rngs=rngs))

  def __call__(self, ids):
    x = self.embed(ids) + self.pos[...]
    for block in self.blocks:
      x = block(x)
    return self.head(self.norm(x))


class NnxVmapModel(nnx.Module):
  """Blocks created by ``nnx.vmap`` (each leaf holds 4 layers on axis 0), run by ``nnx.scan``."""

  def __init__(self, rngs):
    self.embed = nnx.Embed(V, D, rngs=rngs)

    @nnx.split_rngs(splits=4)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
      return _NnxBlock(rngs)

    self.blocks = create(rngs)
    self.norm = nnx.LayerNorm(D, rngs=rngs)
    self.out = nnx.Linear(D, V, rngs=rngs)

  def __call__(self, ids):
    x = self.embed(ids)

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def body(x, block):
      return block(x)

    return self.out(self.norm(body(x, self.blocks)))


def _nnx(cls, *args):
  def make():
    model = nnx.eval_shape(lambda: cls(nnx.Rngs(0)))
    graphdef, state = nnx.split(model, nnx.Param)
    params = fill(nnx.to_pure_dict(state))

    def fn(p, *a):
      st = nnx.split(nnx.merge(graphdef, state), nnx.Param)[1]  # a fresh copy of the state
      nnx.replace_by_pure_dict(st, p)
      return nnx.merge(graphdef, st)(*a)

    return Built(params, fn, args)

  return make


WMT_ENC, WMT_DEC = "params/encoder/encoderblock", "params/decoder/encoderdecoderblock"

MODELS = (
    ZooModel(
        "linen_vit_sequential_head", _linen(LinenViT(), _image()),
        ((r"params/(embedding/.*|cls|Transformer/pos_embedding)", emb()),
         (rf"params/Transformer/encoderblock_{I}/.*", layer()),
         (r"params/Transformer/encoder_norm/.*|params/head/.*", HEAD)),
        {"": 3}, "exact_or_raise",
        "linen ViT: encoderblock_N, class token 'cls', nn.Sequential head (head/layers_N)"),
    ZooModel(
        "linen_scan", _linen(LinenScan(), _ids()),
        ((r"params/embed/embedding", emb()),
         (r"params/blocks/.*", stacked(axis=0)),
         (r"params/(final_norm|head)/.*", HEAD)),
        {"": 3}, "exact", "nn.scan(nn.remat(block)) stack: per-slice ratios along axis 0"),
    ZooModel(
        "linen_wmt_3x2", _linen(WmtTransformer(), _ids(8), _ids(6, seed=1)),
        # The shared embedding feeds both stacks (and is the tied output): the encoder (3) decides.
        ((r"params/shared_embedding/embedding", emb(WMT_ENC)),
         (r"params/encoder/posembed_input/.*", emb(WMT_ENC)),
         (r"params/decoder/posembed_output/.*", emb(WMT_DEC)),
         (rf"params/encoder/encoderblock_{I}/.*", layer(WMT_ENC)),
         (rf"params/decoder/encoderdecoderblock_{I}/.*", layer(WMT_DEC)),
         (r"params/(encoder/encoder_norm|decoder/encoderdecoder_norm)/.*", HEAD)),
        {WMT_ENC: 3, WMT_DEC: 2}, "exact_or_raise",
        "flax WMT example layout: encoderblock_N / encoderdecoderblock_N, shared tied embedding"),
    ZooModel(
        "nnx_list_sequential_head", _nnx(NnxListModel, _ids()),
        ((r"embed/embedding|pos", emb()),
         (rf"blocks/{I}/.*", layer()),
         (r"norm/.*|head/layers/\d+/.*", HEAD)),
        {"": 3}, "exact_or_raise", "NNX: nnx.List blocks/N, nnx.Sequential head head/layers/N"),
    ZooModel(
        "nnx_vmap", _nnx(NnxVmapModel, _ids()),
        ((r"embed/embedding", emb()),
         (r"blocks/.*", stacked(axis=0)),
         (r"(norm|out)/.*", HEAD)),
        {"": 4}, "exact_or_raise", "NNX: nnx.vmap-created stack run by nnx.scan (axis 0)"),
)
