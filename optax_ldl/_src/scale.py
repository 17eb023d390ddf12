"""``scale_by_layer_ratio``: the transformation that multiplies each update by its layer ratio.

The ratios come from the :class:`~optax_ldl.LayerDecay`'s plan of the tree;
static ratios other than 0 and 1 are kept in the state (operands, not literals:
every layer's update is then one kernel, which keeps compile time at
``optax.adamw``'s: ``benchmarks/``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.core  # jax.core.Tracer: jax imports it, but type checkers need it named.
import jax.numpy as jnp
import numpy as np
import optax

from optax_ldl._src import layer_schedules as sched
from optax_ldl._src import stacked_ratio as stacks
from optax_ldl._src.layer_decay import LayerDecay
from optax_ldl._src.layer_map import LayerMap
from optax_ldl._src.plan import LayerPlan
from optax_ldl._src.tree_names import floats_only, path_name


class ScaleByLayerRatioState(NamedTuple):
  """State of :func:`scale_by_layer_ratio`.

  Attributes:
    ratios: ``{key: vector}``: one float vector holding the ratio of every
      group of unstacked parameters whose ratio is a number other than 0 and 1,
      in the order of their labels (``"decay^1"``, ``"decay^2"``, ...), under one
      key naming the configuration (``"decay@0.8"``, :func:`config_key`). Its
      structure does not depend on the tree, so
      ``optax.tree_utils.tree_map_params`` maps any state of this
      transformation; a state (or a checkpoint restore target) of another
      configuration has another key and is refused, never applied with its old
      ratios; one of another tree has another length and is refused too.
      ``None`` when every ratio is 1 for good (a decay of 1 with the path rule):
      the state is then ``optax``'s, leaf for leaf. A vector zeroed by a "reset"
      (``jax.tree.map(jnp.zeros_like, state)``,
      ``optax.tree_utils.tree_zeros_like``) makes the next update NaN, loudly,
      never a silently frozen layer: reset a state with ``tx.init(params)``.
  """

  ratios: dict[str, jax.Array] | None


class ScaleByLayerScheduleState(NamedTuple):
  """State of :func:`scale_by_layer_ratio` given a ``layer_schedule``.

  Attributes:
    ratios: as :attr:`ScaleByLayerRatioState.ratios`.
    count: the number of updates made (int32): the step the schedule reads.
  """

  ratios: dict[str, jax.Array] | None
  count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - optax's name for it.


def config_key(config: LayerDecay) -> str:
  """The state's key: the configuration its ratios were made with (``"decay@0.8"``, ...).

  It depends on the configuration only, never on the tree, so every state of one
  optimizer has the same structure (``optax.tree_utils.tree_map_params`` maps any
  of them), while a state (or a checkpoint restored into this optimizer's target)
  made with another decay rate, layer count, rule or plan has another key and is
  refused by structure, before any value is used.
  """
  decay = config.layerwise_decay
  parts = [f"decay@{'injected' if isinstance(decay, jax.Array) else repr(decay)}"]
  if config.n_layers is not None:
    n = config.n_layers
    n = "injected" if isinstance(n, jax.Array) else (
        dict(n) if hasattr(n, "items") else int(n))
    parts.append(f"n_layers@{n}".replace(" ", "").replace("'", ""))
  if config.rule is not None:
    parts.append(f"rule@{getattr(config.rule, '__qualname__', type(config.rule).__name__)}")
  if config.layers is not None:
    depths = ",".join(f"{s or '_'}:{d}" for s, d in config.layers.depths)
    parts.append(f"layers@{len(config.layers)}leaves:{depths}")
  if config.floor is not None:
    floor = config.floor
    parts.append(f"floor@{'injected' if isinstance(floor, jax.Array) else repr(floor)}")
  if config.stages is not None:
    parts.append(f"stages@{config.stages!r}".replace(" ", ""))
  return "|".join(parts)


def _stored(ratio: Any) -> bool:
  """Whether a group's ratio is read from the state.

  Static (Python or NumPy) scalar ratios other than 0 and 1 are kept in the
  state: the compiled update reads them as operands, so every layer's update is
  the same kernel (a ratio written into the program as a literal gives each
  layer kernels of its own and multiplies compile time: ``benchmarks/``). A
  stacked group's ratio vector stays a constant of the program (its leaves hold
  every layer, so a constant adds no kernels); JAX array ratios
  (``inject_hyperparams``, a traced decay) are runtime values already.
  """
  return not isinstance(ratio, (stacks.StackedRatio, jax.Array)) and ratio not in (0, 1)


def stored_labels(plan: LayerPlan) -> list[str]:
  """The labels of the groups whose ratio the state holds, in the state's order."""
  return sorted(label for label, r in plan.ratios.items() if _stored(r))


