"""trace_layers: placements read from the data flow of small flax models.

Every expected placement is written by hand from the model's architecture.
"""

import pickle
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from optax_ldl._src.layer_map import LayerMap, Placement
from optax_ldl._src.trace import trace_layers

D = 0.5
H = 8


def _init(model, *args):
  return model.init(jax.random.key(0), *args)["params"]


def _apply(model):
  return lambda p, *a: model.apply({"params": p}, *a)


def _ratios(lm):
  return {path: lm.ratio(path, D) for path in lm}


def _check(lm, expected):
  """expected: {path prefix: ratio exponent}; every leaf must match exactly one prefix."""
  for path in lm:
    keys = [k for k in expected if path == k or path.startswith(k + "/")]
    assert keys, f"{path} not covered by the expectations"
    key = max(keys, key=len)
    want = D ** expected[key]
    assert lm.ratio(path, D) == pytest.approx(want), (path, str(lm[path]), expected[key])


# --- models -----------------------------------------------------------------------------


class Block(nn.Module):
  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm()(x)
    y = nn.Dense(H, name="attn")(y)
    x = x + y
    y = nn.LayerNorm()(x)
    y = nn.Dense(2 * H)(y)
    return x + nn.Dense(H)(nn.gelu(y))


class Unrolled(nn.Module):
  n: int = 3

  @nn.compact
  def __call__(self, ids):
    x = nn.Embed(10, H, name="embed")(ids)
    pos = self.param("pos", nn.initializers.normal(), (4, H))
    x = x + pos[None]
    for i in range(self.n):
      x = Block(name=f"layers_{i}")(x)
    x = nn.LayerNorm(name="final_norm")(x)
    return nn.Dense(5, name="head")(x)


IDS = jnp.zeros((2, 4), jnp.int32)


def test_unrolled_transformer():
  model = Unrolled()
  params = _init(model, IDS)
  lm = trace_layers(_apply(model), params, IDS)
  _check(lm, {"embed": 4, "pos": 4, "layers_0": 3, "layers_1": 2, "layers_2": 1,
              "final_norm": 0, "head": 0})
  assert lm.depths == (("", 3),)


def test_bert_like_layout_and_shape_dtype_struct_args():
  class Layer(nn.Module):
    @nn.compact
    def __call__(self, x):
      a = nn.Dense(H, name="attention")(x)
      x = nn.LayerNorm(name="attention_norm")(x + a)
      return nn.LayerNorm(name="output_norm")(x + nn.Dense(H, name="output")(x))

  class Bert(nn.Module):
    @nn.compact
    def __call__(self, ids):
      x = nn.Embed(10, H, name="word_embeddings")(ids)
      x = nn.LayerNorm(name="embeddings_norm")(x)
      for i in range(4):
        x = Layer(name=f"layer_{i}")(x)
      return nn.Dense(H, name="pooler")(x[:, 0])

  model = Bert()
  params = {"encoder": {"layer": {str(i): p for i, p in enumerate(
      [v for k, v in sorted(_init(model, IDS).items()) if k.startswith("layer_")])}}}
  raw = _init(model, IDS)
  params.update({k: v for k, v in raw.items() if not k.startswith("layer_")})

  def fn(p, ids):
    flat = {k: v for k, v in p.items() if k != "encoder"}
    flat.update({f"layer_{i}": v for i, v in p["encoder"]["layer"].items()})
    return model.apply({"params": flat}, ids)

  sds = jax.ShapeDtypeStruct(IDS.shape, IDS.dtype)
  lm = trace_layers(fn, params, sds)
  _check(lm, {"word_embeddings": 5, "embeddings_norm": 5, "encoder/layer/0": 4,
              "encoder/layer/1": 3, "encoder/layer/2": 2, "encoder/layer/3": 1, "pooler": 0})


