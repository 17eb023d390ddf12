"""The Paddle-named constructors port Paddle code by changing an import."""

import copy
import inspect
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fixtures import flat_params, grads_at

import optax_ldl

SEED_SIGNATURE = (
    "(learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-08, parameters=None, "
    "weight_decay=0.01, apply_decay_param_fun=None, grad_clip=None, lazy_mode=False, "
    "multi_precision=False, layerwise_decay=1.0, n_layers=12, "
    "set_param_lr_fun=<function layerwise_lr_decay>, name_dict=None, name=None)"
)


def _shown(items):
  return "(" + ", ".join(
      f"{n}={'<function layerwise_lr_decay>' if callable(v) else repr(v)}" for n, v in items) + ")"


def test_adamwdl_has_the_seed_signature():
  params = inspect.signature(optax_ldl.AdamWDL).parameters
  assert _shown((n, p.default) for n, p in params.items() if n != "cls") == SEED_SIGNATURE


def test_adamwdl_takes_the_seed_arguments_in_order_with_the_seed_defaults():
  assert _shown(optax_ldl.AdamWDL().arguments.items()) == SEED_SIGNATURE
  positional = optax_ldl.AdamWDL(0.002, 0.8, 0.9, 1e-6).arguments
  assert [positional[k] for k in ("learning_rate", "beta1", "beta2", "epsilon")] == [
      0.002, 0.8, 0.9, 1e-6]

def test_adamwdl_class_is_the_optax_transformation():
  params = {"encoder": {f"layers_{i}": {"w": jnp.ones(3)} for i in range(2)}}
  grads = jax.tree.map(jnp.ones_like, params)
  opt = optax_ldl.AdamWDL(learning_rate=0.1, layerwise_decay=0.5, n_layers=2, name="opt")
  assert isinstance(opt, optax.GradientTransformationExtraArgs) and opt.name == "opt"
  ours = opt.update(grads, opt.init(params), params)[0]
  ref = optax_ldl.adamwdl(0.1, layerwise_decay=0.5, n_layers=2)
  expected = ref.update(grads, ref.init(params), params)[0]
  assert jax.tree.map(lambda a, b: bool((a == b).all()), ours, expected) == jax.tree.map(
      lambda _: True, params)
  chained = optax.chain(optax.identity(), opt)  # composes like any transformation.
  chained.update(grads, chained.init(params), params)
  assert jax.tree.leaves(opt) == []  # a static pytree node: safe inside Flax structs.


def test_get_lr():
  assert optax_ldl.AdamWDL(learning_rate=0.02).get_lr() == 0.02
  sched = optax_ldl.InverseSquareRootSchedule(2, 1.0)
  opt = optax_ldl.AdamWDL(learning_rate=sched)
  sched.step()
  assert opt.get_lr() == 0.5
  assert optax_ldl.AdamWDL(learning_rate=optax.constant_schedule(0.3)).get_lr() == pytest.approx(
      0.3)


def test_paddle_clip_names():
  g = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
  for tx in (optax_ldl.ClipGradByGlobalNorm(1.0, auto_skip_clip=True),
             optax_ldl.ClipGradByNorm(1.0), optax_ldl.ClipGradByValue(1.0)):
    out = tx.update(g, tx.init(g))[0]
    assert float(jnp.abs(out["b"][0])) <= 1.0


def test_a_paddle_clip_object_is_refused_with_a_pointer():
  class ClipGradByGlobalNorm:  # what a paddle.nn clip object looks like: no init/update.
    pass

  with pytest.raises(TypeError, match="grad_clip must be an optax transformation"):
    optax_ldl.AdamWDL(grad_clip=ClipGradByGlobalNorm())


# ---------------------------------------------------------------- layerwise_lr_decay


def test_ratios_follow_paddle():
  decay, n = 0.9, 12
  assert optax_ldl.layerwise_lr_decay(decay, None, n, "layers_0/w") == pytest.approx(decay**12)
  assert optax_ldl.layerwise_lr_decay(decay, None, n, "layers_11/w") == pytest.approx(decay)
  assert optax_ldl.layerwise_lr_decay(decay, None, n, "wte/embedding") == pytest.approx(
      decay**13)
  assert optax_ldl.layerwise_lr_decay(decay, None, n, "head/kernel") == 1.0


def test_param_forms_and_name_dict():
  path = (jax.tree_util.DictKey("encoder"), jax.tree_util.DictKey("layers_2"))
  param = optax_ldl.Param("x", shape=(2,))
  by_path = optax_ldl.layerwise_lr_decay(0.5, None, 3, path)
  by_param = optax_ldl.layerwise_lr_decay(0.5, {"x": "encoder.layers.2.w"}, 3, param)
  assert by_path == by_param == 0.5
  assert param.optimize_attr["learning_rate"] == 1.0  # Paddle 2.8 returns, never mutates.
  with pytest.raises(ValueError, match="name_dict has no entry for parameter 'y'"):
    optax_ldl.layerwise_lr_decay(0.5, {"x": "a"}, 3, "y")
  with pytest.raises(TypeError, match="param must be a name"):
    optax_ldl.layerwise_lr_decay(0.5, None, 3, 3.0)


def test_layer_index_above_n_layers_is_refused():
  # Paddle gives encoder.layers.12 ratio decay**0 = 1 with n_layers=12 (tests/test_rules.py);
  # 13 would exceed 1.
  with pytest.raises(ValueError, match="'layers_13/w' is in layer 13, but n_layers=12"):
    optax_ldl.layerwise_lr_decay(0.9, None, 12, "layers_13/w")


# ---------------------------------------------------------------- AdamWDL as a value


def _opt():
  return optax_ldl.AdamWDL(learning_rate=optax_ldl.InverseSquareRootSchedule(4, 1e-2),
                           layerwise_decay=0.5, n_layers=3, name="opt")


def _same_updates(a, b):
  params = flat_params()
  ua = a.update(grads_at(0), a.init(params), params)[0]
  ub = b.update(grads_at(0), b.init(params), params)[0]
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), ua, ub)


def test_adamwdl_survives_copy_deepcopy_and_pickle():
  opt = _opt()
  copies = [copy.copy(opt), copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))]
  try:
    import cloudpickle
  except ImportError:  # pragma: no cover - optional
    cloudpickle = None
  if cloudpickle is not None:
    copies.append(cloudpickle.loads(cloudpickle.dumps(opt)))
  for other in copies:
    assert isinstance(other, optax_ldl.AdamWDL)
    assert other.name == "opt" and other.get_lr() == opt.get_lr()
    _same_updates(opt, other)


def test_a_flax_train_state_holding_adamwdl_deepcopies():
  train_state = pytest.importorskip("flax.training.train_state")
  params = flat_params()
  state = train_state.TrainState.create(apply_fn=None, params=params, tx=_opt())
  other = copy.deepcopy(state)
  assert isinstance(other.tx, optax_ldl.AdamWDL) and other.tx.name == "opt"
  a = state.apply_gradients(grads=grads_at(0))
  b = other.apply_gradients(grads=grads_at(0))
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a.params, b.params)


def test_replace_keeps_get_lr_and_name():
  opt = _opt()
  calls = []

  def update(updates, state, params=None, **extra):
    calls.append(1)
    return opt.update(updates, state, params, **extra)

  replaced = opt._replace(update=update)
  assert isinstance(replaced, optax_ldl.AdamWDL)
  assert replaced.name == "opt" and replaced.get_lr() == opt.get_lr()
  params = flat_params()
  replaced.update(grads_at(0), replaced.init(params), params)
  assert calls == [1]