def _shown(labels: list[str], values: Any) -> list[str]:
  return [f"{label}@{float(v):.7g}" for label, v in zip(labels, values)]


def _held(ratios: Any, labels: list[str]) -> list[str]:
  """What a state's ratios hold, for an error: each key, with its values when they are known."""
  if not isinstance(ratios, dict):
    return [repr(ratios)]
  out = []
  for key, vector in sorted(ratios.items()):
    out.append(key)
    if not isinstance(vector, jax.core.Tracer) and np.shape(vector) == (len(labels),):
      out += _shown(labels, np.asarray(vector))
  return out


def _mismatch(held: list[str], configured: list[str]) -> ValueError:
  return ValueError(
      f"scale_by_layer_ratio: the state holds the ratios {held}, but this transformation "
      f"gives the updates {configured}: the state was made for other parameters or "
      "with another layerwise_decay, n_layers, rule or stacked setting. Make "
      "the state with this transformation's init. To keep the moments "
      "of an old state, give it the ratios of a fresh one: "
      "optax.tree_utils.tree_set(state, ratios=optax.tree_utils.tree_get("
      "tx.init(params), 'ratios')); to change the decay during training, "
      "use optax.inject_hyperparams."
  )


def _stored_ratios(state: ScaleByLayerRatioState, key: str, plan: LayerPlan, float_dtype: Any
                   ) -> dict[str, Any]:
  """Label -> ratio read from the state; every one NaN if the state is not this plan's.

  A state of another configuration (another key) or tree (another length) is
  refused now. One with other values (a custom rule that changed, a zeroed
  "reset") is refused now when its values are concrete; under ``jit`` each ratio
  is multiplied by 1 when the state holds exactly the configured ratios and by
  NaN otherwise (and ``s / sign(s)`` is NaN for a zeroed entry): the update is
  NaN, loudly, never a silently frozen or mistrained layer. The configured
  ratios enter the program as one constant vector compared once; the kernels
  that scale the updates read the state, so they stay identical across layers
  (a literal per group roughly doubled compile time: ``benchmarks/``).
  """
  labels = stored_labels(plan)
  configured = np.asarray([plan.ratios[label] for label in labels], float_dtype)
  if not isinstance(state.ratios, dict) or set(state.ratios) != {key}:
    raise _mismatch(_held(state.ratios, labels), [key, *_shown(labels, configured)])
  vector = state.ratios[key]
  if np.shape(vector) != configured.shape:
    raise _mismatch([f"{key}: {np.shape(vector)[0] if np.ndim(vector) else '?'} ratios"],
                    [key, *_shown(labels, configured)])
  if not labels:
    return {}
  if not isinstance(vector, jax.core.Tracer):
    values = np.asarray(vector)
    if np.any(values != configured) and np.all(values != 0):
      raise _mismatch(_shown(labels, values), _shown(labels, configured))
  same = jnp.all(vector == configured)
  loud = vector * jnp.where(same, 1.0, jnp.nan).astype(vector.dtype)
  # Slice first, divide last. XLA fuses a slice (cheap) into every kernel that reads
  # it, its offset written into the kernel: a ratio sliced last gives each group's
  # leaves kernels of their own, and compile time grows with depth (benchmarks/). A
  # divide is not copied into the kernels that broadcast it: each ratio is then one
  # scalar kernel, an operand of per-leaf kernels that are the same for every layer.
  return {label: loud[i] / jnp.sign(vector[i]) for i, label in enumerate(labels)}


