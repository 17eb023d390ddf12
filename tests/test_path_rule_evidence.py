"""Why the path rule placed each leaf: the row and key it read, as describe().evidence() shows."""

import jax
import jax.numpy as jnp
import pytest

import optax_ldl
from optax_ldl._src import path_rule


def sds(*shape):
  return jax.ShapeDtypeStruct(shape, jnp.float32)


def test_every_leaf_of_a_numbered_tree_has_its_reason():
  tree = {"transformer": {"wte": sds(5, 2), "ln_f": {"scale": sds(2)},
                          "h": {str(i): {"mlp": {"kernel": sds(2, 2)}} for i in range(2)}},
          "lm_head": {"kernel": sds(2, 5)}}
  lm = path_rule.path_layers(tree)
  assert dict(lm.evidence) == {
      "transformer/wte": "embedding vocabulary: 'wte'",
      "transformer/ln_f/scale": "post-stack vocabulary: 'ln_f'",
      "transformer/h/0/mlp/kernel": "row 'h/N' matched 'h/0'",
      "transformer/h/1/mlp/kernel": "row 'h/N' matched 'h/1'",
      "lm_head/kernel": "post-stack vocabulary: 'lm_head'",
  }


def test_flax_names_and_nested_numbering():
  flax = {f"layers_{i}": {"w": sds(2)} for i in range(2)}
  flax["embed"] = {"embedding": sds(4, 2)}
  assert path_rule.path_layers(flax).why("layers_1/w") == "row 'layers_N' matched 'layers_1'"
  nested = {"pos_embed": sds(4, 2),
            "blocks": {str(c): {"blocks": {str(b): {"w": sds(2)} for b in range(4)}}
                       for c in range(2)}}
  lm = path_rule.path_layers(nested)
  assert lm.why("blocks/1/blocks/2/w") == "nested 'blocks/1/blocks/2' flattened: 1*4+2"
  assert lm["blocks/1/blocks/2/w"].layer == 6
  assert lm.why("pos_embed") == "embedding vocabulary: 'pos_embed'"
  stages = {f"stages/{s}/layers/{b}/w": sds(2) for s, n in enumerate([2, 1]) for b in range(n)}
  assert path_rule.path_layers(stages).why("stages/1/layers/0/w") == (
      "row 'stages/S/layers/B' matched 'stages/1/layers/0', flattened: 2+0")


def test_stacked_paddle_shared_and_output_projection_reasons():
  scanned = {"embed": sds(4, 2), "layers": {"w": sds(3, 2, 2)}, "head": sds(2)}
  lm = path_rule.path_layers(scanned)
  assert lm.why("layers/w") == ("stacked='auto': 'layers' holds 3 layers on axis 0 "
                                "(row 'layers (stacked)')")
  assert lm.why("head") == "post-stack vocabulary: 'head'"
  paddle = {"encoder.layers.0.w": sds(2), "embeddings.word_embeddings.weight": sds(4, 2),
            "pooler.dense.weight": sds(2)}
  lm = path_rule.path_layers(paddle)
  assert lm.why("encoder.layers.0.w") == "Paddle rule: 'encoder.layers.0'"
  assert lm.why("embeddings.word_embeddings.weight") == "Paddle rule: the name contains 'embedding'"
  assert lm.why("pooler.dense.weight") == "Paddle rule: any other name, ratio 1"
  untied = {"token_embedding": {"embeddings": sds(4, 2), "reverse_embeddings": sds(2, 4)},
            "layers": {str(i): {"w": sds(2)} for i in range(2)},
            "rel_pos_bias": {"table": sds(3, 2)}}
  lm = path_rule.path_layers(untied)
  assert lm.why("token_embedding/reverse_embeddings") == (
      "post-stack vocabulary: 'reverse_embeddings' (an output projection, although inside "
      "'token_embedding')")
  assert lm.why("token_embedding/embeddings") == "embedding vocabulary: 'token_embedding'"
  assert lm.why("rel_pos_bias/table") == (
      "shared vocabulary: 'rel_pos_bias' (used by every layer: ratio 1, as BEiT)")


def test_two_stacks_name_the_stack_of_each_embedding():
  tree = {"text": {"embed": sds(4, 2), "layers": {str(i): {"w": sds(2)} for i in range(2)}},
          "vision": {"patch_embed": sds(4, 2),
                     "layers": {str(i): {"w": sds(2)} for i in range(3)}}}
  lm = path_rule.path_layers(tree)
  assert lm.why("vision/patch_embed") == (
      "embedding vocabulary: 'patch_embed', stack 'vision/layers' (longest common path)")


def test_describe_shows_the_evidence():
  params = {"embeddings": {"word_embeddings": {"embedding": jnp.zeros((5, 2))}},
            "encoder": {"layer": {str(i): {"dense": {"kernel": jnp.zeros((2, 2))}}
                                  for i in range(2)}},
            "classifier": {"kernel": jnp.zeros((2, 2))}}
  text = optax_ldl.describe(params, layerwise_decay=0.5).evidence()
  for why in ("embedding vocabulary: 'embeddings'", "row 'layer/N' matched 'layer/1'",
              "post-stack vocabulary: 'classifier'"):
    assert why in text, text
  rows = {r.path: r.evidence for r in optax_ldl.describe(params, layerwise_decay=0.5).rows}
  assert rows["encoder/layer/0/dense/kernel"] == "row 'layer/N' matched 'layer/0'"


@pytest.mark.parametrize("decay", [0.5, 1.0])
def test_evidence_does_not_change_equality(decay):
  params = {"wte": jnp.zeros((4, 2)), "h": [{"w": jnp.zeros(2)}] * 2}
  lm = path_rule.path_layers(params)
  assert lm == optax_ldl.LayerMap.build(dict(lm), dict(lm.depths))
  assert optax_ldl.describe(params, layerwise_decay=decay).rows