class ViT(nn.Module):
  def setup(self):
    self.patch_embed = nn.Conv(H, (2, 2), strides=(2, 2))
    self.cls_token = self.param("cls_token", nn.initializers.zeros, (1, 1, H))
    self.blocks = [Block() for _ in range(2)]
    self.norm = nn.LayerNorm()
    self.head = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(3)])

  def __call__(self, img):
    x = self.patch_embed(img)
    x = x.reshape(x.shape[0], -1, H)
    cls = jnp.broadcast_to(self.cls_token, (x.shape[0], 1, H))
    x = jnp.concatenate([cls, x], axis=1)
    for block in self.blocks:
      x = block(x)
    return self.head(self.norm(x[:, 0]))


def test_vit_class_token_patch_embedding_sequential_head():
  model = ViT()
  img = jnp.zeros((1, 4, 4, 3))
  lm = trace_layers(_apply(model), _init(model, img), img)
  _check(lm, {"patch_embed": 3, "cls_token": 3, "blocks_0": 2, "blocks_1": 1, "norm": 0,
              "head": 0})
  assert lm["head/layers_0/kernel"] == Placement("head")


class ScanBlock(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    return Block()(x), None


class Scanned(nn.Module):
  axis: int = 0

  @nn.compact
  def __call__(self, ids):
    x = nn.Embed(10, H, name="embed")(ids)
    stack = nn.scan(ScanBlock, variable_axes={"params": self.axis},
                    split_rngs={"params": True}, length=5)
    x, _ = stack(name="layers")(x, None)
    return nn.Dense(3, name="head")(nn.LayerNorm(name="final_norm")(x))


@pytest.mark.parametrize("axis", [0, 1])
def test_nn_scan_stack(axis):
  model = Scanned(axis)
  params = _init(model, IDS)
  lm = trace_layers(_apply(model), params, IDS)
  assert lm.depths == (("", 5),)
  for path in lm:
    if path.startswith("layers/"):
      assert lm[path] == Placement("layer", layer=0, axis=axis), path
      assert [lm.ratio(path, D, j) for j in range(5)] == [D ** (5 - j) for j in range(5)]
  _check(lm, {"embed": 6, "final_norm": 0, "head": 0, "layers": 5})


class EncDec(nn.Module):
  @nn.compact
  def __call__(self, src, tgt):
    emb = nn.Embed(10, H, name="shared")
    x = emb(src)
    for i in range(3):
      x = Block(name=f"encoder_{i}")(x)
    memory = nn.LayerNorm(name="encoder_norm")(x)
    y = nn.Embed(10, H, name="decoder_embed")(tgt)
    for i in range(2):
      y = Block(name=f"dec_{i}")(y)
      y = y + nn.Dense(H, name=f"cross_{i}")(memory)
    return emb.attend(nn.LayerNorm(name="decoder_norm")(y))


def test_encoder_decoder_per_stack_and_continue():
  model = EncDec()
  params = _init(model, IDS, IDS)
  lm = trace_layers(_apply(model), params, IDS, IDS)
  # cross_i is outside the dec_i blocks but runs after dec_i: it belongs to layer i + 1 of
  # the decoder for i = 0 and to the head for the last one.
  _check(lm, {"shared": 4, "encoder_0": 3, "encoder_1": 2, "encoder_2": 1, "encoder_norm": 0,
              "decoder_embed": 3, "dec_0": 2, "dec_1": 1, "cross_0": 1, "cross_1": 0,
              "decoder_norm": 0})
  assert dict(lm.depths) == {"encoder": 3, "dec": 2}
  cont = trace_layers(_apply(model), params, IDS, IDS, numbering="continue")
  assert cont.depths == (("", 5),)
  _check(cont, {"shared": 6, "encoder_0": 5, "encoder_1": 4, "encoder_2": 3, "encoder_norm": 0,
                "decoder_embed": 6, "dec_0": 2, "dec_1": 1, "cross_0": 1, "cross_1": 0,
                "decoder_norm": 0})


def test_two_towers():
  class Towers(nn.Module):
    @nn.compact
    def __call__(self, ids, img):
      t = nn.Embed(10, H, name="text_embed")(ids)
      for i in range(2):
        t = Block(name=f"text_{i}")(t)
      v = nn.Dense(H, name="vision_embed")(img)
      for i in range(3):
        v = Block(name=f"vision_{i}")(v)
      scale = self.param("logit_scale", nn.initializers.ones, ())
      return jnp.exp(scale) * (t.mean(1) @ v.mean(1).T)

  model = Towers()
  img = jnp.zeros((2, 4, 6))
  params = _init(model, IDS, img)
  lm = trace_layers(_apply(model), params, IDS, img)
  _check(lm, {"text_embed": 3, "text_0": 2, "text_1": 1, "vision_embed": 4, "vision_0": 3,
              "vision_1": 2, "vision_2": 1, "logit_scale": 0})


class ResBlock(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.features, (3, 3), name="conv_a")(nn.relu(x))
    y = nn.Conv(self.features, (3, 3), name="conv_b")(nn.relu(y))
    return x + y


def test_cnn_stages_numbered_straight_through():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, img):
      x = nn.Conv(4, (3, 3), name="stem")(img)
      for s, feats in enumerate((4, 8)):
        if s > 0:
          x = nn.Conv(feats, (1, 1), strides=(2, 2), name=f"downsample_{s}")(x)
        for b in range(2):
          x = ResBlock(feats, name=f"stage_{s}_block_{b}")(x)
      return nn.Dense(3, name="head")(x.mean((1, 2)))

  model = Net()
  img = jnp.zeros((1, 8, 8, 3))
  raw = _init(model, img)
  # Re-key into stages/S/blocks/B (the HF ResNet / Swin layout).
  params = {"stem": raw["stem"], "head": raw["head"], "stages": {
      str(s): {"blocks": {str(b): raw[f"stage_{s}_block_{b}"] for b in range(2)}}
      for s in range(2)}}
  params["stages"]["1"]["downsample"] = raw["downsample_1"]

  def fn(p, x):
    flat = {"stem": p["stem"], "head": p["head"], "downsample_1": p["stages"]["1"]["downsample"]}
    for s in range(2):
      for b in range(2):
        flat[f"stage_{s}_block_{b}"] = p["stages"][str(s)]["blocks"][str(b)]
    return model.apply({"params": flat}, x)

  lm = trace_layers(fn, params, img)
  assert lm.depths == (("", 4),)
  _check(lm, {"stem": 5, "stages/0/blocks/0": 4, "stages/0/blocks/1": 3,
              "stages/1/downsample": 2, "stages/1/blocks/0": 2, "stages/1/blocks/1": 1,
              "head": 0})


