"""``track_layer_metrics``: an optimizer wrapper that records :func:`layer_metrics` every N steps.

Reducing the updates inside the train step on every step is not free: a reduction of the
update is a second consumer of it, so XLA keeps the update in memory instead of fusing it
into the step that writes the params, and where the params are donated it copies them too.
On a CPU that costs several times the step (``benchmarks/metrics_overhead.py``).

``track_layer_metrics`` measures on a logging step only, and leaves the other steps alone:

- on a step whose count is a multiple of ``every``, a :func:`jax.lax.cond` branch runs the
  inner optimizer's update once more on the same gradients, state and params (the update
  that is about to be applied, exactly), and reduces it with :func:`layer_metrics`;
- on the other steps the branch returns the metrics of the last logging step;
- the real update reads the gradients plus a zero that the branch returns. That orders the
  branch before the update, so the branch reads the params and the state before they are
  overwritten in place, and nothing has to be copied. The update is the inner one (bit
  for bit eagerly; under jit XLA compiles the wrapped step apart and may round the last
  bit of a value differently, as for any change to a program).

The metrics live in the state (``state.layer_metrics``, a flat dict of scalars, and
``state.metrics_count``, the step they are from), so they need no extra output from the
train step, and are read on the host only when the loop logs them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_ldl._src.diagnostics import Description
from optax_ldl._src.layer_map import LayerMap
from optax_ldl._src.layer_metrics import check_layers, layer_metrics
from optax_ldl._src.plan import LayerPlan
from optax_ldl._src.tree_names import is_float

_OWNER = "track_layer_metrics"


class TrackLayerMetricsState(NamedTuple):
  """State of :func:`track_layer_metrics`.

  Attributes:
    count: the number of updates so far (``int32``).
    metrics_count: the ``count`` at which ``layer_metrics`` were measured; ``-1`` before
      the first update.
    layer_metrics: ``{"<group>/<metric>": scalar}`` of :func:`optax_ldl.layer_metrics`
      for the update of step ``metrics_count`` (``nan`` before the first update).
    inner_state: the wrapped optimizer's state.
  """

  count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - optax's name for it.
  metrics_count: jax.Array
  layer_metrics: dict[str, jax.Array]
  inner_state: Any


def track_layer_metrics(
    inner: optax.GradientTransformation,
    layers: LayerMap | LayerPlan | Description,
    *,
    every: int = 100,
) -> optax.GradientTransformationExtraArgs:
  """Wraps an optimizer to record :func:`optax_ldl.layer_metrics` every ``every`` steps.

  The update is the inner optimizer's. On steps ``0, every, 2 * every, ...`` the state
  also gets the per-layer metrics of that step's update (update RMS, weight RMS, their
  ratio and the gradient norm of every layer group); on the other steps it keeps them,
  and the step costs what the inner step costs. Read them where the loop logs:

  >>> import jax, jax.numpy as jnp, optax, optax_ldl
  >>> params = {'embed': jnp.ones(4), 'layers_0': jnp.ones(4), 'layers_1': jnp.ones(4),
  ...           'head': jnp.ones(4)}
  >>> tx = optax_ldl.track_layer_metrics(
  ...     optax_ldl.adamwdl(1e-2, layerwise_decay=0.5, weight_decay=0.0),
  ...     optax_ldl.path_layers(params),
  ...     every=10)
  >>> state = tx.init(params)
  >>> grads = jax.tree.map(jnp.ones_like, params)
  >>> updates, state = jax.jit(tx.update)(grads, state, params)
  >>> int(state.metrics_count)
  0
  >>> {k.split('/')[0]: round(float(v), 6) for k, v in state.layer_metrics.items()
  ...  if k.endswith('update_rms')}
  {'embedding': 0.00125, 'head': 0.01, 'layer_0': 0.0025, 'layer_1': 0.005}

  Wrap the whole optimizer (the metrics are of the updates it returns). Inside another
  wrapper (``optax.MultiSteps``, ``optax.inject_hyperparams``, a chain),
  ``optax.tree_utils.tree_get(state, "layer_metrics")`` finds them. Under ``jax.vmap``
  (a sweep) the branch becomes a select and runs on every step.

  Args:
    inner: the optimizer, e.g. :func:`optax_ldl.adamwdl`; it is given the same
      gradients, state, params and extra arguments as without the wrapper.
    layers: the layer plan the metrics are grouped by, as for
      :func:`optax_ldl.layer_metrics` (a :class:`optax_ldl.LayerMap`, a
      :class:`optax_ldl.LayerPlan` or a :class:`optax_ldl.Description`); give the one
      the optimizer uses.
    every: measure on the steps whose count is a multiple of this (an ``int >= 1``);
      ``1`` measures every step, reducing the applied update directly.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`optax_ldl.TrackLayerMetricsState`; ``update`` needs ``params``.
  """
  if isinstance(every, bool) or not isinstance(every, int) or every < 1:
    raise ValueError(f"{_OWNER}: every must be an int >= 1 (measure on the steps whose count "
                     f"is a multiple of it), got {every!r}")
  check_layers(_OWNER, layers)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    shapes = jax.eval_shape(lambda p: layer_metrics(p, p, p, layers), params)
    return TrackLayerMetricsState(
        count=jnp.zeros([], jnp.int32), metrics_count=jnp.full([], -1, jnp.int32),
        layer_metrics={k: jnp.full(s.shape, jnp.nan, s.dtype) for k, s in shapes.items()},
        inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError(f"{_OWNER}: update needs params (the metrics include the weight RMS "
                       "of each layer group): call tx.update(grads, state, params).")
    grads = updates
    count = jnp.asarray(optax.safe_increment(state.count))
    if every == 1:
      updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
      return updates, TrackLayerMetricsState(
          count=count, metrics_count=state.count,
          layer_metrics=layer_metrics(params, updates, grads, layers), inner_state=inner_state)

    def measure(operands):
      grads, inner_state, params = operands
      probe, _ = inner.update(grads, inner_state, params, **extra_args)
      metrics = layer_metrics(params, probe, grads, layers)
      first = next(iter(metrics.values()), jnp.zeros([], jnp.float32))
      # A zero that XLA cannot fold away (finite times 0), so the update waits for this.
      zero = jnp.where(jnp.isfinite(first), first, 0) * 0
      return metrics, zero.astype(jnp.float32)

    def keep(operands):
      del operands
      return state.layer_metrics, jnp.zeros([], jnp.float32)

    log = state.count % every == 0
    metrics, zero = jax.lax.cond(log, measure, keep, (grads, state.inner_state, params))
    grads = jax.tree.map(lambda g: g + zero.astype(g.dtype) if is_float(g) else g, grads)
    updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
    return updates, TrackLayerMetricsState(
        count=count, metrics_count=jnp.where(log, state.count, state.metrics_count),
        layer_metrics=metrics, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
