"""The Paddle-named constructors port Paddle code by changing an import."""

import inspect

import jax
import jax.numpy as jnp
import optax
import pytest

import optax_ldl

SEED_SIGNATURE = (
    "(learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-08, parameters=None, "
    "weight_decay=0.01, apply_decay_param_fun=None, grad_clip=None, lazy_mode=False, "
    "multi_precision=False, layerwise_decay=1.0, n_layers=12, "
    "set_param_lr_fun=<function layerwise_lr_decay>, name_dict=None, name=None)"
)


def test_adamwdl_has_the_seed_signature():
  params = inspect.signature(optax_ldl.AdamWDL.__new__).parameters
  shown = ", ".join(
      f"{n}={'<function layerwise_lr_decay>' if callable(p.default) else repr(p.default)}"
      for n, p in params.items() if n != "cls")
  assert f"({shown})" == SEED_SIGNATURE


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