def test_identical_stages_of_blocks_are_flattened():
  # stages/0 and stages/1 are identical (no downsample): both families repeat; the blocks,
  # each bypassed by its own skip only, are the layers.
  class Net(nn.Module):
    @nn.compact
    def __call__(self, img):
      x = nn.Conv(4, (3, 3), name="stem")(img)
      for s in range(2):
        for b in range(2):
          x = ResBlock(4, name=f"s{s}_b{b}")(x)
      return nn.Dense(3, name="head")(x.mean((1, 2)))

  model = Net()
  img = jnp.zeros((1, 4, 4, 3))
  raw = _init(model, img)
  params = {"stem": raw["stem"], "head": raw["head"], "stages": {
      str(s): {"blocks": {str(b): raw[f"s{s}_b{b}"] for b in range(2)}} for s in range(2)}}

  def fn(p, x):
    flat = {"stem": p["stem"], "head": p["head"]}
    flat.update({f"s{s}_b{b}": p["stages"][str(s)]["blocks"][str(b)]
                 for s in range(2) for b in range(2)})
    return model.apply({"params": flat}, x)

  lm = trace_layers(fn, params, img)
  assert lm.depths == (("", 4),)
  _check(lm, {"stem": 5, "stages/0/blocks/0": 4, "stages/0/blocks/1": 3,
              "stages/1/blocks/0": 2, "stages/1/blocks/1": 1, "head": 0})


