"""The default path rule (optax_ldl/_src/path_rule/): the table, layouts, refusals, n_layers."""

import dataclasses
import json
import os
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_ldl._src import path_rule
from optax_ldl._src.layer_map import Placement

D = 0.5
GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "parity", "paddle_golden.npz"))


def tree_of(paths, shape=(2,)):
  """A flat {path: ShapeDtypeStruct} tree (keys with '/' keep their path name)."""
  return {p: jax.ShapeDtypeStruct(shape, jnp.float32) for p in paths}


def ratios(lm, decay=D):
  return {p: lm.ratio(p, decay) for p in lm}


def quiet_layers(tree, **kw):
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    return path_rule.path_layers(tree, **kw)


# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize("row", path_rule.RULES, ids=lambda r: r.example)
def test_every_row_example_classifies_as_documented(row):
  assert path_rule.describe_match(path_rule.classify(row.example)) == row.expect
  assert row.example in path_rule.rule_table_markdown()


def test_rule_table_and_error_text_come_from_the_rows():
  table = path_rule.rule_table_markdown().splitlines()
  assert len(table) == 2 + len(path_rule.RULES)
  for row in path_rule.RULES:
    if row.kind in ("layer", "stage"):
      assert row.shown in path_rule.RECOGNISED


# --------------------------------------------------------------------------- Paddle parity


def test_paddle_names_give_paddles_kinds():
  cfg = json.loads(str(GOLDEN["layer_rule/config"]))
  for name, ratio, error in zip(GOLDEN["layer_rule/names"], GOLDEN["layer_rule/ratios"],
                                GOLDEN["layer_rule/errors"]):
    name = str(name)
    if str(error):
      with pytest.raises(ValueError, match="encoder.layers"):
        path_rule.classify(name)
      continue
    m = path_rule.classify(name)
    exponent = {"layer": cfg["n_layers"] - (m.layer or 0), "embedding": cfg["n_layers"] + 1,
                "other": 0}[m.kind]
    assert cfg["decay_rate"] ** exponent == pytest.approx(ratio, rel=1e-12), name


@pytest.mark.parametrize("case", ["constant", "layers12"])
def test_paddle_trees_give_paddles_ratios(case):
  cfg = json.loads(str(GOLDEN[f"{case}/config"]))
  names = [str(n) for n in GOLDEN[f"{case}/names"]]
  lm = quiet_layers(tree_of(names), n_layers=cfg["n_layers"])
  ours = [lm.ratio(n, cfg["layerwise_decay"]) for n in names]
  np.testing.assert_allclose(ours, GOLDEN[f"{case}/ratio"], rtol=1e-12)


def test_adamwdl_default_12_on_paddle_names_keeps_paddles_numbers_and_warns():
  names = [str(n) for n in GOLDEN["constant/names"]]  # 3 layers
  with pytest.warns(UserWarning, match=r"n_layers=12 but the tree shows 3 layers"):
    lm = path_rule.path_layers(tree_of(names), n_layers=12)
  assert lm.ratio("encoder.layers.2.norm1.weight", 0.8) == pytest.approx(0.8 ** 10)
  assert lm.ratio("embeddings.word_embeddings.weight", 0.8) == pytest.approx(0.8 ** 13)
  assert lm.ratio("classifier.bias", 0.8) == 1.0


def test_paddle_index_equal_to_n_layers_gets_ratio_one_with_a_warning():
  names = ["encoder.layers.0.w", "encoder.layers.12.x", "pooler.dense.weight"]
  with pytest.warns(UserWarning, match=r"n_layers=12 but the tree shows 13 layers.*ratio 1"):
    lm = path_rule.path_layers(tree_of(names), n_layers=12)
  assert lm["encoder.layers.12.x"] == Placement("ratio", ratio=1.0)
  assert lm.ratio("encoder.layers.0.w", 0.9) == pytest.approx(0.9 ** 12)
  with pytest.raises(ValueError, match=r"'encoder.layers.13.x' is in layer 13, but n_layers=12"):
    path_rule.path_layers(tree_of(["encoder.layers.13.x"]), n_layers=12)


def test_paddle_decoder_names_keep_paddles_ratio_one_but_warn():
  names = ["encoder.layers.0.w", "encoder.layers.1.w", "decoder.layers.0.w"]
  with pytest.warns(UserWarning, match=r"PaddleNLP's rule does not read.*decoder.layers.0.w"):
    lm = path_rule.path_layers(tree_of(names), n_layers=2)
  assert lm["decoder.layers.0.w"] == Placement("head")


# --------------------------------------------------------------------------- layouts


class Block(nn.Module):
  @nn.compact
  def __call__(self, x):
    return x + nn.Dense(x.shape[-1])(nn.LayerNorm()(x))


class BertLayer(Block):
  pass


class AutoNamed(nn.Module):
  """Flax auto-names: Embed_0, BertLayer_0..2, LayerNorm_0, Dense_0."""

  @nn.compact
  def __call__(self, ids):
    x = nn.Embed(10, 4)(ids)
    for _ in range(3):
      x = BertLayer()(x)
    return nn.Dense(2)(nn.LayerNorm()(x))


def linen_params(model):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3), jnp.int32))["params"]


