"""AdamW with layer-wise learning-rate decay, as an Optax gradient transformation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_ldl._src import checks, layer_rules
from optax_ldl._src import stacked as stacked_lib

_LOW_PRECISION = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def _is_transform(x: Any) -> bool:
  return callable(getattr(x, "init", None)) and callable(getattr(x, "update", None))


class ScaleByLayerRatioState(NamedTuple):
  """State of :func:`scale_by_layer_ratio`.

  Attributes:
    ratios: one float scalar per group of unstacked parameters whose ratio is a
      number other than 1, keyed ``"<label>@<ratio>"`` (``"layer_3@0.512"``):
      the key names the ratio the group was built with, so a state made with
      another decay rate, layer count or rule has other keys and is refused,
      never silently applied with its old ratios.
  """

  ratios: dict[str, jax.Array]


def _state_key(label: str, ratio: Any) -> str | None:
  """The state key of a group whose ratio is read from the state, else None.

  Static (Python or NumPy) scalar ratios other than 1 are kept in the state.
  Ratio 1 needs no multiply; a stacked group's ratio vector stays a constant of
  the program (its leaves hold every layer, so a constant adds no kernels);
  JAX array ratios (``inject_hyperparams``, a traced decay) are runtime values
  already.
  """
  if isinstance(ratio, (stacked_lib.StackedRatio, jax.Array)) or ratio == 1:
    return None
  return f"{label}@{float(ratio)!r}"


def scale_by_layer_ratio(
    *,
    layerwise_decay: Any = 1.0,
    n_layers: Any = 12,
    set_param_lr_fun: Callable[..., Any] | None = None,
    name_dict: Mapping[str, str] | None = None,
    stacked: Any = "auto",
) -> optax.GradientTransformationExtraArgs:
  """Multiplies each update by its parameter's layer-wise lr ratio.

  The parameters are labelled by path (:func:`optax_ldl.layer_groups`), one
  label per distinct ratio, and each group's updates are multiplied by its
  ratio: the result is that of ``optax.partition({label: optax.scale(ratio)},
  labels)``, computed in one pass over the tree (``optax.partition`` masks the
  whole tree once per label, which makes tracing quadratic in the depth).

  The ratios of unstacked groups are kept in the state, one float scalar per
  group (:class:`ScaleByLayerRatioState`), so that the compiled update reads
  them as operands and every layer's update is the same kernel; a ratio
  written into the program as a literal gives each layer kernels of its own
  and multiplies compile time (``benchmarks/``). To change the decay rate
  during training use ``optax.inject_hyperparams``.

  >>> import jax.numpy as jnp
  >>> tx = scale_by_layer_ratio(layerwise_decay=0.5, n_layers=2)
  >>> g = {'embedding': jnp.ones(1), 'layers_0': jnp.ones(1),
  ...      'layers_1': jnp.ones(1), 'head': jnp.ones(1)}
  >>> state = tx.init(g)
  >>> {k: float(v) for k, v in state.ratios.items()}
  {'embedding@0.125': 0.125, 'layer_0@0.25': 0.25, 'layer_1@0.5': 0.5}
  >>> u, _ = tx.update(g, state)
  >>> {k: float(v[0]) for k, v in u.items()}
  {'embedding': 0.125, 'head': 1.0, 'layers_0': 0.25, 'layers_1': 0.5}

  Args:
    layerwise_decay: the decay rate, in ``(0, 1]``.
    n_layers: the number of transformer layers.
    set_param_lr_fun: ``(decay, name_dict, n_layers, param) -> ratio``; ``None``
      for :func:`optax_ldl.layerwise_lr_decay`.
    name_dict: path name -> name the rule reads.
    stacked: which leaves stack every layer along an axis (scanned layers):
      ``"auto"``, ``None``/``False``, ``{path_prefix: axis}`` or a function
      ``path_name -> axis | None``; a stacked leaf's slice ``i`` gets layer
      ``i``'s ratio.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  stacked_lib.check_stacked_arg("scale_by_layer_ratio", stacked)
  float_dtype = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 unless x64.

  def groups_of(tree):
    return layer_rules.layer_groups(
        tree,
        layerwise_decay=layerwise_decay,
        n_layers=n_layers,
        set_param_lr_fun=set_param_lr_fun,
        name_dict=name_dict,
        stacked=stacked,
    )

  def state_keys(groups):
    keys = {label: _state_key(label, r) for label, r in groups.ratios.items()}
    return {label: key for label, key in keys.items() if key is not None}

  def init_fn(params):
    groups = groups_of(params)
    return ScaleByLayerRatioState({
        key: jnp.asarray(groups.ratios[label], float_dtype)
        for label, key in state_keys(groups).items()
    })

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    groups = groups_of(updates)
    keys = state_keys(groups)
    if set(keys.values()) != set(state.ratios):
      raise ValueError(
          "scale_by_layer_ratio: the state holds the ratios "
          f"{sorted(state.ratios)}, but this transformation gives the updates "
          f"{sorted(keys.values())}: the state was made for other parameters or "
          "with another layerwise_decay, n_layers, rule or stacked setting. Make "
          "the state with this transformation's init. To keep the Adam moments "
          "of an old state, give it the ratios of a fresh one: "
          "optax.tree_utils.tree_set(state, ratios=optax.tree_utils.tree_get("
          "tx.init(params), 'ratios')); to change the decay during training, "
          "use optax.inject_hyperparams."
      )

    def scale(u, label):
      ratio = groups.ratios[label]
      if label in keys:
        r = state.ratios[keys[label]]
      elif isinstance(ratio, stacked_lib.StackedRatio):
        r = stacked_lib.broadcast_ratio(ratio.ratios, ratio.axis, jnp.ndim(u))
      elif isinstance(ratio, jax.Array):
        r = ratio
      else:  # a static ratio of 1.
        return u
      return stacked_lib.times_ratio(u, r)

    return jax.tree.map(scale, updates, groups.labels), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def decay_mask_of(
    apply_decay_param_fun: Any, mask: Any
) -> None | Any | Callable[[Any], Any]:
  """The weight-decay mask for ``optax.add_decayed_weights``."""
  if apply_decay_param_fun is not None and mask is not None:
    raise ValueError(
        "adamwdl: pass apply_decay_param_fun (Paddle: a function of the "
        "parameter name) or mask (optax: a bool tree or a function of the "
        "params), not both."
    )
  if apply_decay_param_fun is None:
    return mask
  if not callable(apply_decay_param_fun):
    return apply_decay_param_fun  # a bool tree: optax's mask.

  def mask_fn(tree):
    return jax.tree_util.tree_map_with_path(
        lambda p, _: bool(apply_decay_param_fun(layer_rules.path_name(p))), tree
    )

  return mask_fn