def test_numbered_parts_of_a_block_are_not_layers():
  # A ResNet basic block (HF's layers/B/layer/layer_K): two identical numbered conv units in
  # one residual branch. The skip bypasses both, so the blocks are the layers.
  def fn(p, x):
    h = x @ p["embed"]
    for b in range(3):
      y = h
      for k in range(2):
        u = p["blocks"][str(b)]["layer"][str(k)]
        y = jax.nn.relu((y @ u["conv"]["w"]) * u["norm"]["scale"])
      h = h + y
    return h @ p["head"]

  unit = {"conv": {"w": jnp.ones((4, 4))}, "norm": {"scale": jnp.ones((1, 4))}}
  params = {"embed": jnp.ones((3, 4)), "head": jnp.ones((4, 2)),
            "blocks": {str(b): {"layer": {"0": unit, "1": unit}} for b in range(3)}}
  lm = trace_layers(fn, params, jnp.ones((1, 3)))
  assert lm.depths == (("", 3),)
  _check(lm, {"embed": 4, "blocks/0": 3, "blocks/1": 2, "blocks/2": 1, "head": 0})


class SubLayer(nn.Module):
  @nn.compact
  def __call__(self, x, memory=None):
    kv = x if memory is None else memory
    return nn.Dense(H, name="out")(nn.Dense(H, name="query")(x) * nn.Dense(H, name="key")(kv))


class TwoAttentionBlock(nn.Module):
  """The flax WMT decoder block: two identical attentions, norms outside them, an MLP."""

  @nn.compact
  def __call__(self, y, memory):
    y = y + SubLayer(name="attention_0")(nn.LayerNorm()(y))
    y = y + SubLayer(name="attention_1")(nn.LayerNorm()(y), memory)
    return y + nn.Dense(H)(nn.LayerNorm()(y))


def test_identical_sublayers_of_a_block_are_not_layers():
  class Decoder(nn.Module):
    @nn.compact
    def __call__(self, ids, memory):
      y = nn.Embed(10, H, name="embed")(ids)
      for i in range(2):
        y = TwoAttentionBlock(name=f"block_{i}")(y, memory)
      return nn.LayerNorm(name="norm")(y)

  model = Decoder()
  memory = jnp.ones((2, 4, H))
  lm = trace_layers(_apply(model), _init(model, IDS, memory), IDS, memory)
  assert lm.depths == (("", 2),)
  _check(lm, {"embed": 3, "block_0": 2, "block_1": 1, "norm": 0})


def test_first_block_with_an_extra_leaf():
  # T5: block 0 alone holds the relative attention bias; with two blocks no two are equal,
  # and the numbered sub-layers (layer/0 attention, layer/1 MLP) must not be the layers.
  def fn(p, x):
    h = x @ p["embed"]
    bias = None
    for b in range(2):
      blk = p["block"][str(b)]["layer"]
      att = blk["0"]
      if "bias" in att["attention"]:  # computed in block 0, reused by the later blocks
        bias = jnp.tanh(att["attention"]["bias"])
      h = h + jnp.tanh((h * att["norm"]["scale"]) @ att["attention"]["w"] + bias)
      mlp = blk["1"]
      h = h + jnp.tanh((h * mlp["norm"]["scale"]) @ mlp["mlp"]["w"])
    return h @ p["head"]

  def block(first):
    att = {"w": jnp.ones((4, 4)), **({"bias": jnp.ones((1, 4))} if first else {})}
    return {"layer": {"0": {"attention": att, "norm": {"scale": jnp.ones((1, 4))}},
                      "1": {"mlp": {"w": jnp.ones((4, 4))}, "norm": {"scale": jnp.ones((1, 4))}}}}

  params = {"embed": jnp.ones((3, 4)), "head": jnp.ones((4, 2)),
            "block": {"0": block(True), "1": block(False)}}
  lm = trace_layers(fn, params, jnp.ones((1, 3)))
  assert lm.depths == (("", 2),)
  _check(lm, {"embed": 3, "block/0": 2, "block/1": 1, "head": 0})


class FeatureBlock(nn.Module):
  @nn.compact
  def __call__(self, x):
    return x + nn.Dense(H, name="b")(nn.relu(nn.Dense(H, name="a")(x)))