def auto_named_dict(params):
  """``name_dict`` for :class:`AutoNamed`: its LayerNorm_0 and Dense_0 come after the layers."""
  paths = [jax.tree_util.keystr(p, simple=True, separator="/")
           for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  return {p: p if p.startswith("BertLayer") else
          p.replace("LayerNorm_0", "final_norm").replace("Dense_0", "head") for p in paths}


def test_flax_auto_named_block_class():
  # LayerNorm_0 and Dense_0 name no side of the layers (refused, see issue 16 below): name_dict
  # says where they are.
  params = linen_params(AutoNamed())
  lm = quiet_layers(params, name_dict=auto_named_dict(params))
  r = ratios(lm)
  assert r["Embed_0/embedding"] == D ** 4
  assert r["BertLayer_0/Dense_0/kernel"] == D ** 3 and r["BertLayer_2/LayerNorm_0/scale"] == D
  assert r["Dense_0/kernel"] == r["LayerNorm_0/scale"] == 1.0


@pytest.mark.parametrize("stem", ["BertLayer", "TransformerLayer", "DecoderLayer", "MixerBlock",
                                  "ResNetBlock", "encoderblock", "decoder_block", "decoder_layer",
                                  "transformer_layer", "layers", "layer", "block", "blocks"])
def test_numbered_siblings(stem):
  paths = ["params/embed/embedding"] + [f"params/{stem}_{i}/mlp/kernel" for i in range(3)] + [
      "params/norm/scale"]
  r = ratios(quiet_layers(tree_of(paths)))
  assert [r[f"params/{stem}_{i}/mlp/kernel"] for i in range(3)] == [D ** 3, D ** 2, D]
  assert r["params/embed/embedding"] == D ** 4 and r["params/norm/scale"] == 1.0


@pytest.mark.parametrize("container", ["h", "layer", "layers", "blocks", "block", "resblocks",
                                       "attention_blocks"])
def test_numbered_children(container):
  paths = ["wte/embedding"] + [f"model/{container}/{i}/attn/kernel" for i in range(2)]
  r = ratios(quiet_layers(tree_of(paths)))
  assert r["model/" + container + "/0/attn/kernel"] == D ** 2 and r["wte/embedding"] == D ** 3


def test_haiku_tilde_layers():
  # dm-haiku module names: 'transformer/~/layer_0/~/attn' joined with '/'.
  paths = ["transformer/~/embed/embeddings"] + [
      f"transformer/~/layer_{i}/~/attn/linear/w" for i in range(2)] + ["transformer/~/ln_f/scale"]
  r = ratios(quiet_layers(tree_of(paths)))
  assert r["transformer/~/layer_1/~/attn/linear/w"] == D
  assert r["transformer/~/embed/embeddings"] == D ** 3
  assert r["transformer/~/ln_f/scale"] == 1.0


def test_nested_stages_are_flattened_in_order():
  # HF transformers Flax ResNet (4.4x): resnet/encoder/stages/S/layers/B, depths [2, 1, 3].
  depths = [2, 1, 3]
  paths = ["resnet/embedder/embedder/convolution/kernel", "classifier/1/kernel"] + [
      f"resnet/encoder/stages/{s}/layers/{b}/shortcut/convolution/kernel"
      for s, n in enumerate(depths) for b in range(n)]
  lm = quiet_layers(tree_of(paths))
  flat = [lm[f"resnet/encoder/stages/{s}/layers/{b}/shortcut/convolution/kernel"].layer
          for s, n in enumerate(depths) for b in range(n)]
  assert flat == list(range(6)) and lm.depths == (("", 6),)
  assert lm["resnet/embedder/embedder/convolution/kernel"] == Placement("embedding")
  assert lm["classifier/1/kernel"] == Placement("head")


def test_haiku_block_groups_are_flattened():
  # dm-haiku ResNet50 (hk.nets.ResNet): res_net50/~/block_group_G/~/block_B/~/conv_0/w.
  paths = ["res_net50/~/initial_conv/w", "res_net50/~/initial_batchnorm/scale",
           "res_net50/~/logits/w"] + [
      f"res_net50/~/block_group_{g}/~/block_{b}/~/conv_0/w" for g in range(2) for b in range(2)]
  lm = quiet_layers(tree_of(paths))
  assert lm["res_net50/~/block_group_1/~/block_0/~/conv_0/w"].layer == 2
  assert lm["res_net50/~/initial_conv/w"].kind == "embedding"
  assert lm["res_net50/~/initial_batchnorm/scale"].kind == "embedding"
  assert lm["res_net50/~/logits/w"].kind == "head"


def test_swin_stage_leaves_between_blocks_are_refused():
  # timm Swin names as a flax tree: layers/S/blocks/B and a stage's own downsample.
  paths = [f"layers/{s}/blocks/{b}/mlp/kernel" for s in range(2) for b in range(2)]
  assert quiet_layers(tree_of(paths))["layers/1/blocks/1/mlp/kernel"].layer == 3
  with pytest.raises(path_rule.LayerRuleError,
                     match=r"(?s)outside their blocks.*layers/0/downsample"):
    path_rule.path_layers(tree_of(paths + ["layers/0/downsample/norm/scale"]))


def test_t5_sublayers_stay_inside_their_block():
  # HF transformers Flax T5: encoder/block/N/layer/M (M: self-attn, [cross-attn,] FF).
  paths = ["shared/embedding", "lm_head/kernel", "encoder/final_layer_norm/weight",
           "decoder/final_layer_norm/weight"]
  paths += [f"encoder/block/{i}/layer/{m}/x/kernel" for i in range(3) for m in range(2)]
  paths += [f"decoder/block/{i}/layer/{m}/x/kernel" for i in range(2) for m in range(3)]
  r = ratios(quiet_layers(tree_of(paths)))
  assert [r[f"encoder/block/{i}/layer/1/x/kernel"] for i in range(3)] == [D ** 3, D ** 2, D]
  assert [r[f"decoder/block/{i}/layer/2/x/kernel"] for i in range(2)] == [D ** 2, D]
  assert r["shared/embedding"] == D ** 4  # shared by both stacks: the deepest one's embedding.
  assert r["lm_head/kernel"] == r["encoder/final_layer_norm/weight"] == 1.0


def test_two_towers_each_get_their_depth():
  # HF transformers Flax CLIP: text 2 layers, vision 3 layers.
  paths = ["text_model/embeddings/token_embedding/embedding", "text_model/final_layer_norm/scale",
           "vision_model/embeddings/class_embedding", "vision_model/pre_layrnorm/scale",
           "vision_model/post_layernorm/scale", "visual_projection/kernel", "logit_scale"]
  paths += [f"text_model/encoder/layers/{i}/mlp/fc1/kernel" for i in range(2)]
  paths += [f"vision_model/encoder/layers/{i}/mlp/fc1/kernel" for i in range(3)]
  lm = quiet_layers(tree_of(paths))
  assert dict(lm.depths) == {"text_model/encoder/layers": 2, "vision_model/encoder/layers": 3}
  r = ratios(lm)
  assert r["text_model/encoder/layers/1/mlp/fc1/kernel"] == D
  assert r["vision_model/encoder/layers/0/mlp/fc1/kernel"] == D ** 3
  assert r["text_model/embeddings/token_embedding/embedding"] == D ** 3
  assert r["vision_model/pre_layrnorm/scale"] == r["vision_model/embeddings/class_embedding"] == (
      D ** 4)
  assert r["vision_model/post_layernorm/scale"] == r["visual_projection/kernel"] == 1.0
  # n_layers: a dict per stack; one int for stacks of different depth is an error.
  quiet_layers(tree_of(paths), n_layers={"text_model": 2, "vision_model": 3})
  with pytest.raises(ValueError, match=r"n_layers=3 is one number.*different depths"):
    path_rule.path_layers(tree_of(paths), n_layers=3)
  with pytest.raises(ValueError, match=r"gives no depth for the stack 'vision_model"):
    path_rule.path_layers(tree_of(paths), n_layers={"text_model": 2})


def test_flax_wmt_encoder_and_decoder():
  # flax examples/wmt: encoder/encoderblock_N, decoder/encoderdecoderblock_N.
  paths = ["shared_embedding/embedding", "encoder/encoder_norm/scale",
           "decoder/encoderdecoder_norm/scale", "decoder/logitdense/kernel",
           "encoder/posembed_input/pos_embedding"]
  paths += [f"encoder/encoderblock_{i}/MlpBlock_0/Dense_0/kernel" for i in range(3)]
  paths += [f"decoder/encoderdecoderblock_{i}/MlpBlock_0/Dense_0/kernel" for i in range(3)]
  r = ratios(quiet_layers(tree_of(paths)))
  assert r["decoder/encoderdecoderblock_2/MlpBlock_0/Dense_0/kernel"] == D
  assert r["encoder/encoderblock_0/MlpBlock_0/Dense_0/kernel"] == D ** 3
  assert r["encoder/posembed_input/pos_embedding"] == D ** 4
  assert r["decoder/logitdense/kernel"] == 1.0


def test_input_stage_parts_and_output_heads():
  # Whisper conv1/conv2, wav2vec2 feature extractor/projection, OPT project_in, ViT cls tokens,
  # ResNet stems; unembed/embed_out/reverse_embeddings/lm_head are heads.
  paths = ["model/encoder/conv1/kernel", "model/encoder/conv2/kernel",
           "wav/feature_extractor/conv_layers/0/conv/kernel", "wav/feature_projection/kernel",
           "model/decoder/project_in/kernel", "cls", "vit/embeddings/cls_token", "reg_token",
           "mask_token", "pos_embed", "conv_root/kernel", "gn_root/scale", "stem/conv/kernel",
           "unembed/w", "embed_out/kernel", "reverse_embeddings", "lm_head/kernel",
           "cls/predictions/transform/dense/kernel", "model/decoder/project_out/kernel"]
  paths += [f"model/encoder/layers/{i}/fc1/kernel" for i in range(2)]
  lm = quiet_layers(tree_of(paths))
  for p in paths[:13]:
    assert lm[p].kind == "embedding", p
  for p in paths[13:19]:
    assert lm[p].kind == "head", p


def test_timm_dotted_names_in_a_flat_dict():
  # timm ViT state-dict names (0.9 layout) in a flat dict.
  paths = ["cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "head.weight"]
  paths += [f"blocks.{i}.attn.qkv.weight" for i in range(3)]
  r = ratios(quiet_layers(tree_of(paths)))
  assert [r[f"blocks.{i}.attn.qkv.weight"] for i in range(3)] == [D ** 3, D ** 2, D]
  assert r["cls_token"] == r["pos_embed"] == r["patch_embed.proj.weight"] == D ** 4
  assert r["norm.weight"] == r["head.weight"] == 1.0


def test_nnx_list_and_non_float_leaves():
  from flax import nnx

  class Model(nnx.Module):
    def __init__(self, rngs):
      self.embed = nnx.Embed(5, 2, rngs=rngs)
      self.layers = nnx.List([nnx.Linear(2, 2, rngs=rngs) for _ in range(3)])
      self.head = nnx.Linear(2, 2, rngs=rngs)
      self.count = nnx.Variable(jnp.zeros((), jnp.int32))

  state = nnx.state(Model(nnx.Rngs(0)))
  lm = quiet_layers(state)
  assert "count/value" not in lm and lm["layers/2/kernel/value"].layer == 2
  assert lm["embed/embedding/value"].kind == "embedding"


def test_same_result_for_arrays_and_shapes():
  params = linen_params(AutoNamed())
  real = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)
  names = auto_named_dict(params)
  assert path_rule.path_layers(real, name_dict=names) == path_rule.path_layers(
      params, name_dict=names)


# --------------------------------------------------------------------------- refusals


class SequentialHead(nn.Module):
  """Block list attribute (layers_0..2) and an nn.Sequential head (head/layers_0, head/layers_2)."""

  def setup(self):
    self.embed = nn.Embed(10, 4)
    self.layers = [Block() for _ in range(3)]
    self.head = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(2)])

  def __call__(self, ids):
    x = self.embed(ids)
    for layer in self.layers:
      x = layer(x)
    return self.head(x)


