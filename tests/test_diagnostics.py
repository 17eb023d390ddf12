"""describe: the table and its rows."""

import jax
import jax.numpy as jnp
import optax
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
  assert rows["encoder/layers_0/kernel"].layer == "0"
  assert rows["encoder/layers_0/kernel"].lr_ratio == 0.125
  assert rows["encoder/layers_2/bias"] == optax_ldl.Row(
      "encoder/layers_2/bias", (4,), "float32", "2", 0.5, False,
      optax_ldl.Placement("layer", layer=2),
      evidence="row 'layers_N' matched 'layers_2'")
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
  with pytest.raises(TypeError, match=r"describe: unknown argument\(s\) \['decay_rate'\]"):
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


def test_a_schedule_says_which_step_its_lr_is_and_warmup_is_not_read_as_zero():
  sched = optax.linear_schedule(0.0, 1e-3, 100)  # warmup: 0 at step 0, 5e-4 at step 50.
  d = optax_ldl.describe(_params(), learning_rate=sched, layerwise_decay=0.5, n_layers=3)
  text = d.summary()
  assert text.splitlines()[0].split()[5] == "lr@0"
  assert "schedule at step 0 (0 there, e.g. during warmup: describe(..., step=k)" in text
  d = optax_ldl.describe(_params(), learning_rate=sched, layerwise_decay=0.5, n_layers=3,
                         step=50)
  assert d.lr == pytest.approx(5e-4)
  assert "lr@50: the learning-rate schedule at step 50" in str(d) and "warmup" not in str(d)
  # A number: no note, the plain "lr" header.
  plain = optax_ldl.describe(_params(), learning_rate=1e-3, layerwise_decay=0.5, n_layers=3)
  assert plain.summary().splitlines()[0].split()[5] == "lr"
  assert "schedule" not in plain.summary()


def test_weight_decay_of_a_wrapped_optimizer_is_not_claimed():
  decay = optax_ldl.LayerDecay(layerwise_decay=0.5, n_layers=3)
  d = optax_ldl.describe(_params(), decay)  # e.g. for layerwise(optax.adafactor(...))
  assert {line.split()[-1] for line in d.summary().splitlines()[2:6]} == {"-"}
  assert "the wrapped optimizer's own" in d.summary()
  said = optax_ldl.describe(_params(), decay, weight_decay=0.0)
  assert [line.split()[-1] for line in said.summary().splitlines()[2:6]] == ["0/1", "0/2",
                                                                           "0/2", "0/2"]


def test_hyperparams_reads_the_injected_values_through_wrappers():
  params = _params()
  inner = optax.inject_hyperparams(optax_ldl.adamwdl)(learning_rate=1e-3, layerwise_decay=0.8)
  for tx in (inner, optax.MultiSteps(inner, 2), optax.apply_if_finite(inner, 3),
             optax.chain(optax.clip(1.0), inner)):
    h = optax_ldl.hyperparams(tx.init(params))
    assert float(h["learning_rate"]) == pytest.approx(1e-3)
    assert float(h["layerwise_decay"]) == pytest.approx(0.8)
  with pytest.raises(ValueError, match="hyperparams: the state holds no injected"):
    optax_ldl.hyperparams(optax_ldl.adamwdl().init(params))


def test_a_partial_name_dict_names_every_missing_leaf_and_what_it_needs():
  params = {"a": jnp.zeros(2), "b": jnp.zeros(2), "c": jnp.zeros(2)}
  with pytest.raises(ValueError) as e:
    optax_ldl.describe(params, layerwise_decay=0.5, n_layers=2, name_dict={"a": "layers.0.w"})
  text = str(e.value)
  assert "no entry for 2 of the 3 float parameters: ['b', 'c']" in text
  assert "must map every float parameter's path name" in text and "'b': 'b'" in text


def test_weight_decay_filter_exempts_batch_and_group_norms():
  f = optax_ldl.weight_decay_filter
  assert [f(n) for n in ("layer1.0.bn1.weight", "layer1.0.bn1.bias", "stem.gn1.weight",
                         "blocks/0/bn_2/scale", "layer1.0.conv1.weight", "fc.weight",
                         "bnb/kernel")] == [False, False, False, False, True, True, True]