class CrossFirstBlock(nn.Module):
  """A decoder block that projects the encoder's output (keys/values) before anything else."""

  @nn.compact
  def __call__(self, y, memory):
    kv = nn.Dense(H, name="cross_kv")(memory)
    y = y + nn.Dense(H, name="self_attn")(nn.LayerNorm(name="ln_0")(y))
    y = y + jnp.tanh(nn.Dense(H, name="cross_q")(nn.LayerNorm(name="ln_1")(y)) * kv)
    return y + nn.Dense(H, name="mlp")(nn.LayerNorm(name="ln_2")(y))


def test_stem_stack_versus_cross_attention():
  # feat_0..1 (a conv feature extractor: a stack of its own) feed all of the encoder's input:
  # they are the encoder's embedding stage. The decoder's first block reads the encoder's
  # output first in time, but only as a side input: the encoder stays a stack of its own.
  class Model(nn.Module):
    @nn.compact
    def __call__(self, feats, tgt):
      x = nn.Dense(H, name="feat_in")(feats)
      for i in range(2):
        x = FeatureBlock(name=f"feat_{i}")(x)
      for i in range(3):
        x = Block(name=f"enc_{i}")(x)
      memory = nn.LayerNorm(name="enc_norm")(x)
      y = nn.Embed(10, H, name="dec_embed")(tgt)
      for i in range(2):
        y = CrossFirstBlock(name=f"dec_{i}")(y, memory)
      return nn.LayerNorm(name="dec_norm")(y)

  model = Model()
  feats = jnp.ones((2, 4, 6))
  lm = trace_layers(_apply(model), _init(model, feats, IDS), feats, IDS)
  assert dict(lm.depths) == {"enc": 3, "dec": 2}
  _check(lm, {"feat_in": 4, "feat_0": 4, "feat_1": 4, "enc_0": 3, "enc_1": 2, "enc_2": 1,
              "enc_norm": 0, "dec_embed": 3, "dec_0": 2, "dec_1": 1, "dec_norm": 0})


class SharedNNX(nnx.Module):
  def __init__(self, rngs, share=True):
    self.embed = nnx.Embed(10, H, rngs=rngs)
    self.layers = nnx.List([nnx.Linear(H, H, rngs=rngs) for _ in range(3)])
    if share:
      self.layers[2] = self.layers[0]  # the same module in layers 0 and 2
    self.head = nnx.Linear(H, 2, rngs=rngs)

  def __call__(self, ids):
    x = self.embed(ids)
    for layer in self.layers:
      x = x + jnp.tanh(layer(x))
    return self.head(x)


def _nnx_fn(model):
  graphdef, state = nnx.split(model, nnx.Param)
  return (lambda p, *a: nnx.merge(graphdef, p)(*a)), state


def test_nnx_list_layers():
  fn, state = _nnx_fn(SharedNNX(nnx.Rngs(0), share=False))
  lm = trace_layers(fn, state, IDS)
  _check(lm, {"embed": 4, "layers/0": 3, "layers/1": 2, "layers/2": 1, "head": 0})


def test_shared_weights_refused_then_overridden():
  fn, state = _nnx_fn(SharedNNX(nnx.Rngs(0)))
  # layers/2 is layers/0: the tree has units 0 and 1 only, and layers/0 runs twice.
  with pytest.raises(ValueError, match=r"(?s)shared weights.*layers/0/kernel/value.*layers/1"):
    trace_layers(fn, state, IDS)
  lm = trace_layers(fn, state, IDS, overrides={"layers/0": "head"})
  assert lm["layers/0/kernel/value"] == Placement("head")
  _check(lm, {"embed": 3, "layers/0": 0, "layers/1": 1, "head": 0})