def test_sequential_head_beside_the_layers_is_refused():
  with pytest.raises(path_rule.LayerRuleError) as err:
    path_rule.path_layers(linen_params(SequentialHead()))
  msg = str(err.value)
  assert "several candidate layer families" in msg
  assert "head/layers_0/" in msg and "head/layers_2/" in msg
  assert "embed/embedding" not in msg  # the paths in question, not the first leaves.
  assert "trace_layers(fn, params" in msg and "name_dict" in msg and "set_param_lr_fun" in msg


def test_equinox_vit_head_mlp_is_refused():
  # equinox docs ViT (0.11): attention_blocks/N beside the head's eqx.nn.MLP mlp/layers/N.
  paths = ["patch_embedding/linear/weight", "positional_embedding", "cls_token", "norm/weight"]
  paths += [f"attention_blocks/{i}/attention/query_proj/weight" for i in range(3)]
  paths += [f"mlp/layers/{i}/weight" for i in range(2)]
  with pytest.raises(path_rule.LayerRuleError, match=r"(?s)several candidate.*mlp/layers/1/weight"):
    path_rule.path_layers(tree_of(paths))


def test_one_based_numbering_is_refused():
  # keras-hub ViT: transformer_block_1..L.
  paths = ["token_embedding/embeddings"] + [f"transformer_block_{i}/dense/kernel"
                                            for i in range(1, 4)]
  with pytest.raises(path_rule.LayerRuleError, match=r"(?s)no layer 0.*transformer_block_1/dense"):
    path_rule.path_layers(tree_of(paths))