def _replicated_like(vector: jax.Array, params: Any) -> jax.Array:
  """``vector`` replicated over the mesh of sharded params (as a scalar state entry would be).

  Outside ``jit``, on params placed with a ``NamedSharding``, the ratio vector is put
  on every device of that mesh, so a step whose ``out_shardings`` follow the params
  (and replicate the rest) takes it as it is.
  """
  for leaf in jax.tree.leaves(params):
    sharding = getattr(leaf, "sharding", None)
    if isinstance(leaf, jax.core.Tracer) or not isinstance(sharding, jax.sharding.NamedSharding):
      continue
    return jax.device_put(vector, jax.sharding.NamedSharding(
        sharding.mesh, jax.sharding.PartitionSpec()))
  return vector


def _leaf_ratio(plan: LayerPlan, stored: Mapping[str, Any], label: str, ndim: int,
                multiplier: Any = None) -> Any:
  """What a leaf of group ``label`` (of rank ``ndim``) is multiplied by.

  The group's ratio (read from the state when it is stored there; a stacked
  group's broadcast along its axis), times a schedule's ``multiplier`` if one is
  given. ``None``: a static ratio of 1 and no multiplier, the update as it is.
  """
  ratio = plan.ratios[label]
  if isinstance(ratio, stacks.StackedRatio):  # never stored: a constant of the program.
    values = ratio.ratios if multiplier is None else jnp.asarray(ratio.ratios) * multiplier
    return stacks.broadcast_ratio(values, ratio.axis, ndim)
  if label in stored or isinstance(ratio, jax.Array):
    r = stored.get(label, ratio)
    return r if multiplier is None else r * multiplier
  if ratio == 0:
    return ratio
  return multiplier  # a static ratio of 1.