def _check_mask_tree(mask: Any, params: Any) -> None:
  if mask is None or callable(mask):
    return
  try:
    jax.tree.map(lambda m, _: None, mask, params)
  except (ValueError, TypeError) as e:
    raise ValueError(
        "adamwdl: the weight-decay mask tree does not match the params: it must "
        "have the params' structure (or a prefix of it) with bool leaves.\n"
        f"mask:   {jax.tree.structure(mask)}\nparams: {jax.tree.structure(params)}"
    ) from e
  bad = [x for x in jax.tree.leaves(mask) if not isinstance(x, (bool, np.bool_))]
  if bad:
    raise ValueError(f"adamwdl: the weight-decay mask's leaves must be bools, got {bad[0]!r}")


class LazyRowsState(NamedTuple):
  """State of :func:`lazy_rows`: the inner chain's state."""

  inner_state: Any


def _row_mask(g: jax.Array) -> jax.Array | None:
  """Which rows (slices along axis 0) of a 2-D+ gradient have any non-zero."""
  if jnp.ndim(g) < 2:
    return None
  return jnp.any(g != 0, axis=tuple(range(1, jnp.ndim(g))))


def _keep_rows(rows: jax.Array | None, new: jax.Array, old: jax.Array) -> jax.Array:
  if rows is None:
    return new
  return jnp.where(rows.reshape(rows.shape + (1,) * (new.ndim - 1)), new, old)