def test_hybrid_vit_resnet_stages_are_refused():
  # google-research vision_transformer R50+ViT: block1/unit1 stages before the Transformer.
  paths = ["conv_root/kernel", "gn_root/scale", "block1/unit1/conv1/kernel",
           "block2/unit1/conv1/kernel"]
  paths += [f"Transformer/encoderblock_{i}/MlpBlock_3/Dense_0/kernel" for i in range(2)]
  with pytest.raises(path_rule.LayerRuleError, match=r"(?s)block1/unit1/conv1/kernel"):
    path_rule.path_layers(tree_of(paths))


def test_unused_numbered_containers_are_refused():
  paths = ["embed/embedding", "experts/0/w", "experts/1/w"] + [
      f"layers_{i}/w" for i in range(2)]
  with pytest.raises(path_rule.LayerRuleError, match=r"(?s)does not read as layers.*experts/1/w"):
    path_rule.path_layers(tree_of(paths))
  with pytest.raises(path_rule.LayerRuleError, match=r"(?s)'0/w'|0/w"):
    path_rule.path_layers([{"w": jnp.zeros(2)}, {"w": jnp.zeros(2)}])


def test_no_layers_at_all_gives_heads():
  lm = quiet_layers({"embed": jnp.zeros(2), "w": jnp.zeros(2)})
  assert set(lm.values()) == {Placement("head")} and lm.depths == ()


# --------------------------------------------------------------------------- n_layers


def test_n_layers_larger_than_the_tree_warns_with_both_numbers():
  paths = ["embed/embedding"] + [f"layers_{i}/w" for i in range(4)]
  with pytest.warns(UserWarning, match=r"n_layers=12 but the tree shows 4 layers"):
    lm = path_rule.path_layers(tree_of(paths), n_layers=12)
  assert lm.ratio("layers_3/w", 0.8) == pytest.approx(0.8 ** 9)
  assert quiet_layers(tree_of(paths), n_layers=4) == quiet_layers(tree_of(paths))
  with pytest.raises(ValueError, match=r"'layers_3/w' is in layer 3, but n_layers=2"):
    path_rule.path_layers(tree_of(paths), n_layers=2)
  with pytest.raises(TypeError, match="n_layers must be an int"):
    path_rule.path_layers(tree_of(paths), n_layers=2.5)


