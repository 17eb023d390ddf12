"""describe: the table and its rows."""

import jax
import jax.numpy as jnp
import pytest

import optax_ldl


def _params():
  return {"embeddings": {"embedding": jnp.zeros((10, 4))},
          "encoder": {f"layers_{i}": {"kernel": jnp.zeros((4, 4)), "bias": jnp.zeros(4)}
                      for i in range(3)},
          "head": {"kernel": jnp.zeros((4, 2))}, "count": jnp.zeros((), jnp.int32)}


def test_rows():
  d = optax_ldl.describe(_params(), layerwise_decay=0.5, n_layers=3,
                         apply_decay_param_fun=lambda n: not n.endswith("bias"))
  rows = {r.path: r for r in d.rows}
  assert rows["encoder/layers_0/kernel"].layer == 0
  assert rows["encoder/layers_0/kernel"].lr_ratio == 0.125
  assert rows["encoder/layers_2/bias"] == optax_ldl.Row(
      "encoder/layers_2/bias", (4,), "float32", 2, 0.5, False)
  assert rows["embeddings/embedding"].lr_ratio == 0.0625
  assert rows["head/kernel"].lr_ratio == 1.0 and rows["head/kernel"].weight_decay
  assert rows["count"].layer == "int" and not rows["count"].weight_decay


def test_table_mentions_every_leaf_and_a_summary():
  text = str(optax_ldl.describe(_params(), learning_rate=1e-3, layerwise_decay=0.5, n_layers=3))
  lines = text.splitlines()
  assert lines[0].split() == ["path", "shape", "dtype", "layer", "lr", "ratio", "lr", "weight",
                              "decay"]
  assert len(lines) == 2 + 9 + 1
  assert lines[-1].startswith("9 leaves, 109 parameters, 5 distinct lr ratios")


def test_zero_weight_decay_shows_no_decay_and_shape_structs_work():
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _params())
  d = optax_ldl.describe(shapes, weight_decay=0.0, layerwise_decay=0.5, n_layers=3)
  assert not any(r.weight_decay for r in d.rows)


def test_describe_raises_what_the_optimizer_raises():
  with pytest.raises(ValueError, match="is in layer 2, but n_layers=1"):
    optax_ldl.describe(_params(), layerwise_decay=0.5, n_layers=1)
  with pytest.raises(TypeError, match=r"decay must be an optax_ldl.LayerDecay, got 0.5"):
    optax_ldl.describe(_params(), decay=0.5)
  with pytest.raises(TypeError, match=r"unexpected keyword argument 'decay_rate'"):
    optax_ldl.describe(_params(), decay_rate=0.5)


def test_describe_takes_a_layer_decay():
  decay = optax_ldl.LayerDecay(layerwise_decay=0.5, n_layers=3)
  assert optax_ldl.describe(_params(), decay).rows == optax_ldl.describe(
      _params(), layerwise_decay=0.5, n_layers=3).rows
  with pytest.raises(TypeError, match="repeat fields of decay"):
    optax_ldl.describe(_params(), decay, layerwise_decay=0.5)


def test_rows_are_in_natural_path_order_and_summary_groups_layers():
  params = {f"layers_{i}": {"w": jnp.zeros(2)} for i in range(11)}
  d = optax_ldl.describe(params, layerwise_decay=0.5)
  assert [r.path for r in d.rows] == [f"layers_{i}/w" for i in range(11)]
  groups = [line.split()[0] for line in d.summary().splitlines()[2:]]
  assert groups == [str(i) for i in range(11)]