def lazy_rows(
    inner: optax.GradientTransformation, adam_index: int
) -> optax.GradientTransformationExtraArgs:
  """Paddle's ``lazy_mode`` on dense gradients.

  A row (slice along axis 0) of a parameter with two or more dimensions whose
  gradient is entirely zero keeps its parameter value (the update is 0, weight
  decay included) and both Adam moments. 0-D and 1-D parameters update densely,
  as Paddle only ever gives row-sparse gradients to embedding tables. The step
  count and bias correction advance for every row, as in Paddle.

  Args:
    inner: a chain whose element ``adam_index`` is ``optax.scale_by_adam``.
    adam_index: where the Adam state sits in the chain's state tuple.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return LazyRowsState(inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    rows = jax.tree.map(_row_mask, updates)
    new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
    # The inner state is the chain's tuple, with optax.ScaleByAdamState at adam_index.
    new_inner = cast(tuple[Any, ...], new_inner)
    adam_old = cast(optax.ScaleByAdamState, state.inner_state[adam_index])
    adam_new = cast(optax.ScaleByAdamState, new_inner[adam_index])
    is_none = lambda x: x is None  # noqa: E731
    adam_new = adam_new._replace(
        mu=jax.tree.map(_keep_rows, rows, adam_new.mu, adam_old.mu, is_leaf=is_none),
        nu=jax.tree.map(_keep_rows, rows, adam_new.nu, adam_old.nu, is_leaf=is_none),
    )
    new_inner = new_inner[:adam_index] + (adam_new,) + new_inner[adam_index + 1 :]
    new_updates = jax.tree.map(
        lambda r, u: _keep_rows(r, u, jnp.zeros_like(u)), rows, new_updates, is_leaf=is_none
    )
    return new_updates, LazyRowsState(new_inner)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class MasterWeightsState(NamedTuple):
  """State of :func:`master_weights`.

  Attributes:
    master: float32 copies of the float16/bfloat16 parameters
      (``optax.MaskedNode()`` for every other leaf).
    inner_state: the inner transformation's state, built on float32 params.
  """

  master: Any
  inner_state: Any


def _is_low(x: Any) -> bool:
  return jnp.dtype(getattr(x, "dtype", jnp.float32)) in _LOW_PRECISION


def master_weights(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """Paddle's ``multi_precision``: float32 master weights for half-precision params.

  ``inner`` sees float32 params (the master copy), float32 gradients and keeps
  float32 state (Adam moments), so its trajectory is the float32 run's. The
  update returned for a half-precision leaf is float32, chosen so that
  ``optax.apply_updates`` gives exactly the master rounded to the param's dtype.

  Args:
    inner: the transformation to run in float32.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    master = jax.tree.map(
        lambda p: jnp.asarray(p, jnp.float32) if _is_low(p) else optax.MaskedNode(), params
    )
    return MasterWeightsState(master, inner.init(_full(params, master)))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError(
          "adamwdl(multi_precision=True) needs the params in update: call "
          "tx.update(grads, state, params)."
      )
    grads = jax.tree.map(
        lambda g, p: g.astype(jnp.float32) if _is_low(p) else g, updates, params
    )
    new_updates, inner_state = inner.update(
        grads, state.inner_state, _full(params, state.master), **extra_args
    )
    master = jax.tree.map(
        lambda p, m, u: m + u if _is_low(p) else optax.MaskedNode(),
        params, state.master, new_updates,
    )
    # target - p is exact in float32 for half-precision target and p (unless
    # their exponents differ by more than 16), so p + update == target.
    new_updates = jax.tree.map(
        lambda p, m, u: (
            m.astype(p.dtype).astype(jnp.float32) - p.astype(jnp.float32)
            if _is_low(p) else u
        ),
        params, master, new_updates,
    )
    return new_updates, MasterWeightsState(master, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _full(params: Any, master: Any) -> Any:
  """``params`` with each half-precision leaf replaced by its float32 master."""
  return jax.tree.map(lambda p, m: m if _is_low(p) else p, params, master)


def is_float(x: Any) -> bool:
  dtype = getattr(x, "dtype", None)
  return jnp.issubdtype(jnp.result_type(x) if dtype is None else dtype, jnp.inexact)


def float_leaves_only(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """Runs ``inner`` on floating-point leaves; integer leaves get a zero update.

  Integer leaves (step counters, token ids kept in the params) receive ``float0``
  or integer gradients; their update is zero in the param's own dtype, so
  ``optax.apply_updates`` leaves them unchanged.
  """
  masked = optax.masked(inner, lambda tree: jax.tree.map(is_float, tree))

  def zero(u, p=None):
    if is_float(u):
      return u
    dtype = jnp.int32 if p is None else jnp.result_type(p)
    dtype = jnp.int32 if dtype == jax.dtypes.float0 else dtype
    return jnp.zeros(jnp.shape(u), dtype)

  def update_fn(updates, state, params=None, **extra_args):
    updates, state = masked.update(updates, state, params, **extra_args)
    if params is None:
      return jax.tree.map(zero, updates), state
    return jax.tree.map(zero, updates, params), state

  return optax.GradientTransformationExtraArgs(masked.init, update_fn)


def adamwdl(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: jax.typing.ArrayLike = 0.01,
    *,
    layerwise_decay: jax.typing.ArrayLike = 1.0,
    n_layers: int = 12,
    set_param_lr_fun: Callable[..., Any] | None = None,
    name_dict: Mapping[str, str] | None = None,
    apply_decay_param_fun: Any = None,
    mask: Any = None,
    grad_clip: optax.GradientTransformation | None = None,
    lazy_mode: bool = False,
    multi_precision: bool = False,
    parameters: Any = None,
    stacked: Any = "auto",
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
  scale_by_learning_rate, scale_by_layer_ratio)``, so the state holds one
  set of moments per parameter, like ``optax.adamw``, plus one float scalar
  per layer group (:class:`ScaleByLayerRatioState`).

  >>> import jax, jax.numpy as jnp, optax
  >>> params = {'embeddings': {'word': jnp.ones((4, 2))},
  ...           'encoder': {f'layers_{i}': {'kernel': jnp.ones((2, 2)),
  ...                                       'bias': jnp.zeros(2)} for i in range(2)},
  ...           'head': {'kernel': jnp.ones((2, 1))}}
  >>> tx = adamwdl(1e-3, layerwise_decay=0.5, n_layers=2,
  ...              apply_decay_param_fun=lambda name: not name.endswith('bias'))
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
    n_layers: the number of transformer layers :math:`L`, ``>= 1``.
    set_param_lr_fun: a layer rule ``(decay, name_dict, n_layers, param) ->
      ratio`` (Paddle-style rules that scale ``param.optimize_attr`` work too);
      ``None`` means :func:`optax_ldl.layerwise_lr_decay`.
    name_dict: maps each parameter's path name (keys joined by ``/``) to the
      name the rule reads; ``None`` reads the path name.
    apply_decay_param_fun: Paddle's filter: weight decay applies where
      ``apply_decay_param_fun(path_name)`` is true. A bool tree is accepted too.
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
      (a leaf under a ``layers``/``scan``/``scanned_layers``/``ScanBlock_0``
      key not followed by a number, whose axis 0 has length ``n_layers``, used
      when ``layerwise_decay != 1``), ``None``/``False`` (none),
      ``{path_prefix: axis}`` (e.g. ``{'params/decoder/layers': 1}`` for
      MaxText), or a function ``path_name -> axis | None``. Slice ``i`` along
      the axis gets the ratio layer ``i`` would get unrolled (a custom
      ``set_param_lr_fun`` sees the name with the stack key replaced by
      ``layers_i``).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  References:
    Loshchilov & Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, 2019; Clark et al., `ELECTRA
    <https://arxiv.org/abs/2003.10555>`_, 2020.
  """
  owner = "adamwdl"
  checks.check_schedule_or_number(
      owner, "learning_rate", learning_rate, "a number >= 0 or a schedule (callable)"
  )
  checks.check_number(owner, "b1", b1, low=0.0, high=1.0, high_open=True,
                      accepted="a number in [0, 1)")
  checks.check_number(owner, "b2", b2, low=0.0, high=1.0, high_open=True,
                      accepted="a number in [0, 1)")
  checks.check_number(owner, "eps", eps, low=0.0, low_open=True, accepted="a number > 0")
  checks.check_number(owner, "weight_decay", weight_decay, low=0.0, accepted="a number >= 0")
  checks.check_number(owner, "layerwise_decay", layerwise_decay, low=0.0, low_open=True,
                      high=1.0, accepted="a number in (0, 1]")
  checks.check_int(owner, "n_layers", n_layers, minimum=1, accepted="an int >= 1")
  if set_param_lr_fun is not None and not callable(set_param_lr_fun):
    raise TypeError(
        f"{owner}: set_param_lr_fun must be a function (decay, name_dict, n_layers, "
        f"param) -> ratio, or None for layerwise_lr_decay; got {set_param_lr_fun!r}"
    )
  if name_dict is not None and not isinstance(name_dict, Mapping):
    raise TypeError(f"{owner}: name_dict must be a dict of path name -> name, got {name_dict!r}")
  if grad_clip is not None and not _is_transform(grad_clip):
    raise TypeError(
        f"{owner}: grad_clip must be an optax transformation (with init and update), "
        f"e.g. optax_ldl.clip_grad_by_global_norm(1.0) or optax.clip_by_global_norm(1.0); "
        f"got {grad_clip!r}"
    )
  for arg, flag in (("lazy_mode", lazy_mode), ("multi_precision", multi_precision)):
    if not isinstance(flag, (bool, np.bool_)):
      raise TypeError(f"{owner}: {arg} must be True or False, got {flag!r}")
  stacked_lib.check_stacked_arg(owner, stacked)
  decay_mask = decay_mask_of(apply_decay_param_fun, mask)

  layer_scale = scale_by_layer_ratio(
      layerwise_decay=layerwise_decay,
      n_layers=n_layers,
      set_param_lr_fun=set_param_lr_fun,
      name_dict=name_dict,
      stacked=stacked,
  )
  clip = [] if grad_clip is None else [grad_clip]
  tx = optax.chain(
      *clip,
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      # weight_decay passed check_number: a real scalar (or an array scalar).
      optax.add_decayed_weights(cast(optax.ScalarOrSchedule, weight_decay), decay_mask),
      optax.scale_by_learning_rate(learning_rate),
      layer_scale,
  )
  if lazy_mode:
    tx = lazy_rows(tx, adam_index=len(clip))
  if multi_precision:
    tx = master_weights(tx)
  tx = float_leaves_only(tx)

  def check(params):
    _check_mask_tree(decay_mask, params)
    # Builds the labels of the float leaves: raises on any naming or layer mistake.
    layer_scale.init(jax.tree.map(lambda p: p if is_float(p) else optax.MaskedNode(), params))

  if parameters is not None:
    check(parameters)

  def init_fn(params):
    check(params)
    return tx.init(params)

  return optax.GradientTransformationExtraArgs(init_fn, tx.update)