# --------------------------------------------------------------------------- stacked


class Body(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    return Block()(x), None


class ScannedModel(nn.Module):
  @nn.compact
  def __call__(self, ids):
    x = nn.Embed(10, 4, name="embed")(ids)
    stack = nn.scan(Body, variable_axes={"params": 0}, split_rngs={"params": True},
                    length=3)
    x, _ = stack()(x, None)
    return nn.Dense(2, name="head")(x)


def test_auto_stacks_nn_scan():
  lm = quiet_layers(linen_params(ScannedModel()))
  place = lm["ScanBody_0/Block_0/Dense_0/kernel"]
  assert place == Placement("layer", layer=0, axis=0) and lm.depths == (("", 3),)
  assert [lm.ratio("ScanBody_0/Block_0/Dense_0/kernel", D, j) for j in range(3)] == [
      D ** 3, D ** 2, D]
  assert lm.ratio("embed/embedding", D) == D ** 4 and lm["head/kernel"].kind == "head"
  with pytest.raises(ValueError, match=r"n_layers=4 but the stacked leaves.*hold 3"):
    path_rule.path_layers(linen_params(ScannedModel()), n_layers=4)


def test_auto_stacks_nnx_vmap():
  from flax import nnx

  class Layer(nnx.Module):
    def __init__(self, rngs):
      self.lin = nnx.Linear(2, 2, rngs=rngs)

  class Model(nnx.Module):
    def __init__(self, rngs):
      @nnx.split_rngs(splits=3)
      @nnx.vmap(in_axes=(0,), out_axes=0)
      def make(rngs):
        return Layer(rngs)

      self.layers = make(rngs)
      self.head = nnx.Linear(2, 2, rngs=rngs)

  lm = quiet_layers(nnx.state(Model(nnx.Rngs(0)), nnx.Param))
  assert lm["layers/lin/kernel/value"] == Placement("layer", layer=0, axis=0)
  assert dict(lm.depths) == {"": 3}


@dataclasses.dataclass
class Pair:
  w: jax.Array
  b: jax.Array


jax.tree_util.register_dataclass(Pair, data_fields=["w", "b"], meta_fields=[])


@pytest.mark.parametrize("tree", [
    {"embed": jnp.zeros((3, 2)), "layers": [jnp.zeros((3, 2)), jnp.zeros((3, 2))]},  # a list
    {"layers": {0: jnp.zeros((3, 2)), 1: jnp.zeros((3, 2))}},                        # int keys
    {"layers": Pair(jnp.zeros((3, 2)), jnp.zeros((3,)))},                             # dataclass
    {"layers": {"layers_0": {"w": jnp.zeros((3, 2))}, "layers_1": {"w": jnp.zeros((3, 2))}}},
    {"layers": {"0": {"w": jnp.zeros((3, 3))}, "2": {"w": jnp.zeros((3, 3))}},
     "pooler": {"layers": {"w": jnp.zeros((3, 3))}}},
    {"layers": {"0": {"w": jnp.zeros((3, 3))}, "1": {"w": jnp.zeros((3, 3))}},
     "other": {"layers": {"w": jnp.zeros((3, 3))}}},
])
def test_auto_never_fires_on_unstacked_layouts(tree):
  if isinstance(tree["layers"], Pair):  # a custom pytree: refused, with the fix.
    with pytest.raises(path_rule.LayerRuleError,
                       match=r"(?s)custom pytree.*stacked=\{'path/prefix': axis\}.*layers/w"):
      path_rule.path_layers(tree)
    return
  if "other" in tree:  # beside layers, a part with no role name is refused, never stacked.
    with pytest.raises(path_rule.LayerRuleError, match=r"(?s)no row of the rule.*other/layers/w"):
      path_rule.path_layers(tree)
    return
  lm = path_rule.path_layers(tree)
  assert all(p.axis is None for p in lm.values())
  assert {p.kind for p in lm.values()} >= {"layer"}


def test_auto_refuses_a_container_with_mixed_leading_lengths():
  tree = {"embed": jnp.zeros((5, 2)),
          "layers": {"attn": jnp.zeros((4, 3, 4)), "bias": jnp.zeros((12,))}}
  with pytest.raises(path_rule.LayerRuleError,
                     match=r"(?s)axis-0 lengths differ.*stacked=\{'path/prefix': axis\}.*layers/"):
    path_rule.path_layers(tree)
  lm = quiet_layers(tree, stacked=None)
  assert set(lm.values()) == {Placement("head"), Placement("head")}


def test_explicit_stacked_forms_and_errors():
  tree = {"decoder": {"layers": {"kernel": jnp.zeros((2, 3, 4)), "bias": jnp.zeros((2, 3))}},
          "decoder_embed": jnp.zeros((5, 2))}
  by_prefix = quiet_layers(tree, stacked={"decoder/layers": 1}, n_layers=3)
  by_fn = quiet_layers(tree, stacked=lambda n: 1 if "/layers/" in n else None)
  assert by_prefix == by_fn
  assert by_prefix["decoder/layers/kernel"] == Placement("layer", layer=0, axis=1)
  assert by_prefix.ratio("decoder_embed", D) == D ** 4
  with pytest.raises(ValueError, match=r"'decoder/layers/bias'.*axis 2.*out of range"):
    path_rule.path_layers(tree, stacked={"decoder/layers": 2})
  with pytest.raises(ValueError, match=r"axis 1.*length 3 is not n_layers=4"):
    path_rule.path_layers(tree, stacked={"decoder/layers": 1}, n_layers=4)
  with pytest.raises(TypeError, match="stacked must be"):
    path_rule.path_layers(tree, stacked="yes")
  with pytest.raises(TypeError, match="stacked must be"):
    path_rule.path_layers(tree, stacked={"decoder": 1.5})


def test_maxtext_layer_axis_1_is_not_guessed_against_n_layers():
  tree = {"decoder": {"layers": {"kernel": jnp.zeros((8, 4, 8))}}}
  with pytest.raises(ValueError, match=r"stacked=\{'path/prefix': axis\}"):
    path_rule.path_layers(tree, n_layers=4)


def test_result_does_not_depend_on_a_traced_n_layers():
  tree = linen_params(ScannedModel())
  expected = path_rule.path_layers(tree)
  out = []
  jax.jit(lambda n: out.append(path_rule.path_layers(tree, n_layers=n)) or n)(3)
  assert out == [expected]


# ------------------------------------------------------------------- issue 10: no silent guesses


@pytest.mark.parametrize("name", ["transformer/pos_embs", "params/pos_emb", "position_embeddings",
                                  "params/positional_embedding", "params/transformer/wpe",
                                  "tok_emb/weight", "params/posemb", "Emb_0/embedding"])
def test_learned_position_embeddings_are_embeddings(name):
  assert path_rule.classify(name).kind == "embedding"


@pytest.mark.parametrize("name", ["params/remember/kernel", "params/embsize", "membrane/w"])
def test_emb_only_as_a_word(name):
  assert path_rule.classify(name).kind == "other"


def test_haiku_pos_embs_gets_the_embedding_ratio():
  # dm-haiku: hk.get_parameter("pos_embs", ...) inside the `transformer` module, before layer_0.
  paths = ["transformer/pos_embs", "transformer/~/embed/embeddings", "transformer/~/ln_f/scale",
           "unembed/w"] + [f"transformer/~/layer_{i}/fc1/w" for i in range(3)]
  r = ratios(quiet_layers(tree_of(paths)))
  assert r["transformer/pos_embs"] == r["transformer/~/embed/embeddings"] == D ** 4
  assert r["transformer/~/ln_f/scale"] == r["unembed/w"] == 1.0


class EncoderBlock(Block):
  pass


class _RematBody(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    return EncoderBlock()(x), None  # auto-named EncoderBlock_0 inside the scanned `blocks`


class NamedScan(nn.Module):
  container: str = "blocks"

  @nn.compact
  def __call__(self, ids):
    x = nn.Embed(10, 4, name="embed")(ids)
    body = nn.scan(nn.remat(_RematBody), variable_axes={"params": 0},
                   split_rngs={"params": True}, length=3)
    x, _ = body(name=self.container)(x, None)
    return nn.Dense(2, name="head")(nn.LayerNorm(name="final_norm")(x))


def test_nn_scan_body_in_a_named_container_is_a_stack_not_layer_0():
  params = linen_params(NamedScan())
  assert "EncoderBlock_0" in params["blocks"]
  lm = quiet_layers(params)
  kernel = "blocks/EncoderBlock_0/Dense_0/kernel"
  assert lm[kernel] == Placement("layer", layer=0, axis=0) and lm.depths == (("", 3),)
  assert [lm.ratio(kernel, D, j) for j in range(3)] == [D ** 3, D ** 2, D]
  assert all(lm[p].axis == 0 for p in lm if p.startswith("blocks/"))
  assert lm.ratio("embed/embedding", D) == D ** 4
  assert lm["head/kernel"].kind == lm["final_norm/scale"].kind == "head"
  assert quiet_layers(params, stacked={"blocks": 0}) == lm  # the explicit form agrees
  # stacked=None: the caller says there are no stacks, so EncoderBlock_0 is the one layer.
  assert path_rule.path_layers(params, stacked=None)[kernel] == Placement("layer", layer=0)


def test_nn_scan_body_in_an_unknown_container_is_refused_with_the_fix():
  params = linen_params(NamedScan(container="trunk"))
  with pytest.raises(path_rule.LayerRuleError,
                     match=r"(?s)'trunk' may be an nn.scan stack.*EncoderBlock_0.*axis-0 length 3"
                           r".*stacked=\{'trunk': 0\}.*trunk/EncoderBlock_0/Dense_0/kernel"
                           r".*trace_layers"):
    path_rule.path_layers(params)
  lm = quiet_layers(params, stacked={"trunk": 0})
  assert lm.ratio("trunk/EncoderBlock_0/Dense_0/kernel", D, 0) == D ** 3


@pytest.mark.parametrize("tree", [
    {"layers_0": {"kernel": jnp.zeros((3, 3)), "bias": jnp.zeros(3)}},  # 1-D bias: not stacked
    {"layers_0": {"w": jnp.zeros((2, 3))}, "head": {"w": jnp.zeros(3)}},  # a single leaf
    {"blocks": {"Block_0": {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}}},  # lengths differ
    {"blocks": {"Block_0": {"w": jnp.zeros((1, 4)), "b": jnp.zeros((1, 4))}}},  # length 1
])
def test_one_layer_models_stay_one_layer(tree):
  lm = quiet_layers(tree)
  assert {p.axis for p in lm.values()} == {None}
  assert lm.depths == (("", 1),)


def test_scan_body_beside_numbered_layers():
  stacked = {"w": jnp.zeros((3, 4, 4)), "b": jnp.zeros((3, 4))}
  towers = {"encoder": {f"layers_{i}": {"w": jnp.zeros(4)} for i in range(2)},
            "decoder": {"blocks": {"DecoderBlock_0": stacked}}}
  lm = quiet_layers(towers)
  assert dict(lm.depths) == {"encoder/layers": 2, "decoder/blocks": 3}
  assert lm.ratio("decoder/blocks/DecoderBlock_0/w", D, 0) == D ** 3
  assert lm.ratio("encoder/layers_0/w", D) == D ** 2
  mixed = {"layers_0": {"w": jnp.zeros(4)}, "layers_1": {"w": jnp.zeros(4)},
           "blocks": {"Block_0": stacked}}
  with pytest.raises(path_rule.LayerRuleError, match=r"(?s)several candidate layer stacks.*"
                                                 r"blocks/Block_0/b"):
    path_rule.path_layers(mixed)


# ------------------------------------------------------------ issue 16: positive evidence only


def blocks_tree(outside, n=3):
  """``{name: leaf}`` for ``outside`` beside a ``blocks`` list of ``n`` layers."""
  tree: dict[str, object] = {name: jnp.zeros((4, 2)) for name in outside}
  tree["blocks"] = [{"w": jnp.zeros((2, 2))} for _ in range(n)]
  return tree


def test_a_leaf_outside_the_layers_with_no_evidence_is_refused_by_name():
  # `tok` and `out` are neither an embedding-stage name nor a post-stack name: the rule used to
  # put both at the head (ratio 1), so the token table trained 4 powers of the decay too fast.
  with pytest.raises(path_rule.LayerRuleError) as err:
    path_rule.path_layers(blocks_tree(["tok", "out"]))
  msg = str(err.value)
  assert "    tok\n" in msg and "    out\n" in msg and "blocks/0/w" not in msg
  assert "trace_layers(fn, params" in msg and "name_dict" in msg and "set_param_lr_fun" in msg
  assert "`norm`" in msg and "`ln_pre`" in msg  # the vocabulary it cites is the table's


@pytest.mark.parametrize("name", ["tok", "out", "proj", "w", "Dense_0", "LayerNorm_0", "ln",
                                  "layer_norm", "pos", "fc", "conv", "Conv_0"])
def test_ambiguous_short_names_beside_the_layers_raise(name):
  with pytest.raises(path_rule.LayerRuleError,
                     match=rf"(?s)no row of the rule table.*    {name}\n"):
    path_rule.path_layers(blocks_tree(["wte", name, "ln_f"]))


@pytest.mark.parametrize("name", ["wte", "wpe", "tok_embeddings", "embed_tokens", "patch_embed",
                                  "cls_token", "pos_embed", "stem", "reg_token", "dist_token",
                                  "pre_layer_norm", "pre_norm", "ln_pre", "norm_pre", "embed_ln",
                                  "pre_layernorm", "pre_layrnorm", "layernorm_embedding"])
def test_embedding_stage_vocabulary(name):
  lm = quiet_layers(blocks_tree([name, "ln_f"]))
  assert lm.ratio(name, D) == D ** 4, lm[name]


@pytest.mark.parametrize("name", ["ln_f", "final_layer_norm", "final_norm", "norm", "layernorm",
                                  "post_layernorm", "ln_post", "norm_f", "pooler", "head",
                                  "lm_head", "classifier", "unembed", "fc_norm", "encoder_norm",
                                  "final_logits_bias", "logit_scale", "text_projection",
                                  "project_out", "pooled_dense"])
def test_post_stack_vocabulary(name):
  lm = quiet_layers(blocks_tree(["wte", name]))
  assert lm[name] == Placement("head")


def test_a_decay_of_one_never_raises_on_unplaced_leaves():
  import optax_ldl

  tree = blocks_tree(["tok", "out"])
  tx = optax_ldl.adamwdl(1e-3, layerwise_decay=1.0)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, tree), tx.init(tree), tree)
  assert jax.tree.structure(updates) == jax.tree.structure(tree)
  assert optax_ldl.describe(tree, layerwise_decay=1.0).rows
  with pytest.raises(path_rule.LayerRuleError, match="tok"):
    optax_ldl.adamwdl(1e-3, layerwise_decay=0.8).init(tree)


