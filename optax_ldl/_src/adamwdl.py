"""``adamwdl``: AdamW with layer-wise learning-rate decay (PaddleNLP's ``AdamWDL``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, cast

import jax
import optax

from optax_ldl._src import checks
from optax_ldl._src.layer_decay import LayerDecay
from optax_ldl._src.layerwise import layerwise
from optax_ldl._src.tree_names import floats_only
from optax_ldl._src.weight_decay import (
    check_mask,
    check_mults,
    decay_mask_of,
    group_decayed_weights,
    weight_decay_filter,
)

__all__ = ("adamwdl", "weight_decay_filter")


def adamwdl(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: jax.typing.ArrayLike = 1e-2,
    *,
    layerwise_decay: jax.typing.ArrayLike = 1.0,
    n_layers: Any = None,
    set_param_lr_fun: Callable[..., Any] | None = None,
    name_dict: Mapping[str, str] | None = None,
    apply_decay_param_fun: Any = None,
    mask: Any = None,
    grad_clip: optax.GradientTransformation | None = None,
    lazy_mode: bool = False,
    multi_precision: bool = False,
    parameters: Any = None,
    stacked: Any = "auto",
    layers: Any = None,
    floor: jax.typing.ArrayLike | None = None,
    stages: Any = None,
    layer_schedule: Any = None,
    weight_decay_mults: Any = None,
    weight_decay_at_base_rate: bool = False,
    debug_checks: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""AdamW with layer-wise learning-rate decay (PaddleNLP's ``AdamWDL``).

  Each parameter :math:`p` gets the learning rate :math:`\eta_t r_p`, where
  :math:`r_p` is its layer ratio (:func:`optax_ldl.layerwise_lr_decay` by
  default: :math:`\alpha^{L-i}` in layer :math:`i`, :math:`\alpha^{L+1}` for
  embeddings, 1 elsewhere), and the decoupled weight decay is scaled by that
  same learning rate:

  .. math::

    m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
    p_t &= p_{t-1} - \eta_{t-1} r_p \left(
      \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}
      + \lambda\, [\text{decay}(p)]\, p_{t-1} \right)

  with :math:`g_t` the (optionally clipped) gradient. It is built as
  ``chain(grad_clip, scale_by_adam, add_decayed_weights(mask),
  scale_by_learning_rate)`` inside :func:`optax_ldl.layerwise`, so the state
  holds one set of moments per parameter, like ``optax.adamw``, plus one float
  scalar per layer group (:class:`optax_ldl.ScaleByLayerRatioState`).

  >>> import jax, jax.numpy as jnp, optax
  >>> params = {'embeddings': {'word': jnp.ones((4, 2))},
  ...           'encoder': {f'layers_{i}': {'kernel': jnp.ones((2, 2)),
  ...                                       'bias': jnp.zeros(2)} for i in range(2)},
  ...           'head': {'kernel': jnp.ones((2, 1))}}
  >>> tx = adamwdl(1e-3, layerwise_decay=0.5,
  ...              apply_decay_param_fun=weight_decay_filter)
  >>> state = tx.init(params)
  >>> grads = jax.tree.map(jnp.ones_like, params)
  >>> updates, state = tx.update(grads, state, params)
  >>> params = optax.apply_updates(params, updates)

  Args:
    learning_rate: a number or a schedule of the step count (e.g.
      :func:`optax_ldl.inverse_sqrt_schedule` or
      :class:`optax_ldl.InverseSquareRootSchedule`).
    b1: decay of the first moment, in ``[0, 1)``.
    b2: decay of the second moment, in ``[0, 1)``.
    eps: added to the root of the second moment, ``> 0``.
    weight_decay: decoupled weight decay :math:`\lambda`, ``>= 0``.
    layerwise_decay: the layer decay rate :math:`\alpha`, in ``(0, 1]``.
    n_layers: the number of layers :math:`L`: ``None`` (default: read from the
      tree, per stack), an int, or ``{stack prefix: depth}`` for several
      stacks. A value that disagrees with the tree warns (``UserWarning``).
    set_param_lr_fun: a layer rule ``(decay, name_dict, n_layers, param) ->
      ratio`` (Paddle-style rules that scale ``param.optimize_attr`` work too);
      ``None`` means the path rule (:func:`optax_ldl.classify`).
    name_dict: maps each parameter's path name (keys joined by ``/``) to the
      name the rule reads; ``None`` reads the path name.
    apply_decay_param_fun: Paddle's filter: weight decay applies where
      ``apply_decay_param_fun(path_name)`` is ``True`` (it must return a bool).
      A bool tree is accepted too.
    mask: optax's weight-decay mask: a bool tree or a function of the params.
      Give this or ``apply_decay_param_fun``, not both.
    grad_clip: any Optax transformation applied to the gradients before the
      moments, e.g. :func:`optax_ldl.clip_grad_by_global_norm`.
    lazy_mode: rows of a 2-D+ parameter whose gradient row is all zero keep
      their value and both moments (see :func:`optax_ldl.lazy_rows`).
    multi_precision: keep float32 master weights and moments for float16 and
      bfloat16 params (see :func:`optax_ldl.master_weights`).
    parameters: optionally the params (or ``jax.ShapeDtypeStruct`` s): labels,
      masks and names are checked now rather than at ``init``.
    stacked: scanned layers, stacked in one array per weight: ``"auto"``
      (see :func:`optax_ldl.classify`), ``None``/``False`` (none),
      ``{path_prefix: axis}`` (e.g. ``{'params/decoder/layers': 1}`` for
      MaxText), or a function ``path_name -> axis | None``. Slice ``i`` along
      the axis gets the ratio layer ``i`` would get unrolled (a custom
      ``set_param_lr_fun`` sees the name with the stack key replaced by
      ``layers_i``).
    layers: a :class:`optax_ldl.LayerMap` from :func:`optax_ldl.trace_layers`
      (the layers read from the model's data flow); replaces the path rule.
    floor: instead of ``layerwise_decay``, the embeddings' ratio, in
      ``(0, 1]``: a stack of depth :math:`L` decays by
      :math:`\text{floor}^{1/(L+1)}` (the same recipe at any depth).
    stages: one ratio per stage instead of per layer (mmengine's
      ``stage_wise``): ``k`` layers per stage, or the layers of each stage
      bottom to top, e.g. ``(3, 3, 9, 3)``.
    layer_schedule: each layer's ratio multiplied by a function of the step
      (:func:`optax_ldl.gradual_unfreezing`, :func:`optax_ldl.backbone_ramp`,
      :func:`optax_ldl.freeze`; see :func:`optax_ldl.layerwise`). While a
      layer's multiplier is 0 its moments keep tracking its gradients, so the
      first steps after it starts are Adam's steady-state steps (no
      bias-correction spike), and its weight decay is off too.
    weight_decay_mults: weight decay multipliers per group, as data: a list of
      ``(key, multiplier)`` pairs (or a dict), the first matching key winning:
      ``"embedding"``, ``"head"``, ``"layer"`` (placements), ``"norm"``,
      ``"bias"`` (roles read from the path name), a layer index, or a regular
      expression of the path name; unmatched leaves keep 1. Applies where the
      mask decays.
    weight_decay_at_base_rate: ``False`` (Paddle's semantics, the default):
      the decay is scaled by the layer's lr ratio like the rest of the update;
      ``True`` (big_vision's): every layer decays at ``weight_decay`` (times its
      multiplier), whatever its ratio; a ratio of 0 (a frozen layer) still stops it.
    debug_checks: also check, at run time, the hyperparameters that are JAX
      arrays (set through ``optax.inject_hyperparams``, where a jitted update
      sees only tracers): each ``update`` runs ``jax.experimental.checkify``
      checks of the ranges above (and ``n_layers`` at least the tree's depth).
      Run the step under ``checkify.checkify`` (then ``err.throw()``); eagerly a
      failed check raises at once. Off (the default), nothing is added.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  References:
    Loshchilov & Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, 2019; Clark et al., `ELECTRA
    <https://arxiv.org/abs/2003.10555>`_, 2020.
  """
  owner = "adamwdl"
  for kind, value in (("learning_rate", learning_rate), ("b1", b1), ("b2", b2), ("eps", eps),
                      ("weight_decay", weight_decay)):
    checks.hyperparameter(owner, kind, value)
  checks.flag(owner, "debug_checks", debug_checks)
  checks.flag(owner, "weight_decay_at_base_rate", weight_decay_at_base_rate)
  mults = check_mults(owner, weight_decay_mults)
  config = LayerDecay.of(None, owner, layerwise_decay=layerwise_decay, n_layers=n_layers,
                         rule=set_param_lr_fun, name_dict=name_dict, stacked=stacked,
                         layers=layers, floor=floor, stages=stages)
  tx = adamw_layerwise(
      owner, learning_rate, b1, b2, eps, weight_decay, config,
      apply_decay_param_fun=apply_decay_param_fun, mask=mask, grad_clip=grad_clip,
      lazy_mode=lazy_mode, multi_precision=multi_precision, parameters=parameters,
      layer_schedule=layer_schedule, weight_decay_mults=mults,
      weight_decay_at_base_rate=weight_decay_at_base_rate)
  if not debug_checks:
    return tx
  hyperparams = {"learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": eps,
                 "weight_decay": weight_decay, "layerwise_decay": layerwise_decay}
  return _with_runtime_checks(tx, owner, hyperparams, config)