def scale_by_layer_ratio(
    decay: LayerDecay | None = None,
    *,
    layerwise_decay: Any = 1.0,
    n_layers: Any = None,
    rule: Callable[..., Any] | None = None,
    name_dict: Mapping[str, str] | None = None,
    stacked: Any = "auto",
    layers: LayerMap | None = None,
    floor: Any = None,
    stages: Any = None,
    layer_schedule: sched.LayerSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
  """Multiplies each update by its parameter's layer-wise lr ratio.

  The parameters are grouped by ratio (:meth:`optax_ldl.LayerDecay.plan`) and
  each group's updates are multiplied by its ratio: the result is that of
  ``optax.partition({label: optax.scale(ratio)}, labels)``, computed in one
  pass over the tree (``optax.partition`` masks the whole tree once per label,
  which makes tracing quadratic in the depth). The ratios of unstacked groups
  are kept in the state (:class:`ScaleByLayerRatioState`). To change the decay
  during training use ``optax.inject_hyperparams``.

  >>> import jax.numpy as jnp
  >>> tx = scale_by_layer_ratio(layerwise_decay=0.5)
  >>> g = {'embedding': jnp.ones(1), 'layers_0': jnp.ones(1),
  ...      'layers_1': jnp.ones(1), 'head': jnp.ones(1)}
  >>> u, _ = tx.update(g, tx.init(g))
  >>> {k: float(v[0]) for k, v in u.items()}
  {'embedding': 0.125, 'head': 1.0, 'layers_0': 0.25, 'layers_1': 0.5}

  Args:
    decay: a :class:`optax_ldl.LayerDecay`; or ``None``, and the fields below.
    layerwise_decay: see :class:`optax_ldl.LayerDecay` (each field, named as
      there, is a keyword argument, so ``optax.inject_hyperparams`` can inject
      the decay).
    n_layers: see :class:`optax_ldl.LayerDecay`.
    rule: see :class:`optax_ldl.LayerDecay`.
    name_dict: see :class:`optax_ldl.LayerDecay`.
    stacked: see :class:`optax_ldl.LayerDecay`.
    layers: see :class:`optax_ldl.LayerDecay`.
    floor: see :class:`optax_ldl.LayerDecay`.
    stages: see :class:`optax_ldl.LayerDecay`.
    layer_schedule: a multiplier of each ratio as a function of the step
      (:func:`optax_ldl.gradual_unfreezing`, ...); the state then counts the
      steps (:class:`ScaleByLayerScheduleState`).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  sched.check("scale_by_layer_ratio", layer_schedule)
  config = LayerDecay.of(decay, "scale_by_layer_ratio", layerwise_decay=layerwise_decay,
                         n_layers=n_layers, rule=rule, name_dict=name_dict, stacked=stacked,
                         layers=layers, floor=floor, stages=stages)
  return scale_by_plan(config, layer_schedule)


def scale_by_plan(config: LayerDecay, schedule: sched.LayerSchedule | None = None
                  ) -> optax.GradientTransformationExtraArgs:
  """:func:`scale_by_layer_ratio` of an already checked configuration."""
  float_dtype = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 unless x64.

  # Whether the state holds a ratio vector: not when every ratio is 1 for good (a
  # decay of 1 with the path rule: then the state is optax's own, leaf for leaf).
  stores = config.rule is not None or config.layers is not None or not config.is_one
  key = config_key(config)

  def init_fn(params):
    if not stores:
      return ScaleByLayerRatioState(None)
    if type(params).__name__ == "_ParamsPlaceholder":
      # optax.tree_utils.tree_map_params inits on a placeholder to find the params in
      # the state: the ratios are not params, and this structure is every state's.
      return ScaleByLayerRatioState({key: jnp.ones((0,), float_dtype)})
    plan = config.plan(params)
    vector = jnp.asarray([plan.ratios[label] for label in stored_labels(plan)],
                         float_dtype).reshape(-1)
    return ScaleByLayerRatioState({key: _replicated_like(vector, params)})

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    plan = config.plan(updates)
    stored = _stored_ratios(state, key, plan, float_dtype) if stores else {}

    def scale(u, label):
      r = _leaf_ratio(plan, stored, label, jnp.ndim(u))
      return u if r is None else stacks.times_ratio(u, r)

    return jax.tree.map(scale, updates, plan.label_tree(updates)), state

  if schedule is None:  # the fixed-ratio program, unchanged.
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)  # pyright: ignore[reportArgumentType]
  return _scheduled(config, schedule, init_fn, stores, key, float_dtype)


def _scheduled(config: LayerDecay, schedule: sched.LayerSchedule, init_fn: Any, stores: bool,
               key: str, float_dtype: Any) -> optax.GradientTransformationExtraArgs:
  """The transformation whose ratios are multiplied by ``schedule``'s at the state's count.

  The inner optimizer runs unchanged: while a place's multiplier is 0 its update
  (learning rate and weight decay included) is multiplied by 0, and its
  optimizer state keeps tracking the gradients, warm when it starts to train.
  """

  def windows(tree: Any) -> dict[str, np.ndarray]:
    layer_map = sched.layer_map_for("layer_schedule", config.layer_map(floats_only(tree)))
    return sched.leaf_windows(schedule, layer_map, floats_only(tree))

  def init_fn_s(params):
    if type(params).__name__ != "_ParamsPlaceholder":
      windows(params)  # a schedule that does not fit the tree is refused at init.
    return ScaleByLayerScheduleState(init_fn(params).ratios, jnp.zeros([], jnp.int32))

  def update_fn_s(updates, state, params=None, **extra_args):
    del params, extra_args
    plan = config.plan(updates)
    stored = _stored_ratios(ScaleByLayerRatioState(state.ratios), key, plan, float_dtype
                            ) if stores else {}
    factor = sched.factors(windows(updates), state.count)

    def scale(path, u):
      name = path_name(path)
      return stacks.times_ratio(
          u, _leaf_ratio(plan, stored, plan.labels[name], jnp.ndim(u), factor[name]))

    return (jax.tree_util.tree_map_with_path(scale, updates),
            ScaleByLayerScheduleState(state.ratios,
                                      jnp.asarray(optax.safe_increment(state.count))))

  return optax.GradientTransformationExtraArgs(init_fn_s, update_fn_s)  # pyright: ignore[reportArgumentType]