def test_flax_auto_named_head_beside_the_layers_is_refused():
  # Embed_0, BertLayer_0..2, then LayerNorm_0 and Dense_0: only the order of the calls says that
  # the norm and the dense come after the layers, and names do not carry it.
  with pytest.raises(path_rule.LayerRuleError,
                     match=r"(?s)no row of the rule table.*Dense_0/kernel.*LayerNorm_0/scale"):
    path_rule.path_layers(linen_params(AutoNamed()))


def nested_paths(chunks, leaf="attn/w"):
  """``blocks/<c>/blocks/<b>/<leaf>`` for ``chunks`` = blocks per chunk."""
  return [f"blocks/{c}/blocks/{b}/{leaf}" for c, n in enumerate(chunks) for b in range(n)]


@pytest.mark.parametrize("chunks", [[4], [2, 2], [2, 3, 1]])
def test_nested_numbering_of_the_same_kind_is_flattened(chunks):
  paths = ["patch_embed/w", "pos_embed", "norm/scale", *nested_paths(chunks)]
  lm = quiet_layers(tree_of(paths))
  flat = [lm[p].layer for p in nested_paths(chunks)]
  assert flat == list(range(sum(chunks))) and lm.depths == (("", sum(chunks)),)
  assert lm.ratio("pos_embed", D) == lm.ratio("patch_embed/w", D) == D ** (sum(chunks) + 1)
  assert lm.ratio("norm/scale", D) == 1.0