def test_shared_block_leaf_used_in_other_blocks():
  def fn(p, x):
    h = x @ p["embed"]
    for i in range(3):
      h = h + jnp.tanh(h @ p[f"layers_{i}"]["w"] + h @ p["layers_0"]["shared"])
    return h @ p["head"]

  params = {"embed": jnp.ones((3, 4)), "head": jnp.ones((4, 2)),
            **{f"layers_{i}": {"w": jnp.ones((4, 4)), "shared": jnp.ones((4, 4))}
               for i in range(3)}}
  with pytest.raises(ValueError, match=r"layers_0/shared.*layers_1.*layers_2"):
    trace_layers(fn, params, jnp.ones((1, 3)))
  lm = trace_layers(fn, params, jnp.ones((1, 3)),
                    overrides={"layers_0/shared": Placement("ratio", ratio=0.3)})
  assert lm.ratio("layers_0/shared", D) == 0.3
  assert lm.ratio("layers_1/w", D) == D ** 2


def test_albert_shared_layer_refused_then_pinned():
  # One layer in the tree, applied by every layer of the model (ALBERT).
  def fn(p, x):
    h = x @ p["embed"]
    for _ in range(3):
      h = h + jnp.tanh((h * p["layer"]["norm"]) @ p["layer"]["w"])
    return h @ p["pooler"]

  params = {"embed": jnp.ones((3, 4)), "pooler": jnp.ones((4, 2)),
            "layer": {"w": jnp.ones((4, 4)), "norm": jnp.ones((1, 4))}}
  x = jnp.ones((1, 3))
  with pytest.raises(ValueError, match=r"(?s)shared weights.*'layer'.*layer/w.*applied 3 times"):
    trace_layers(fn, params, x)
  lm = trace_layers(fn, params, x, overrides={"layer": 0})
  assert lm.depths == (("", 1),)
  _check(lm, {"embed": 2, "layer": 1, "pooler": 0})


def test_tied_embedding_output_head_is_embedding():
  class Tied(nn.Module):
    @nn.compact
    def __call__(self, ids):
      emb = nn.Embed(10, H, name="wte")
      x = emb(ids)
      for i in range(3):
        x = Block(name=f"h_{i}")(x)
      return emb.attend(nn.LayerNorm(name="ln_f")(x))

  model = Tied()
  lm = trace_layers(_apply(model), _init(model, IDS), IDS)
  _check(lm, {"wte": 4, "h_0": 3, "h_1": 2, "h_2": 1, "ln_f": 0})


def test_remat_and_cond_inside_a_block():
  class CondBlock(nn.Module):
    @nn.compact
    def __call__(self, x, flag):
      a, b = nn.Dense(H, name="a"), nn.Dense(H, name="b")
      if self.is_initializing():
        a(x), b(x)
      return x + jax.lax.cond(flag, lambda: a(x), lambda: jnp.tanh(b(x)))

  class Model(nn.Module):
    @nn.compact
    def __call__(self, ids, flag):
      x = nn.Embed(10, H, name="embed")(ids)
      remat_block = nn.remat(Block)
      for i in range(2):
        x = remat_block(name=f"layers_{i}")(x)
      x = jax.checkpoint(lambda y: y * 2)(x)
      return nn.Dense(2, name="head")(x)

  class CondModel(nn.Module):
    @nn.compact
    def __call__(self, ids, flag):
      x = nn.Embed(10, H, name="embed")(ids)
      for i in range(3):
        x = CondBlock(name=f"layers_{i}")(x, flag)
      return nn.Dense(2, name="head")(x)

  flag = jnp.array(True)
  model = Model()
  lm = trace_layers(_apply(model), _init(model, IDS, flag), IDS, flag)
  _check(lm, {"embed": 3, "layers_0": 2, "layers_1": 1, "head": 0})
  model = CondModel()
  lm = trace_layers(_apply(model), _init(model, IDS, flag), IDS, flag)
  _check(lm, {"embed": 4, "layers_0": 3, "layers_1": 2, "layers_2": 1, "head": 0})