def _is_transform(x: Any) -> bool:
  return callable(getattr(x, "init", None)) and callable(getattr(x, "update", None))


def adamw_layerwise(
    owner: str,
    learning_rate: Any,
    b1: Any,
    b2: Any,
    eps: Any,
    weight_decay: Any,
    config: LayerDecay,
    *,
    apply_decay_param_fun: Any,
    mask: Any,
    grad_clip: Any,
    lazy_mode: Any,
    multi_precision: Any,
    parameters: Any,
    layer_schedule: Any = None,
    weight_decay_mults: Any = None,
    weight_decay_at_base_rate: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """The chain behind :func:`adamwdl` and ``AdamWDL``, its numbers already checked by ``owner``.

  ``chain(grad_clip, scale_by_adam, add_decayed_weights(mask),
  scale_by_learning_rate)`` inside :func:`optax_ldl.layerwise`.
  """
  if grad_clip is not None and not _is_transform(grad_clip):
    raise TypeError(
        f"{owner}: grad_clip must be an optax transformation (with init and update), "
        f"e.g. optax_ldl.clip_grad_by_global_norm(1.0) or optax.clip_by_global_norm(1.0); "
        f"got {grad_clip!r}"
    )
  decay_mask = decay_mask_of(owner, apply_decay_param_fun, mask)
  tx = optax.chain(
      *([] if grad_clip is None else [grad_clip]),
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      # weight_decay passed checks.hyperparameter: a real scalar (or an array scalar).
      optax.add_decayed_weights(cast(optax.ScalarOrSchedule, weight_decay), decay_mask)
      if weight_decay_mults is None and not weight_decay_at_base_rate else
      group_decayed_weights(weight_decay, decay_mask, config, weight_decay_mults,
                            bool(weight_decay_at_base_rate)),
      optax.scale_by_learning_rate(learning_rate),
  )
  return layerwise(
      tx, config, lazy_mode=lazy_mode, multi_precision=multi_precision,
      parameters=parameters, extra_check=lambda params: check_mask(owner, decay_mask, params),
      layer_schedule=layer_schedule, owner=owner,
  )


def _tree_depth(config: LayerDecay, tree: Any) -> tuple[int, bool] | None:
  """(the deepest stack's depth, whether any leaf is in a layer or embedding); None: unknown."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      layer_map = config.layer_map(floats_only(tree))
  except Exception:  # noqa: BLE001 - update raises its own error for such a tree.
    return None
  if layer_map is None:  # a custom rule: the depth is the rule's business.
    return None
  depth = max((d for _, d in layer_map.depths), default=0)
  placed = any(p.kind in ("layer", "embedding") for p in layer_map.values())
  return depth, placed


def _with_runtime_checks(
    tx: optax.GradientTransformationExtraArgs,
    owner: str,
    hyperparams: dict[str, Any],
    config: LayerDecay,
) -> optax.GradientTransformationExtraArgs:
  """``tx`` whose update first checks its array hyperparameters (``checkify.check``)."""

  def update_fn(updates, state, params=None, **extra_args):
    for arg, value in hyperparams.items():
      if isinstance(value, jax.Array):
        checks.check_number_at_run_time(owner, arg, value, **checks.RANGES[arg])
    decay, n_layers = config.layerwise_decay, config.n_layers
    known = _tree_depth(config, updates if params is None else params)
    if isinstance(n_layers, jax.Array):
      depth = max(known[0], 1) if known is not None else 1
      checks.check_int_at_run_time(
          owner, "n_layers", n_layers, minimum=depth,
          accepted=f"an int >= {depth} (the number of layers in the tree)")
    if isinstance(decay, jax.Array) and known is not None and not known[1]:
      checks.check_number_at_run_time(
          owner, "layerwise_decay", decay, low=1.0, high=1.0,
          accepted="1.0, as no parameter of this tree is in a layer (nothing to decay)")
    return tx.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(tx.init, update_fn)