@pytest.mark.parametrize("layout", ["layers/{i}/layers/{j}", "layers_{i}/layers_{j}",
                                    "blocks/{i}/blocks/{j}", "h/{i}/h/{j}"])
def test_nested_layouts_of_the_same_kind(layout):
  paths = ["wte"] + [layout.format(i=i, j=j) + "/mlp/w" for i in range(2) for j in range(3)]
  lm = quiet_layers(tree_of(paths))
  assert [lm[p].layer for p in paths[1:]] == list(range(6))
  assert lm.ratio("wte", D) == D ** 7


@pytest.mark.parametrize("bad, why", [
    ({"blocks/0/blocks/0/w": (2,), "blocks/0/blocks/2/w": (2,)}, "not numbered 0.."),
    ({"blocks/0/blocks/1/w": (2,), "blocks/0/blocks/2/w": (2,)}, "not numbered 0.."),
    ({"blocks/0/blocks/0/w": (2,), "blocks/2/blocks/0/w": (2,)}, "not numbered 0.."),
    ({"blocks/0/blocks/0/w": (2,), "blocks/0/blocks/1/w": (3,)}, "same leaves"),
    ({"blocks/0/blocks/0/attn/w": (2,), "blocks/0/blocks/1/mlp/w": (2,)}, "same leaves"),
    ({"blocks/0/blocks/0/w": (2,), "blocks/0/norm/w": (2,)}, "outside"),
])
def test_nested_numbering_that_the_structure_does_not_prove_is_refused(bad, why):
  tree = {p: jax.ShapeDtypeStruct(s, jnp.float32) for p, s in bad.items()}
  tree["wte"] = jax.ShapeDtypeStruct((4, 2), jnp.float32)
  with pytest.raises(path_rule.LayerRuleError, match=rf"(?s){why}.*blocks/0/"):
    path_rule.path_layers(tree)