def test_integer_leaves_not_placed_and_static_args():
  def fn(p, x, train):
    assert isinstance(train, bool)
    h = x @ p["embed"]
    for i in range(2):
      h = h + jnp.tanh(h @ p[f"layers_{i}"]["w"])
    return (h @ p["head"]) * p["step"]

  params = {"embed": jnp.ones((3, 4)), "head": jnp.ones((4, 2)), "step": jnp.zeros((), jnp.int32),
            **{f"layers_{i}": {"w": jnp.ones((4, 4))} for i in range(2)}}
  lm = trace_layers(fn, params, jnp.ones((1, 3)), train=False)
  assert "step" not in lm and len(lm) == 4


def test_overrides():
  model = Unrolled()
  params = _init(model, IDS)
  lm = trace_layers(_apply(model), params, IDS,
                    overrides={"head": "embedding", "final_norm": 1, "head/bias": "head"})
  assert lm["head/kernel"] == Placement("embedding")
  assert lm["head/bias"] == Placement("head")
  assert lm["final_norm/scale"] == Placement("layer", layer=1)
  with pytest.raises(ValueError, match="match no float parameter"):
    trace_layers(_apply(model), params, IDS, overrides={"nope": "head"})
  with pytest.raises(ValueError, match="overrides\\['head'\\]"):
    trace_layers(_apply(model), params, IDS, overrides={"head": "tail"})


def test_int_override_needs_one_stack():
  model = EncDec()
  params = _init(model, IDS, IDS)
  with pytest.raises(ValueError, match="exactly one stack"):
    trace_layers(_apply(model), params, IDS, IDS, overrides={"decoder_norm": 0})


def test_bad_inputs():
  model = Unrolled()
  params = _init(model, IDS)
  with pytest.raises(TypeError, match="fn must be callable"):
    trace_layers("model", params, IDS)
  with pytest.raises(TypeError, match="pytree of arrays.*'a'"):
    trace_layers(_apply(model), {"a": "x"}, IDS)
  with pytest.raises(ValueError, match="no float leaves"):
    trace_layers(_apply(model), {"a": jnp.zeros(3, jnp.int32)}, IDS)
  with pytest.raises(ValueError, match="tracing fn.*failed"):
    trace_layers(_apply(model), params, jnp.zeros((2, 4, 3)))
  with pytest.raises(ValueError, match="numbering must be"):
    trace_layers(_apply(model), params, IDS, numbering="global")
  with pytest.raises(ValueError, match="found no layers"):
    trace_layers(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 3))}, jnp.ones((1, 3)))


def test_ambiguous_single_units_refused():
  # One layer and a two-layer Sequential head of different shapes: no family repeats.
  def fn(p, x):
    h = x + jnp.tanh(x @ p["layers_0"]["w"])
    return jax.nn.relu(h @ p["head"]["layers_0"]["w"]) @ p["head"]["layers_1"]["w"]

  params = {"layers_0": {"w": jnp.ones((3, 3))},
            "head": {"layers_0": {"w": jnp.ones((3, 5))}, "layers_1": {"w": jnp.ones((5, 2))}}}
  with pytest.raises(ValueError, match="(?s)found no layers.*head/layers_"):
    trace_layers(fn, params, jnp.ones((1, 3)))
  lm = trace_layers(fn, params, jnp.ones((1, 3)), overrides={"layers_0": 0, "head": "head"})
  assert lm.ratio("layers_0/w", D) == D


def test_layer_map_picklable_deterministic_and_no_compile():
  model = Unrolled(n=4)
  params = jax.eval_shape(lambda: _init(model, IDS))  # ShapeDtypeStructs only
  sds = jax.ShapeDtypeStruct(IDS.shape, IDS.dtype)
  start = time.perf_counter()
  lm = trace_layers(_apply(model), params, sds)
  assert time.perf_counter() - start < 20
  again = trace_layers(_apply(model), params, sds)
  assert lm == again and hash(lm) == hash(again)
  assert pickle.loads(pickle.dumps(lm)) == lm
  assert LayerMap.from_json(lm.to_json()) == lm
  _check(lm, {"embed": 5, "pos": 5, "layers_0": 4, "layers_1": 3, "layers_2": 2,
              "layers_3": 1, "final_norm": 0, "head": 0})
