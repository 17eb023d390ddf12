"""Stacked (scanned) layers: a stacked leaf's slice i gets layer i's ratio."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _compat import enable_x64
from fixtures import path_name

import optax_ldl
from optax_ldl._src import path_rule
from optax_ldl._src.layer_map import Placement

L, D, VOCAB, SEQ, BATCH = 4, 8, 16, 8, 4
STEPS = 20


class Block(nn.Module):
  """A pre-norm transformer block; ``__call__(x, _)`` so ``nn.scan`` can run it."""

  @nn.compact
  def __call__(self, x, _=None):
    h = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(
        num_heads=2, qkv_features=D, deterministic=True, use_bias=False)(h)
    h = nn.LayerNorm()(x)
    x = x + nn.Dense(D)(nn.gelu(nn.Dense(2 * D)(h)))
    return x, None


class Transformer(nn.Module):
  scanned: bool = False
  scan_name: str | None = "layers"

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(VOCAB, D, name="embed")(tokens)
    if self.scanned:
      stack = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True},
                      length=L)
      x, _ = stack(name=self.scan_name)(x, None)
    else:
      for i in range(L):
        x, _ = Block(name=f"layers_{i}")(x)
    x = nn.LayerNorm(name="final_norm")(x)
    return nn.Dense(VOCAB, name="head")(x)


def _data(step):
  key = jax.random.fold_in(jax.random.key(1), step)
  tokens = jax.random.randint(key, (BATCH, SEQ + 1), 0, VOCAB)
  return tokens[:, :-1], tokens[:, 1:]


def _loss(model, params, tokens, targets):
  logits = model.apply({"params": params}, tokens)
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def stack(unrolled, key="layers", axis=0):
  """The unrolled params with ``layers_0..`` stacked into ``key`` along ``axis``."""
  out = {k: v for k, v in unrolled.items() if not k.startswith("layers_")}
  layers = [unrolled[f"layers_{i}"] for i in range(L)]
  out[key] = jax.tree.map(lambda *xs: jnp.stack(xs, axis), *layers)
  return out


def unstack(stacked, key="layers", axis=0):
  out = {k: v for k, v in stacked.items() if k != key}
  for i in range(L):
    out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: jnp.take(x, i, axis), stacked[key])
  return out


def _tx(**kwargs):
  return optax_ldl.adamwdl(
      3e-2, weight_decay=0.1, layerwise_decay=0.7, n_layers=L,
      apply_decay_param_fun=lambda name: name.endswith("kernel"),
      grad_clip=optax_ldl.clip_grad_by_global_norm(0.5), **kwargs)


def _train(model, params, tx, steps, to_model=lambda p: p):
  state = tx.init(params)

  @jax.jit
  def step(params, state, tokens, targets):
    grads = jax.grad(lambda p: _loss(model, to_model(p), tokens, targets))(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for t in range(steps):
    params, state = step(params, state, *_data(t))
  return params


@pytest.fixture(scope="module")
def x64():
  """float64, so that the unrolled and scanned programs (which XLA rounds
  differently, ~1e-7 in float32) agree to ~1e-15 and 1e-6 tests the optimizer."""
  with enable_x64(True):
    yield


@pytest.fixture(scope="module")
def unrolled_run(x64):
  model = Transformer(scanned=False)
  params = model.init(jax.random.key(0), _data(0)[0])["params"]
  params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
  return params, _train(model, params, _tx(), STEPS)


def _max_err(a, b):
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))), a, b)))


def test_flax_scan_equals_unrolled(unrolled_run):
  """The nn.scan model (its own layout, its own grads) against the unrolled one."""
  init, final = unrolled_run
  model = Transformer(scanned=True)
  shapes = jax.eval_shape(model.init, jax.random.key(0), _data(0)[0])["params"]
  assert jax.tree.structure(shapes) == jax.tree.structure(stack(init))
  out = _train(model, stack(init), _tx(), STEPS)
  assert jax.tree.leaves(out)[0].dtype == jnp.float64
  assert _max_err(unstack(out), final) <= 1e-6
  # Without stacking no leaf would be in a layer: that is refused.
  with pytest.raises(ValueError, match="no parameter is in a layer"):
    _tx(stacked=None).init(stack(init))


def test_stacked_axis_not_zero(unrolled_run, axis=1):
  """MaxText keeps the layer axis at 1: give it as {prefix: axis}."""
  init, final = unrolled_run
  ax = lambda x: min(axis, x.ndim - 1)  # noqa: E731  (biases are (L, n))
  params = stack(init)
  params["layers"] = jax.tree.map(lambda x: jnp.moveaxis(x, 0, ax(x)), params["layers"])
  axes = {path_name(p): ax(x)
          for p, x in jax.tree_util.tree_leaves_with_path({"layers": params["layers"]})}

  def to_model(p):
    p = dict(p)
    p["layers"] = jax.tree.map(lambda x: jnp.moveaxis(x, ax(x), 0), p["layers"])
    return p

  out = _train(Transformer(scanned=True), params, _tx(stacked=axes), STEPS, to_model)
  assert _max_err(unstack(to_model(out)), final) <= 1e-6


def test_auto_detects_scan_block_name():
  """nn.scan(Block) without a name is ``ScanBlock_0``; nnx.vmap/scan gives ``layers``."""
  shapes = jax.eval_shape(Transformer(scanned=True, scan_name=None).init,
                          jax.random.key(0), _data(0)[0])["params"]
  assert "ScanBlock_0" in shapes
  d = optax_ldl.describe(shapes, layerwise_decay=0.5, n_layers=L)
  rows = {r.path: r for r in d.rows}
  assert rows["ScanBlock_0/Dense_0/kernel"].layer == "stacked(axis=0)"
  assert rows["ScanBlock_0/Dense_0/kernel"].lr_ratio == (0.0625, 0.125, 0.25, 0.5)
  assert rows["embed/embedding"].lr_ratio == 0.5 ** (L + 1)


def test_auto_detects_nnx_stack():
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

  params = nnx.state(Model(nnx.Rngs(0)), nnx.Param)
  tx = optax_ldl.adamwdl(1.0, weight_decay=0.0, layerwise_decay=0.5, n_layers=3)
  u, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  kernel = jax.tree.leaves(u["layers"]["lin"]["kernel"])[0]  # Flax < 0.11: a VariableState
  ratios = jnp.abs(kernel[:, 0, 0])
  np.testing.assert_allclose(ratios, [0.125, 0.25, 0.5], rtol=1e-3)


def test_auto_does_not_misfire():
  # An embedding whose first dim equals n_layers is not under a stack key;
  # 'layers/3/...' is an unrolled layer; 'layers' with another axis-0 length
  # is not stacked.
  params = {"embed": {"embedding": jnp.zeros((3, 2))},
            "layers": {"0": {"w": jnp.zeros((3, 3))}, "2": {"w": jnp.zeros((3, 3))}},
            "pooler": {"layers": {"w": jnp.zeros((5, 3))}}}
  g = optax_ldl.LayerDecay(layerwise_decay=0.5, n_layers=3).plan(params)
  ratios = {name: g.ratio(name) for name in g.labels}
  assert ratios == {"embed/embedding": 0.0625, "layers/0/w": 0.125, "layers/2/w": 0.5,
                    "pooler/layers/w": 1.0}
  assert {n: p.kind for n, p in g.placements.items()} == {
      "embed/embedding": "embedding", "layers/0/w": "layer", "layers/2/w": "layer",
      "pooler/layers/w": "head"}
  # A container the role vocabulary does not name is refused by name, never stacked or guessed.
  params["other"] = params.pop("pooler")
  with pytest.raises(path_rule.LayerRuleError, match=r"(?s)no row of the rule.*other/layers/w"):
    optax_ldl.LayerDecay(layerwise_decay=0.5, n_layers=3).plan(params)
  # With decay 1, every ratio is 1 whether or not a leaf is read as stacked.
  g = optax_ldl.LayerDecay(layerwise_decay=1.0, n_layers=3).plan(
      {"layers": {"w": jnp.zeros((3, 2))}})
  np.testing.assert_array_equal(g.ratio("layers/w"), 1.0)


def test_custom_rule_sees_unrolled_names():
  seen = []

  def rule(decay, name_dict, n_layers, param):
    seen.append((param.name, param.shape))
    return optax_ldl.layerwise_lr_decay(decay, name_dict, n_layers, param)

  params = {"decoder": {"layers": {"mlp": {"kernel": jnp.ones((2, 3, 4))}}}}
  tx = optax_ldl.scale_by_layer_ratio(layerwise_decay=0.5, n_layers=3, rule=rule,
                                      stacked={"decoder/layers": 1})
  u, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params))
  assert seen[:3] == [(f"decoder/layers_{i}/mlp/kernel", (2, 4)) for i in range(3)]
  np.testing.assert_allclose(u["decoder"]["layers"]["mlp"]["kernel"][0, :, 0], [0.125, 0.25, 0.5])
  # A callable gives the same.
  tx2 = optax_ldl.scale_by_layer_ratio(layerwise_decay=0.5, n_layers=3, rule=rule,
                                       stacked=lambda n: 1 if "/layers/" in n else None)
  u2, _ = tx2.update(jax.tree.map(jnp.ones_like, params), tx2.init(params))
  np.testing.assert_array_equal(u2["decoder"]["layers"]["mlp"]["kernel"],
                                u["decoder"]["layers"]["mlp"]["kernel"])


def test_stacked_leaf_seen_alike_by_path_rule_and_custom_rule():
  """A leaf under ``blocks`` holding 4 layers is stacked on axis 0 for both readings.

  The path rule reads the whole tree; a custom rule reads it leaf by leaf
  (``leaf_spec``) and sees each slice under its unrolled name. A custom rule that
  only delegates to ``layerwise_lr_decay`` gives the path rule's ratios.
  """
  params = {"blocks": {"w": jnp.ones((4, 2, 2))}}
  lm = path_rule.path_layers(params, n_layers=4)
  assert lm["blocks/w"] == Placement("layer", "", layer=0, axis=0)
  spec = path_rule.leaf_spec("auto", "blocks/w", (4, 2, 2), 4, explicit_only=False)
  assert spec == path_rule.StackSpec(axis=0, length=4, key_index=0)
  assert [path_rule.unrolled_name("blocks/w", spec, i) for i in (0, 3)] == [
      "layers_0/w", "layers_3/w"]

  def rule(decay, name_dict, n_layers, param):
    return optax_ldl.layerwise_lr_decay(decay, name_dict, n_layers, param)

  grads = jax.tree.map(jnp.ones_like, params)
  for kw in ({}, {"rule": rule}):
    tx = optax_ldl.scale_by_layer_ratio(layerwise_decay=0.5, n_layers=4, **kw)
    u, _ = tx.update(grads, tx.init(params))
    np.testing.assert_allclose(u["blocks"]["w"][:, 0, 0], [0.0625, 0.125, 0.25, 0.5],
                               err_msg=f"{kw}")


def test_describe_shows_per_slice_ratios():
  params = {"embed": jnp.zeros((5, 2)), "layers": {"kernel": jnp.zeros((3, 2, 2))},
            "head": jnp.zeros(2)}
  d = optax_ldl.describe(params, learning_rate=1.0, layerwise_decay=0.5, n_layers=3)
  row = {r.path: r for r in d.rows}["layers/kernel"]
  assert row.layer == "stacked(axis=0)"
  assert row.lr_ratio == (0.125, 0.25, 0.5)
  assert "[0.125 0.25 0.5]" in str(d)
  d = optax_ldl.describe(params, layerwise_decay=0.5, n_layers=2,
                         stacked={"layers": 2})
  assert {r.path: r for r in d.rows}["layers/kernel"].lr_ratio == (0.25, 0.5)


def test_errors():
  params = {"decoder": {"layers": {"kernel": jnp.zeros((3, 4))}}}
  with pytest.raises(ValueError,
                     match=r"'decoder/layers/kernel'.*axis 2.*out of range.*n_layers=3"):
    optax_ldl.adamwdl(layerwise_decay=0.5, n_layers=3, stacked={"decoder/layers": 2},
                      parameters=params)
  with pytest.raises(ValueError,
                     match=r"'decoder/layers/kernel'.*axis 1.*length 4 is not n_layers=3"):
    optax_ldl.adamwdl(layerwise_decay=0.5, n_layers=3, stacked={"decoder/layers": 1}).init(params)
  with pytest.raises(TypeError, match="stacked must be"):
    optax_ldl.adamwdl(stacked="yes")
  with pytest.raises(TypeError, match="stacked must be"):
    optax_ldl.adamwdl(stacked={"decoder": 1.5})
  # A MaxText-like layout (layers on axis 1) is not guessed: the error says how to fix it.
  with pytest.raises(ValueError, match=r"stacked=\{'path/prefix': axis\}"):
    optax_ldl.adamwdl(layerwise_decay=0.5, n_layers=4,
                      parameters={"decoder": {"layers": {"kernel": jnp.zeros((8, 4, 8))}}})