def test_a_numbered_family_inside_a_named_part_of_a_layer_stays_in_that_layer():
  # nn.Sequential inside a block (`layers_i/mlp/layers_j`): the MLP's parts, not more layers.
  paths = ["embed/embedding"] + [f"layers_{i}/mlp/layers_{j}/kernel" for i in range(3)
                                 for j in (0, 2)]
  lm = quiet_layers(tree_of(paths))
  assert [lm[f"layers_{i}/mlp/layers_2/kernel"].layer for i in range(3)] == [0, 1, 2]


@pytest.mark.parametrize("module, out", [
    ("embeddings", "reverse_embeddings"), ("token_embedding", "reverse_embeddings"),
    ("embeddings", "unembed"), ("embedder", "output_projection"), ("embeddings", "lm_head")])
def test_an_output_projection_inside_the_embedding_module_is_the_head(module, out):
  paths = [f"{module}/table", f"{module}/{out}/kernel", "ln_f/scale"] + [
      f"layers/{i}/w" for i in range(2)]
  lm = quiet_layers(tree_of(paths))
  assert lm[f"{module}/table"] == Placement("embedding")
  assert lm[f"{module}/{out}/kernel"] == Placement("head")


def test_a_shared_relative_position_bias_gets_ratio_one():
  # BEiT's shared `rel_pos_bias` (used by every layer): ratio 1, as get_num_layer_for_vit.
  paths = ["cls_token", "rel_pos_bias/relative_position_bias_table", "norm/scale"] + [
      f"blocks/{i}/attn/qkv/kernel" for i in range(2)]
  lm = quiet_layers(tree_of(paths))
  assert lm["rel_pos_bias/relative_position_bias_table"] == Placement("ratio", ratio=1.0)


def test_a_shared_relative_position_table_is_not_the_embedding_stage():
  # DeBERTa(-v2/v3): `encoder/rel_embeddings` is read by the attention of every layer (the
  # disentangled relative positions), so it is the shared bias of BEiT, not an input
  # embedding, although its name holds `embed`; the word table stays the embedding stage.
  paths = ["embeddings/word_embeddings/embedding", "encoder/rel_embeddings/embedding",
           "pooler/dense/kernel"] + [
      f"encoder/layer/{i}/attention/self/query_proj/kernel" for i in range(2)]
  # DeBERTa's `encoder/LayerNorm` (it normalizes the relative table) says nothing of its
  # side of the layers: refused by name, not guessed.
  with pytest.raises(path_rule.LayerRuleError, match="encoder/LayerNorm/scale"):
    quiet_layers(tree_of(paths + ["encoder/LayerNorm/scale"]))
  lm = quiet_layers(tree_of(paths))
  assert lm["encoder/rel_embeddings/embedding"] == Placement("ratio", ratio=1.0)
  assert lm["embeddings/word_embeddings/embedding"] == Placement("embedding")
  assert lm["encoder/layer/1/attention/self/query_proj/kernel"] == Placement("layer", layer=1)
