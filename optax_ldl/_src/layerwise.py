"""``layerwise``: layer-wise lr decay around any Optax optimizer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax

from optax_ldl._src import checks, wrappers
from optax_ldl._src import layer_schedules as sched
from optax_ldl._src.layer_decay import LayerDecay
from optax_ldl._src.layer_map import LayerMap
from optax_ldl._src.scale import scale_by_plan
from optax_ldl._src.structure_checks import with_checks
from optax_ldl._src.tree_names import floats_only, path_name


def layerwise(
    inner: optax.GradientTransformation,
    decay: LayerDecay | None = None,
    *,
    lazy_mode: bool = False,
    multi_precision: bool = False,
    parameters: Any = None,
    layerwise_decay: Any = 1.0,
    n_layers: Any = None,
    rule: Callable[..., Any] | None = None,
    name_dict: Mapping[str, str] | None = None,
    stacked: Any = "auto",
    layers: LayerMap | None = None,
    floor: Any = None,
    stages: Any = None,
    layer_schedule: sched.LayerSchedule | None = None,
    extra_check: Callable[[Any], None] | None = None,
    owner: str = "layerwise",
) -> optax.GradientTransformationExtraArgs:
  """Layer-wise lr decay around any Optax optimizer.

  Each parameter's update from ``inner`` (learning rate and weight decay
  included) is multiplied by its layer ratio (:class:`optax_ldl.LayerDecay`), so the
  parameter trains as if ``inner``'s learning rate were ``lr * ratio``. Integer
  leaves are never updated; every check of :func:`optax_ldl.adamwdl` is made
  at ``init`` (or now, with ``parameters``).

  >>> import jax.numpy as jnp, optax
  >>> tx = layerwise(optax.sgd(1.0), layerwise_decay=0.5)
  >>> p = {'embed': jnp.ones(1), 'layers_0': jnp.ones(1), 'layers_1': jnp.ones(1),
  ...      'head': jnp.ones(1)}
  >>> u, _ = tx.update(p, tx.init(p))
  >>> {k: float(v[0]) for k, v in u.items()}
  {'embed': -0.125, 'head': -1.0, 'layers_0': -0.25, 'layers_1': -0.5}

  Args:
    inner: any Optax transformation (``optax.lion(1e-4)``, ``optax.sgd(...)``,
      a chain).
    decay: a :class:`optax_ldl.LayerDecay`, or ``None`` to build one from ``kwargs``.
    lazy_mode: Paddle's lazy mode (:func:`optax_ldl.lazy_rows`).
    multi_precision: float32 master weights for half-precision params
      (:func:`optax_ldl.master_weights`).
    parameters: optionally the params (or ``jax.ShapeDtypeStruct`` s), to check
      the configuration now rather than at ``init``.
    layerwise_decay: see :class:`optax_ldl.LayerDecay` (its fields are keyword arguments
      here, so ``optax.inject_hyperparams(optax_ldl.layerwise)`` works).
    n_layers: see :class:`optax_ldl.LayerDecay`.
    rule: see :class:`optax_ldl.LayerDecay`.
    name_dict: see :class:`optax_ldl.LayerDecay`.
    stacked: see :class:`optax_ldl.LayerDecay`.
    layers: see :class:`optax_ldl.LayerDecay`.
    floor: see :class:`optax_ldl.LayerDecay`.
    stages: see :class:`optax_ldl.LayerDecay`.
    layer_schedule: a multiplier of each layer's ratio as a function of the
      step (:func:`optax_ldl.gradual_unfreezing`, :func:`optax_ldl.backbone_ramp`,
      :func:`optax_ldl.freeze`); ``None``: the fixed ratios. While a place's
      multiplier is 0, ``inner`` still sees its gradients (Adam's moments stay
      warm) and its update is multiplied by 0; leaves frozen for good with
      ``freeze(..., keep_state=False)`` get no ``inner`` state
      (``optax.masked``).
    extra_check: a further check of the params, run with the others.
    owner: the name errors and warnings give (the alias that called this).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  config = LayerDecay.of(decay, owner, layerwise_decay=layerwise_decay, n_layers=n_layers,
                         rule=rule, name_dict=name_dict, stacked=stacked, layers=layers,
                         floor=floor, stages=stages)
  if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "update", None))):
    raise TypeError(f"{owner}: inner must be an optax transformation, got {inner!r}")
  checks.flag(owner, "lazy_mode", lazy_mode)
  checks.flag(owner, "multi_precision", multi_precision)
  sched.check(owner, layer_schedule)
  if parameters is not None:
    _check_parameters(owner, parameters)
  if layer_schedule is not None:
    inner = _stateless_where_frozen(inner, config, layer_schedule)
  tx = optax.chain(inner, scale_by_plan(config, layer_schedule))
  if lazy_mode:
    tx = wrappers.lazy_rows(tx)
  if multi_precision:
    tx = wrappers.master_weights(tx)
  tx = wrappers.float_leaves_only(tx)

  def check(params):
    if extra_check is not None:
      extra_check(params)
    config.check(params, owner)
    if not multi_precision:
      wrappers.warn_half_precision(params, owner)

  return with_checks(tx, check, parameters, owner)


def _stateless_where_frozen(inner: optax.GradientTransformation, config: LayerDecay,
                            schedule: sched.LayerSchedule) -> optax.GradientTransformation:
  """``inner`` under ``optax.masked``, off the leaves frozen for good, if the schedule has any.

  Their updates pass through the mask as the gradients and are then multiplied by
  0; ``inner`` keeps no state for them (``optax.MaskedNode``).
  """
  if not _drops_state(schedule):
    return inner

  def trained(tree: Any) -> Any:
    floats = floats_only(tree)
    layer_map = sched.layer_map_for("layer_schedule", config.layer_map(floats))
    frozen = sched.frozen_names(schedule, layer_map, floats)
    return jax.tree_util.tree_map_with_path(lambda p, _: path_name(p) not in frozen, tree)

  return optax.masked(inner, trained)


def _drops_state(schedule: sched.LayerSchedule) -> bool:
  """Whether some part of ``schedule`` is a ``freeze(..., keep_state=False)``."""
  if isinstance(schedule, sched.Freeze):
    return not schedule.keep_state
  return any(_drops_state(part) for part in getattr(schedule, "parts", ()))


def _check_parameters(owner: str, parameters: Any) -> None:
  """Raises unless ``parameters`` is a parameter tree: arrays or ``jax.ShapeDtypeStruct`` s."""
  for leaf in jax.tree.leaves(parameters):
    if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct, float,
                             int)) or isinstance(leaf, bool):
      raise TypeError(
          f"{owner}: parameters must be the parameter tree the optimizer will be given "
          "(arrays or jax.ShapeDtypeStruct s, e.g. jax.eval_shape(model.init, ...)), to "
          f"check the configuration before init; it holds {leaf!r}, a "
          f"{type(leaf).__name__}. Paddle's list of Param objects has no JAX equivalent: "
          "pass the params pytree, or None."
      )
