"""Every rejected input raises a TypeError/ValueError whose message names the argument.

One table of (callable, kwargs, argument) rows covers the arguments of every public
factory. A row that builds a transformation and runs it (``_run``) checks errors
that can only be raised at ``init`` or ``update`` (a rule's result, a state).
Errors that only a run can raise (a rule's result, a state or grads that do not fit)
come from ``init``/``update``; hyperparameters injected with ``optax.inject_hyperparams``
are checked at run time on request (``debug_checks=True``, ``checkify``), tested last.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_names_argument
from jax.experimental import checkify

import optax_ldl

PARAMS = {
    "embeddings": {"word": jnp.ones((4, 2))},
    "layers_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)},
    "layers_1": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)},
    "head": {"kernel": jnp.ones((2, 1))},
}
GRADS = jax.tree.map(jnp.ones_like, PARAMS)
DECAYED = dict(layerwise_decay=0.8, n_layers=2)
OTHER_TREE = {"layers_0": {"w": jnp.ones(3)}, "layers_1": {"w": jnp.ones(3)}}


def _run(**kwargs: Any) -> None:
  """adamwdl(**kwargs): init and one update on PARAMS (errors raised late are caught too)."""
  tx = optax_ldl.adamwdl(**kwargs)
  state = tx.init(PARAMS)
  tx.update(GRADS, state, PARAMS)


def _run_paddle(**kwargs: Any) -> None:
  tx = optax_ldl.AdamWDL(**kwargs)
  state = tx.init(PARAMS)
  tx.update(GRADS, state, PARAMS)


def _update_with_state_of(other_params: Any = None, *, state_from: Any = None, **kwargs) -> None:
  """An update whose state was made by another init (another tree or configuration)."""
  tx = optax_ldl.adamwdl(**{**DECAYED, **kwargs})
  if state_from is not None:
    state = state_from.init(PARAMS)
  else:
    state = tx.init(other_params)
  tx.update(GRADS, state, PARAMS)


def _restored_without_target(node: Any) -> Any:
  """A state as Orbax restores it without a target: NamedTuples become dicts, tuples lists."""
  if isinstance(node, tuple) and hasattr(node, "_fields"):
    return {f: _restored_without_target(getattr(node, f)) for f in node._fields}
  if isinstance(node, (tuple, list)):
    return [_restored_without_target(v) for v in node]
  if isinstance(node, dict):
    return {k: _restored_without_target(v) for k, v in node.items()}
  return node


def _update_with_restored_state() -> None:
  tx = optax_ldl.adamwdl(**DECAYED)
  tx.update(GRADS, _restored_without_target(tx.init(PARAMS)), PARAMS)


def _update_with_grads(grads: Any, **kwargs: Any) -> None:
  tx = optax_ldl.adamwdl(**{**DECAYED, **kwargs})
  tx.update(grads, tx.init(PARAMS), PARAMS)


def _paddle_with_schedule(layer_schedule: Any) -> None:
  optax_ldl.AdamWDL(layerwise_decay=0.8, n_layers=2).with_layer_schedule(layer_schedule)


def _describe(**kwargs: Any) -> None:
  str(optax_ldl.describe(PARAMS, **kwargs))


def _paddle_rule_with_partial(decay, name_dict, n_layers, param):  # Paddle's 4-argument rule.
  return optax_ldl.layerwise_lr_decay(decay, name_dict, n_layers, param)


def _schedule_of_nothing():
  return 1e-3


class _CallableWithoutArgs:
  def __call__(self):
    return 1e-3


NOT_A_NUMBER = [("str", "0.5"), ("complex", 0.5 + 0j), ("np_complex", np.complex64(0.5)),
                ("bool", True), ("none", None), ("list", [0.5]), ("array", np.array([0.5, 0.5]))]
NON_FINITE = [("inf", math.inf), ("nan", math.nan), ("neg_inf", -math.inf),
              ("np_inf", np.float32("inf")), ("jnp_nan", jnp.float32(jnp.nan))]


def _number_rows(fn, arg, *, out_of_range, prefix, extra=None, name=None, skip=()):
  """Rows for one numeric argument: wrong types, non-finite values, out-of-range values."""
  name = name or arg
  rows = []
  for tag, value in NOT_A_NUMBER + NON_FINITE + [(f"range{i}", v) for i, v in
                                                 enumerate(out_of_range)]:
    if tag in skip:
      continue
    kwargs = {**(extra or {}), arg: value}
    rows.append(pytest.param(fn, kwargs, name, id=f"{prefix}-{arg}-{tag}"))
  return rows


ROWS = [
    # ----- adamwdl: numbers (item 5: complex/string b1; item 6: non-finite values) -----
    *_number_rows(optax_ldl.adamwdl, "learning_rate", out_of_range=[-1e-3], prefix="adamwdl"),
    *_number_rows(optax_ldl.adamwdl, "b1", out_of_range=[1.0, -0.1, 2], prefix="adamwdl"),
    *_number_rows(optax_ldl.adamwdl, "b2", out_of_range=[1.0, -1e-9], prefix="adamwdl"),
    *_number_rows(optax_ldl.adamwdl, "eps", out_of_range=[0.0, -1e-8], prefix="adamwdl"),
    *_number_rows(optax_ldl.adamwdl, "weight_decay", out_of_range=[-0.01], prefix="adamwdl"),
    *_number_rows(optax_ldl.adamwdl, "layerwise_decay", out_of_range=[0.0, 1.5, -0.5],
                  prefix="adamwdl"),
    # ----- adamwdl: learning-rate schedules (item 5) -----
    pytest.param(optax_ldl.adamwdl, dict(learning_rate=lambda: 1e-3), "learning_rate",
                 id="adamwdl-learning_rate-zero_arg_lambda"),
    pytest.param(optax_ldl.adamwdl, dict(learning_rate=_schedule_of_nothing), "learning_rate",
                 id="adamwdl-learning_rate-zero_arg_function"),
    pytest.param(optax_ldl.adamwdl, dict(learning_rate=_CallableWithoutArgs()), "learning_rate",
                 id="adamwdl-learning_rate-zero_arg_callable_object"),
    pytest.param(optax_ldl.adamwdl, dict(learning_rate=lambda a, b: 1e-3), "learning_rate",
                 id="adamwdl-learning_rate-two_arg_schedule"),
    pytest.param(optax_ldl.adamwdl, dict(learning_rate=lambda count: None), "learning_rate",
                 id="adamwdl-learning_rate-schedule_returns_none"),
    pytest.param(optax_ldl.adamwdl, dict(learning_rate=lambda count: "1e-3"), "learning_rate",
                 id="adamwdl-learning_rate-schedule_returns_str"),
    pytest.param(optax_ldl.adamwdl, dict(learning_rate=lambda count: jnp.ones(3)),
                 "learning_rate", id="adamwdl-learning_rate-schedule_returns_vector"),
    pytest.param(optax_ldl.adamwdl, dict(learning_rate=lambda count: count > 3),
                 "learning_rate", id="adamwdl-learning_rate-schedule_returns_bool"),
    # ----- adamwdl: n_layers -----
    *[pytest.param(optax_ldl.adamwdl, dict(layerwise_decay=0.8, n_layers=v), "n_layers",
                   id=f"adamwdl-n_layers-{tag}")
      for tag, v in [("zero", 0), ("negative", -3), ("float", 2.5), ("float_int", 2.0),
                     ("str", "12"), ("bool", True), ("inf", math.inf), ("list", [12])]],
    # ----- adamwdl: flags, functions, trees -----
    *[pytest.param(optax_ldl.adamwdl, {arg: v}, arg, id=f"adamwdl-{arg}-{tag}")
      for arg in ("lazy_mode", "multi_precision", "debug_checks")
      for tag, v in [("str", "yes"), ("int", 1), ("none", None)]],
    pytest.param(optax_ldl.adamwdl, dict(grad_clip=1.0), "grad_clip", id="adamwdl-grad_clip-float"),
    pytest.param(optax_ldl.adamwdl, dict(grad_clip=optax.clip_by_global_norm), "grad_clip",
                 id="adamwdl-grad_clip-factory_not_called"),
    pytest.param(optax_ldl.adamwdl, dict(set_param_lr_fun="layerwise_lr_decay"),
                 "set_param_lr_fun", id="adamwdl-set_param_lr_fun-str"),
    pytest.param(optax_ldl.adamwdl, dict(name_dict=["a", "b"]), "name_dict",
                 id="adamwdl-name_dict-list"),
    pytest.param(optax_ldl.adamwdl, dict(stacked="sometimes"), "stacked",
                 id="adamwdl-stacked-str"),
    pytest.param(optax_ldl.adamwdl, dict(layers="encoder/layers"), "layers",
                 id="adamwdl-layers-str"),  # a LayerMap (optax_ldl.trace_layers) or None.
    pytest.param(optax_ldl.adamwdl,
                 dict(apply_decay_param_fun=lambda n: True, mask={"a": True}),
                 "apply_decay_param_fun", id="adamwdl-apply_decay_param_fun-and_mask"),
    pytest.param(_run, dict(mask={"layers_0": True}), "mask", id="adamwdl-mask-wrong_tree"),
    pytest.param(_run, dict(mask=jax.tree.map(lambda _: "yes", PARAMS)), "mask",
                 id="adamwdl-mask-str_leaves"),
    pytest.param(_run, dict(mask=jax.tree.map(lambda _: 1, PARAMS)), "mask",
                 id="adamwdl-mask-int_leaves"),
    pytest.param(optax_ldl.adamwdl, dict(mask=jax.tree.map(lambda _: 1.0, PARAMS),
                                         parameters=PARAMS), "mask",
                 id="adamwdl-mask-float_leaves_checked_with_parameters"),
    # item 5: a mask function returning the wrong structure.
    pytest.param(_run, dict(mask=lambda params: {"layers_0": True}), "mask",
                 id="adamwdl-mask-function_returns_wrong_tree"),
    # item 7: apply_decay_param_fun results must be bools.
    pytest.param(_run, dict(apply_decay_param_fun=lambda name: None), "apply_decay_param_fun",
                 id="adamwdl-apply_decay_param_fun-returns_none"),
    pytest.param(_run, dict(apply_decay_param_fun=lambda name: "no"), "apply_decay_param_fun",
                 id="adamwdl-apply_decay_param_fun-returns_str"),
    pytest.param(_run, dict(apply_decay_param_fun=lambda name: 1), "apply_decay_param_fun",
                 id="adamwdl-apply_decay_param_fun-returns_int"),
    # item 5: set_param_lr_fun results and arity.
    pytest.param(_run, dict(DECAYED, set_param_lr_fun=lambda d, nd, n, p: "0.5"),
                 "set_param_lr_fun", id="adamwdl-set_param_lr_fun-returns_str"),
    pytest.param(_run, dict(DECAYED, set_param_lr_fun=functools.partial(
        _paddle_rule_with_partial, 0.8, None, 2)), "set_param_lr_fun",
                 id="adamwdl-set_param_lr_fun-paddle_partial"),
    pytest.param(_run, dict(DECAYED, set_param_lr_fun=lambda d, nd, n, p: math.nan),
                 "set_param_lr_fun", id="adamwdl-set_param_lr_fun-returns_nan"),
    pytest.param(_run, dict(DECAYED, name_dict={"layers_0/kernel": 3}), "name_dict",
                 id="adamwdl-name_dict-int_values"),
    # item 5: states that do not belong to this update.
    pytest.param(_update_with_state_of, dict(other_params=OTHER_TREE), "state",
                 id="adamwdl-update-state_from_another_tree"),
    pytest.param(_update_with_state_of, dict(state_from=optax.adamw(1e-3)), "state",
                 id="adamwdl-update-state_from_optax_adamw"),
    pytest.param(_update_with_state_of,
                 dict(state_from=optax_ldl.adamwdl(multi_precision=True, **DECAYED)), "state",
                 id="adamwdl-update-state_from_other_multi_precision"),
    pytest.param(_update_with_restored_state, {}, "state",
                 id="adamwdl-update-state_restored_without_target"),
    pytest.param(_update_with_grads,
                 dict(grads={k: v for k, v in GRADS.items() if k != "head"}), ("updates", "grads"),
                 id="adamwdl-update-grads_missing_a_leaf"),
    # ----- AdamWDL: Paddle's argument names -----
    *_number_rows(optax_ldl.AdamWDL, "learning_rate", out_of_range=[-1.0], prefix="AdamWDL"),
    *_number_rows(optax_ldl.AdamWDL, "weight_decay", out_of_range=[-1.0], prefix="AdamWDL"),
    *_number_rows(optax_ldl.AdamWDL, "layerwise_decay", out_of_range=[2.0], prefix="AdamWDL"),
    pytest.param(optax_ldl.AdamWDL, dict(n_layers=0, layerwise_decay=0.8), "n_layers",
                 id="AdamWDL-n_layers-zero"),
    pytest.param(optax_ldl.AdamWDL, dict(learning_rate=lambda: 1e-3), "learning_rate",
                 id="AdamWDL-learning_rate-zero_arg"),
    pytest.param(optax_ldl.AdamWDL, dict(grad_clip="global"), "grad_clip",
                 id="AdamWDL-grad_clip-str"),
    pytest.param(optax_ldl.AdamWDL, dict(lazy_mode="no"), "lazy_mode", id="AdamWDL-lazy_mode-str"),
    # AdamWDL's errors name Paddle's argument (beta1), not optax's (b1).
    *[pytest.param(optax_ldl.AdamWDL, {arg: v}, arg, id=f"AdamWDL-{arg}-{tag}")
      for arg, bad in [("beta1", 1.0), ("beta2", math.inf), ("epsilon", 0.0)]
      for tag, v in [("bad", bad), ("str", "0.9")]],
    pytest.param(_run_paddle, dict(apply_decay_param_fun=lambda name: None),
                 "apply_decay_param_fun", id="AdamWDL-apply_decay_param_fun-returns_none"),
    # ----- inverse_sqrt_schedule / InverseSquareRootSchedule -----
    *_number_rows(optax_ldl.inverse_sqrt_schedule, "learning_rate", out_of_range=[-1.0],
                  extra=dict(warmup_steps=4), prefix="inverse_sqrt_schedule"),
    *_number_rows(optax_ldl.inverse_sqrt_schedule, "init_value", out_of_range=[-1.0],
                  extra=dict(warmup_steps=4), prefix="inverse_sqrt_schedule"),
    *_number_rows(optax_ldl.inverse_sqrt_schedule, "timescale", out_of_range=[0.0, -2.0],
                  extra=dict(warmup_steps=4), prefix="inverse_sqrt_schedule",
                  skip=("none",)),  # None: the default, warmup_steps.
    *[pytest.param(fn, dict(warmup_steps=v), "warmup_steps", id=f"{name}-warmup_steps-{tag}")
      for name, fn in [("inverse_sqrt_schedule", optax_ldl.inverse_sqrt_schedule),
                       ("InverseSquareRootSchedule", optax_ldl.InverseSquareRootSchedule)]
      for tag, v in [("zero", 0), ("float", 4.0), ("str", "4"), ("none", None), ("bool", True),
                     ("inf", math.inf)]],
    *_number_rows(optax_ldl.InverseSquareRootSchedule, "learning_rate", out_of_range=[-1.0],
                  extra=dict(warmup_steps=4), prefix="InverseSquareRootSchedule"),
    *[pytest.param(optax_ldl.InverseSquareRootSchedule, dict(warmup_steps=4, last_epoch=v),
                   "last_epoch", id=f"InverseSquareRootSchedule-last_epoch-{tag}")
      for tag, v in [("minus2", -2), ("float", 3.0), ("str", "3")]],
    pytest.param(optax_ldl.InverseSquareRootSchedule, dict(warmup_steps=4, verbose="yes"),
                 "verbose", id="InverseSquareRootSchedule-verbose-str"),
    # ----- the clips -----
    *[row for name, fn in [("clip_grad_by_global_norm", optax_ldl.clip_grad_by_global_norm),
                           ("clip_grad_by_norm", optax_ldl.clip_grad_by_norm),
                           ("ClipGradByGlobalNorm", optax_ldl.ClipGradByGlobalNorm),
                           ("ClipGradByNorm", optax_ldl.ClipGradByNorm)]
      for row in [pytest.param(fn, dict(clip_norm=v), "clip_norm", id=f"{name}-clip_norm-{tag}")
                  for tag, v in NOT_A_NUMBER + [("nan", math.nan), ("neg_inf", -math.inf),
                                                ("zero", 0.0), ("negative", -1.0)]]],
    *[row for name, fn in [("clip_grad_by_value", optax_ldl.clip_grad_by_value),
                           ("ClipGradByValue", optax_ldl.ClipGradByValue)]
      for row in [
          *[pytest.param(fn, dict(max=v), "max", id=f"{name}-max-{tag}")
            for tag, v in NOT_A_NUMBER + [("nan", math.nan), ("neg_inf", -math.inf),
                                          ("zero", 0.0), ("negative", -1.0)]],
          *[pytest.param(fn, dict(max=1.0, min=v), "min", id=f"{name}-min-{tag}")
            for tag, v in [("str", "0"), ("complex", 0j), ("nan", math.nan), ("inf", math.inf),
                           ("above_max", 2.0)]],
      ]],
    # ----- describe: adamwdl's arguments, checked the same way -----
    pytest.param(_describe, dict(b1=2.0), "b1", id="describe-b1-out_of_range"),
    pytest.param(_describe, dict(learning_rate=math.inf), "learning_rate",
                 id="describe-learning_rate-inf"),
    pytest.param(_describe, dict(weight_decay="0.1"), "weight_decay",
                 id="describe-weight_decay-str"),
    pytest.param(_describe, dict(layerwise_decay=1.5, n_layers=2), "layerwise_decay",
                 id="describe-layerwise_decay-out_of_range"),
    pytest.param(_describe, dict(layerwise_decay=0.8, n_layers=0), "n_layers",
                 id="describe-n_layers-zero"),
    pytest.param(_describe, dict(learning_rate=lambda: 1e-3), "learning_rate",
                 id="describe-learning_rate-zero_arg"),
    pytest.param(_describe, dict(layerwise_decy=0.8), "layerwise_decy",
                 id="describe-unknown_keyword"),
    pytest.param(_describe, dict(apply_decay_param_fun=lambda name: "yes"),
                 "apply_decay_param_fun", id="describe-apply_decay_param_fun-returns_str"),
    pytest.param(_describe, dict(DECAYED, name_dict={"layers_0/kernel": 3}), "name_dict",
                 id="describe-name_dict-int_values"),
]

ROWS += [
    # ----- layer schedules (issue 17): the factories, and layer_schedule where it is taken -----
    pytest.param(optax_ldl.adamwdl, dict(layer_schedule="gradual"), "layer_schedule",
                 id="adamwdl-layer_schedule-str"),
    pytest.param(_paddle_with_schedule, dict(layer_schedule=optax.constant_schedule(1.0)),
                 "layer_schedule", id="AdamWDL-layer_schedule-optax_schedule"),
    pytest.param(optax_ldl.adamwdl, dict(floor=1.5), "floor", id="adamwdl-floor-above_one"),
    pytest.param(optax_ldl.adamwdl, dict(weight_decay_mults=[("bias", -1.0)]),
                 "weight_decay_mults", id="adamwdl-weight_decay_mults-negative"),
    pytest.param(optax_ldl.adamwdl, dict(weight_decay_mults=[("(", 0.5)]),
                 "weight_decay_mults", id="adamwdl-weight_decay_mults-bad_regex"),
    pytest.param(optax_ldl.adamwdl, dict(weight_decay_mults="bias"),
                 "weight_decay_mults", id="adamwdl-weight_decay_mults-str"),
    pytest.param(optax_ldl.adamwdl, dict(weight_decay_mults=[(1.5, 0.5)]),
                 "weight_decay_mults", id="adamwdl-weight_decay_mults-float_key"),
    pytest.param(optax_ldl.adamwdl, dict(weight_decay_at_base_rate="yes"),
                 "weight_decay_at_base_rate", id="adamwdl-weight_decay_at_base_rate-str"),
    pytest.param(optax_ldl.adamwdl, dict(floor=0.0), "floor", id="adamwdl-floor-zero"),
    pytest.param(optax_ldl.adamwdl, dict(floor="0.1"), "floor", id="adamwdl-floor-str"),
    pytest.param(optax_ldl.adamwdl, dict(floor=0.1, layerwise_decay=0.8), "floor",
                 id="adamwdl-floor-with_layerwise_decay"),
    pytest.param(optax_ldl.adamwdl, dict(stages=0), "stages", id="adamwdl-stages-zero"),
    pytest.param(optax_ldl.adamwdl, dict(stages=[3, "x"]), "stages", id="adamwdl-stages-str"),
    pytest.param(optax_ldl.adamwdl, dict(stages=2.5), "stages", id="adamwdl-stages-float"),
    pytest.param(_run, dict(**DECAYED, stages=[1, 2]), "stages",
                 id="adamwdl-stages-sizes_not_the_depth"),
    pytest.param(optax_ldl.layerwise, dict(inner=optax.sgd(1.0), floor=-0.1), "floor",
                 id="layerwise-floor-negative"),
    pytest.param(optax_ldl.layerwise, dict(inner=optax.sgd(1.0), layer_schedule=0.5),
                 "layer_schedule", id="layerwise-layer_schedule-number"),
    pytest.param(_describe, dict(layer_schedule=[0, 100]), "layer_schedule",
                 id="describe-layer_schedule-list"),
    pytest.param(_run, dict(**DECAYED, set_param_lr_fun=lambda *a: 0.5,
                            layer_schedule=optax_ldl.freeze("embedding")),
                 "layer_schedule", id="adamwdl-layer_schedule-custom_rule_has_no_places"),
    # starts of 2 groups (head, layer 1) on a tree with 4 (head, 1, 0, embeddings): the
    # error names the argument and the group without a start.
    pytest.param(_run, dict(**DECAYED, layer_schedule=optax_ldl.gradual_unfreezing(
        starts=[0, 10])), ("starts", "group 2"), id="adamwdl-layer_schedule-too_few_starts"),
    pytest.param(optax_ldl.gradual_unfreezing, dict(), "every", id="gradual_unfreezing-neither"),
    pytest.param(optax_ldl.gradual_unfreezing, dict(every=0), "every",
                 id="gradual_unfreezing-every-zero"),
    pytest.param(optax_ldl.gradual_unfreezing, dict(every=1.5), "every",
                 id="gradual_unfreezing-every-float"),
    pytest.param(optax_ldl.gradual_unfreezing, dict(every=10, starts=[0, 10]), "starts",
                 id="gradual_unfreezing-both"),
    pytest.param(optax_ldl.gradual_unfreezing, dict(starts=[0, 10, 5]), "starts",
                 id="gradual_unfreezing-starts-decreasing"),
    pytest.param(optax_ldl.gradual_unfreezing, dict(starts=[0, -1]), "starts",
                 id="gradual_unfreezing-starts-negative"),
    pytest.param(optax_ldl.gradual_unfreezing, dict(starts="0,10"), "starts",
                 id="gradual_unfreezing-starts-str"),
    pytest.param(optax_ldl.gradual_unfreezing, dict(every=5, layers_per_group=0),
                 "layers_per_group", id="gradual_unfreezing-layers_per_group-zero"),
    pytest.param(optax_ldl.gradual_unfreezing, dict(every=5, embeddings="first"), "embeddings",
                 id="gradual_unfreezing-embeddings-unknown"),
    pytest.param(optax_ldl.backbone_ramp, dict(span=-1), "span", id="backbone_ramp-span-negative"),
    pytest.param(optax_ldl.backbone_ramp, dict(span=10, start=None), "start",
                 id="backbone_ramp-start-none"),
    pytest.param(optax_ldl.backbone_ramp, dict(span=10, delay=True), "delay",
                 id="backbone_ramp-delay-bool"),
    pytest.param(optax_ldl.freeze, dict(what="encoder"), "what", id="freeze-what-unknown_kind"),
    pytest.param(optax_ldl.freeze, dict(what=[0, -1]), "what", id="freeze-what-negative_layer"),
    pytest.param(optax_ldl.freeze, dict(what=0, until=-5), "until", id="freeze-until-negative"),
    pytest.param(optax_ldl.freeze, dict(what=0, keep_state="no"), "keep_state",
                 id="freeze-keep_state-str"),
    pytest.param(optax_ldl.freeze, dict(what=0, until=10, keep_state=False), "keep_state",
                 id="freeze-keep_state-with_until"),
]


@pytest.mark.parametrize("fn, kwargs, arg", ROWS)
def test_rejected_input_names_the_argument(fn, kwargs, arg):
  with pytest.raises((TypeError, ValueError)) as info:
    fn(**kwargs)
  if isinstance(arg, tuple):
    messages = []
    for a in arg:
      try:
        assert_names_argument(info, a)
        return
      except AssertionError as e:
        messages.append(str(e))
    raise AssertionError("; ".join(messages))
  assert_names_argument(info, arg)


def test_every_public_factory_argument_has_a_row():
  """A new argument of a public factory cannot ship without a bad-input row."""
  import inspect

  covered = {}
  for row in ROWS:
    fn, kwargs, arg = row.values
    name = getattr(fn, "__name__", "")
    covered.setdefault(name, set()).update(kwargs if isinstance(arg, str) else ())
    covered[name].update([arg] if isinstance(arg, str) else arg)
  exempt = {
      "adamwdl": {"parameters"},  # any tree (or None) is accepted; checked as the params are.
      "AdamWDL": {"parameters", "name", "set_param_lr_fun", "name_dict",
                  "apply_decay_param_fun", "multi_precision"},  # shared with adamwdl's rows.
  }
  via = {"_run": "adamwdl", "_run_paddle": "AdamWDL", "_describe": "describe"}
  for helper, target in via.items():
    covered.setdefault(target, set()).update(covered.get(helper, set()))
  for fn in (optax_ldl.adamwdl, optax_ldl.AdamWDL, optax_ldl.inverse_sqrt_schedule,
             optax_ldl.InverseSquareRootSchedule, optax_ldl.clip_grad_by_global_norm,
             optax_ldl.clip_grad_by_norm, optax_ldl.clip_grad_by_value,
             optax_ldl.gradual_unfreezing, optax_ldl.backbone_ramp, optax_ldl.freeze):
    target = fn.__new__ if fn is optax_ldl.AdamWDL else fn
    params = [name for name, p in inspect.signature(target).parameters.items()
              if name not in ("cls", "self")
              and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    missing = set(params) - covered.get(fn.__name__, set()) - exempt.get(fn.__name__, set())
    assert not missing, f"{fn.__name__}: no bad-input row for {sorted(missing)}"


# ----- inputs that look odd but are valid: they must keep working -----

@pytest.mark.parametrize("kwargs", [
    dict(learning_rate=np.float32(1e-3), b1=jnp.float32(0.9), b2=np.float64(0.99), eps=1),
    dict(learning_rate=0, weight_decay=0),
    dict(learning_rate=optax.constant_schedule(1e-3)),
    dict(learning_rate=optax_ldl.InverseSquareRootSchedule(4, 1e-3)),
    dict(learning_rate=functools.partial(lambda count, peak: peak / (1 + count), peak=1e-3)),
    dict(learning_rate=lambda count, *rest: 1e-3),
    dict(learning_rate=lambda count: 1e-3 if count < 3 else 1e-4),  # untraceable: checked late.
    dict(layerwise_decay=1, n_layers=np.int32(2)),
    dict(apply_decay_param_fun=lambda name: np.bool_(not name.endswith("bias"))),
    dict(lazy_mode=np.bool_(True)),
    dict(grad_clip=optax_ldl.clip_grad_by_global_norm(math.inf)),
    dict(grad_clip=optax_ldl.clip_grad_by_value(math.inf, min=-math.inf)),
], ids=lambda kw: ",".join(kw))
def test_valid_odd_inputs_are_accepted(kwargs):
  kwargs = {**DECAYED, **kwargs} if "layerwise_decay" not in kwargs else kwargs
  tx = optax_ldl.adamwdl(**kwargs)
  state = tx.init(PARAMS)
  updates, _ = tx.update(GRADS, state, PARAMS)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


# ----- values injected with optax.inject_hyperparams: checked at run time on request -----

INJECTED = dict(learning_rate=1e-3, layerwise_decay=0.8, n_layers=2)


def _injected(debug_checks: bool):
  tx = optax.inject_hyperparams(optax_ldl.adamwdl)(**INJECTED, debug_checks=debug_checks)
  return tx, tx.init(PARAMS)


def _with(state: Any, **values: Any) -> Any:
  hyperparams = dict(state.hyperparams)
  for name, value in values.items():
    hyperparams[name] = jnp.asarray(value, hyperparams[name].dtype)
  return state._replace(hyperparams=hyperparams)


@pytest.mark.parametrize("arg, value, message", [
    ("layerwise_decay", 1.5, "layerwise_decay must be a number in (0, 1], got 1.5"),
    ("layerwise_decay", 0.0, "layerwise_decay must be a number in (0, 1], got 0.0"),
    ("layerwise_decay", math.nan, "layerwise_decay must be a number in (0, 1], got nan"),
    ("n_layers", 0, "n_layers must be an int >= 2 (the number of layers in the tree), got 0"),
    ("n_layers", 1, "n_layers must be an int >= 2 (the number of layers in the tree), got 1"),
    ("b1", 1.0, "b1 must be a number in [0, 1), got 1.0"),
    ("b2", -0.5, "b2 must be a number in [0, 1), got -0.5"),
    ("eps", 0.0, "eps must be a number > 0, got 0.0"),
    ("weight_decay", -1.0, "weight_decay must be a number >= 0, got -1.0"),
    ("learning_rate", math.inf, "learning_rate must be a number >= 0"),
])
def test_debug_checks_catch_injected_values_at_run_time(arg, value, message):
  """A value set in the injected state is a tracer to a jitted update: checkify checks it."""
  tx, state = _injected(debug_checks=True)
  update = checkify.checkify(jax.jit(tx.update))
  err, _ = update(GRADS, state, PARAMS)
  assert err.get() is None
  err, _ = update(GRADS, _with(state, **{arg: value}), PARAMS)
  assert err.get() is not None and message in err.get(), err.get()
  with pytest.raises(checkify.JaxRuntimeError) as info:
    err.throw()
  assert_names_argument(info, arg)  # a JaxRuntimeError is a ValueError.


def test_without_debug_checks_injected_values_are_not_checked():
  """Off (the default): no checkify check in the program (a plain jit of update runs).

  An out-of-range injected decay is still loud: every decayed ratio is NaN (one scalar
  factor per update), never a ratio above 1 (1.5**3 for the embeddings).
  """
  tx, state = _injected(debug_checks=False)
  updates, _ = jax.jit(tx.update)(GRADS, _with(state, layerwise_decay=1.5), PARAMS)
  assert np.all(np.isnan(updates["embeddings"]["word"]))
  assert np.all(np.isfinite(updates["head"]["kernel"]))
  tx, state = _injected(debug_checks=True)
  with pytest.raises(ValueError, match="checkify"):  # checks need checkify.checkify under jit.
    jax.jit(tx.update)(GRADS, state, PARAMS)


def test_debug_checks_do_not_change_the_update():
  tx, state = _injected(debug_checks=True)
  plain, plain_state = _injected(debug_checks=False)
  err, (updates, _) = checkify.checkify(jax.jit(tx.update))(GRADS, state, PARAMS)
  err.throw()
  expected, _ = jax.jit(plain.update)(GRADS, plain_state, PARAMS)
  jax.tree.map(np.testing.assert_array_equal, updates, expected)


def test_concrete_array_hyperparameters_are_checked_at_construction():
  tx = optax_ldl.adamwdl(layerwise_decay=jnp.float32(0.8), n_layers=jnp.int32(2),
                         debug_checks=True)
  state = tx.init(PARAMS)
  tx.update(GRADS, state, PARAMS)
  with pytest.raises(ValueError) as info:  # a concrete array is checked at construction.
    optax_ldl.adamwdl(layerwise_decay=jnp.float32(1.5), debug_checks=True)
  assert_names_argument(info, "layerwise_decay")


@pytest.mark.parametrize("dtype,arg", [(jnp.float16, "eps"), (jnp.bfloat16, "b2")])
def test_inject_hyperparams_rounding_a_hyperparameter_says_why_and_the_fix(dtype, arg):
  """inject_hyperparams casts eps/b2 to the params' dtype: 1e-8 is 0 in float16, 0.999 is 1
  in bfloat16. The error names the argument and the two fixes; the first fix works."""
  params = {"layers_0": jnp.ones(4, dtype), "head": jnp.ones(4, dtype)}
  tx = optax.inject_hyperparams(optax_ldl.adamwdl)(learning_rate=1e-3, layerwise_decay=0.8)
  with pytest.raises(ValueError, match=rf"adamwdl: {arg} must be .*hyperparam_dtype=jnp.float32"
                                       r".*static_args"):
    tx.update(params, tx.init(params), params)
  fixed = optax.inject_hyperparams(optax_ldl.adamwdl, hyperparam_dtype=jnp.float32)(
      learning_rate=1e-3, layerwise_decay=0.8, weight_decay=0.0)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # the half-precision advice
    updates, _ = fixed.update(params, fixed.init(params), params)
  # By hand: the first Adam step on a gradient of 1 moves lr * ratio (0.8 for layer 0).
  np.testing.assert_allclose(np.asarray(updates["layers_0"], np.float32), -1e-3 * 0.8, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(updates["head"], np.float32), -1e-3, rtol=1e-6)
