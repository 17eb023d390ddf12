"""The path rule on keras-hub layouts: prefixed and auto-numbered block names (issue 16).

keras-hub names its blocks ``<tower>_encoder_block_N`` (CLIP, SigLIP),
``transformer_encoder_layer_N`` / ``transformer_decoder_layer_N`` (BART, T5, Whisper) or
``<model>_layer_N`` (FNet). Tiny random-init backbones on the JAX backend (no downloads); the
expected ratios are written by hand from each backbone's source (decay ``d = 0.5``: layer ``i``
of a stack of depth ``L`` is ``d**(L - i)``, the stack's embeddings ``d**(L + 1)``, the head 1).
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import optax_ldl
from optax_ldl._src import path_rule

D = 0.5


def _zeros(*names):
  return {n: jnp.zeros(2) for n in names}


def test_prefixed_keras_block_names_are_layers():
  for name, n in [("text_encoder_encoder_block_3", 3), ("transformer_encoder_layer_0", 0),
                  ("transformer_decoder_layer_2", 2),
                  ("disentangled_attention_encoder_layer_1", 1)]:
    m = path_rule.classify(f"{name}/attention/query/kernel")
    assert (m.kind, m.layer) == ("layer", n), name
  # Not a numbered block: a norm whose name ends with a number, a block without a number.
  assert path_rule.classify("transformer_layer_norm_0/gamma").kind != "layer"
  assert path_rule.classify("encoder_block/kernel").kind != "layer"


def test_tower_word_picks_the_embedding_stack_of_root_level_families():
  # keras-hub BART keeps both stacks at the root: the common path says nothing, the tower word
  # of the embedding's own key does. Encoder 2 layers, decoder 3: d**3 and d**4.
  params = {"encoder_position_embedding": jnp.zeros(2), "decoder_position_embedding": jnp.zeros(2),
            "token_embedding": jnp.zeros(2),
            **{f"transformer_encoder_layer_{i}": _zeros("w") for i in range(2)},
            **{f"transformer_decoder_layer_{i}": _zeros("w") for i in range(3)}}
  got = {r.path: r.lr_ratio for r in optax_ldl.describe(params, layerwise_decay=D).rows}
  assert got["encoder_position_embedding"] == D ** 3
  assert got["decoder_position_embedding"] == D ** 4
  assert got["token_embedding"] == D ** 4  # shared by both stacks: the deepest
  assert got["transformer_encoder_layer_0/w"] == D ** 2
  assert got["transformer_decoder_layer_0/w"] == D ** 3


def test_snake_case_block_family_needs_structural_proof():
  alike = {"embeddings": _zeros("w"), "pooled_dense": _zeros("w"),
           **{f"f_net_layer_{i}": {f"dense_{i + 3}": _zeros("kernel")} for i in range(3)}}
  got = {r.path: r.lr_ratio for r in optax_ldl.describe(alike, layerwise_decay=D).rows}
  # keras numbers sublayers across the model (dense_3, dense_4, ...): the members are alike.
  assert got == {"embeddings/w": D ** 4, "pooled_dense/w": 1.0, "f_net_layer_0/dense_3/kernel":
                 D ** 3, "f_net_layer_1/dense_4/kernel": D ** 2,
                 "f_net_layer_2/dense_5/kernel": D}
  # Members holding different leaves (an MLP of numbered dense layers): not proven, refused.
  unlike = {"embeddings": _zeros("w"), "head": _zeros("w"),
            "mlp_dense_layer_0": {"kernel": jnp.zeros((4, 8))},
            "mlp_dense_layer_1": {"kernel": jnp.zeros((8, 2))}}
  with pytest.raises(path_rule.LayerRuleError,
                     match=r"(?s)'mlp_dense_layer'.*not proven.*mlp_dense_layer_0/kernel"):
    optax_ldl.describe(unlike, layerwise_decay=D)
  # One member only: not proven either.
  single = {"embeddings": _zeros("w"), "conformer_block_0": _zeros("w")}
  with pytest.raises(path_rule.LayerRuleError, match=r"(?s)not proven.*conformer_block_0/w"):
    optax_ldl.describe(single, layerwise_decay=D)


# --- real keras-hub backbones ---------------------------------------------------------------------

_NEEDS = pytest.mark.skipif(
    importlib.util.find_spec("keras_hub") is None
    and os.environ.get("OPTAX_LDL_REQUIRE_ZOO") != "1",
    reason="keras-hub is not installed (the zoo extra)")


def _ratios(built):
  rows = optax_ldl.describe(built.params, layerwise_decay=D).rows
  return {r.path: r.lr_ratio for r in rows}


def _check(got, rules):
  """Every path placed by the first hand-written (regex, ratio) rule that matches it."""
  bad = []
  for path, ratio in sorted(got.items()):
    want = next((w(m) if callable(w) else w for rx, w in rules
                 for m in [re.fullmatch(rx, path)] if m), None)
    if want is None or not np.isclose(ratio, want, rtol=1e-6, atol=0):
      bad.append(f"{path}: got {ratio}, want {want}")
  assert not bad, "\n".join(bad)


@_NEEDS
@pytest.mark.slow
def test_keras_hub_siglip_two_towers():
  from tests.zoo.keras_more import V, _ids, _keras_tree
  from tests.zoo.others import _keras_backend

  _keras_backend()
  import keras_hub

  vision = keras_hub.models.SigLIPVisionEncoder(
      patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32,
      image_shape=(16, 16, 3), name="vision_encoder")
  text = keras_hub.models.SigLIPTextEncoder(
      vocabulary_size=V, embedding_dim=16, hidden_dim=16, num_layers=3, num_heads=2,
      intermediate_dim=32, sequence_length=8, name="text_encoder")
  model = keras_hub.models.SigLIPBackbone(vision, text)
  img = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 16, 3)), jnp.float32)
  got = _ratios(_keras_tree(model, {"images": img, "token_ids": _ids()}))
  _check(got, [
      # vision: 2 layers; text: 3 layers.
      (r"vision_encoder/vision_encoder_embedding/.*", D ** 3),
      (r"vision_encoder/vision_encoder_encoder_block_(\d)/.*", lambda m: D ** (2 - int(m[1]))),
      (r"text_encoder/text_encoder_embedding/.*", D ** 4),
      (r"text_encoder/text_encoder_encoder_block_(\d)/.*", lambda m: D ** (3 - int(m[1]))),
      # post-norms, the vision MAP head, the text head, the logit scale and bias.
      (r"(vision|text)_encoder/(vision|text)_encoder_(post_layer_norm|head)/.*", 1.0),
      (r"siglip_head/logit_(scale|bias)", 1.0)])
  assert len(got) > 40


@_NEEDS
@pytest.mark.slow
def test_keras_hub_bart_and_fnet():
  from tests.zoo.keras_more import V, _ids, _keras_tree
  from tests.zoo.others import _keras_backend

  _keras_backend()
  import keras_hub

  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    bart = keras_hub.models.BartBackbone(vocabulary_size=V, num_layers=2, num_heads=2,
                                         hidden_dim=16, intermediate_dim=32,
                                         max_sequence_length=16)
  enc, dec = _ids(8), _ids(5, seed=1)
  got = _ratios(_keras_tree(bart, {
      "encoder_token_ids": enc, "encoder_padding_mask": jnp.ones_like(enc),
      "decoder_token_ids": dec, "decoder_padding_mask": jnp.ones_like(dec)}))
  # 2 encoder and 2 decoder layers, post-norm (no final norm); the token table is shared.
  _check(got, [
      (r"(encoder|decoder)_(position_embedding|embeddings_layer_norm)/.*", D ** 3),
      (r"token_embedding/embeddings", D ** 3),
      (r"transformer_(encoder|decoder)_layer_(\d)/.*", lambda m: D ** (2 - int(m[2])))])

  fnet = keras_hub.models.FNetBackbone(vocabulary_size=V, num_layers=3, hidden_dim=16,
                                       intermediate_dim=32, max_sequence_length=16)
  ids = _ids(8)
  got = _ratios(_keras_tree(fnet, {"token_ids": ids, "segment_ids": jnp.zeros_like(ids)}))
  _check(got, [
      (r"(token|position|segment)_embedding/embeddings", D ** 4),
      (r"embeddings_layer_norm/.*|embedding_projection/.*", D ** 4),
      (r"f_net_layer_(\d)/.*", lambda m: D ** (3 - int(m[1]))),
      (r"pooled_dense/.*", 1.0)])
