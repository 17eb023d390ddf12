"""``adamwdl``: AdamW with layer-wise learning-rate decay (PaddleNLP's ``AdamWDL``)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any, cast

import jax
import numpy as np
import optax

from optax_ldl._src import checks, layer_scale

DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_WEIGHT_DECAY = 0.01
# adamwdl's layer arguments -> the LayerDecay fields they set.
LAYER_ARGS = {
    "layerwise_decay": "layerwise_decay", "n_layers": "n_layers",
    "set_param_lr_fun": "rule", "name_dict": "name_dict", "stacked": "stacked",
    "layers": "layers",
}


def layer_kwargs(decay: layer_scale.LayerDecay) -> dict[str, Any]:
  """adamwdl's layer arguments that rebuild ``decay``."""
  return {arg: getattr(decay, field) for arg, field in LAYER_ARGS.items()}


def _is_transform(x: Any) -> bool:
  return callable(getattr(x, "init", None)) and callable(getattr(x, "update", None))


_NO_DECAY_LEAVES = frozenset({"bias", "b", "scale"})


def weight_decay_filter(name: str, *, embeddings: bool = True) -> bool:
  """The recommended ``apply_decay_param_fun``: no weight decay on biases and norms.

  Reads a path name of any common layout: linen and Hugging Face Flax
  (``LayerNorm_0/scale``, ``LayerNorm/bias``), NNX (paths ending in ``/value``),
  Paddle and PyTorch-style dotted names (``norm1.weight``), case-insensitively.
  Embedding tables decay when ``embeddings`` is true, as in BERT and
  PaddleNLP's recipes; pass ``embeddings=False`` (e.g. with
  ``functools.partial``) to exempt them.

  >>> [weight_decay_filter(n) for n in (
  ...     'layers_0/mlp/kernel', 'layers_0/mlp/bias', 'layers_0/LayerNorm_0/scale',
  ...     'layers/0/norm/scale/value', 'encoder.layers.0.norm1.weight',
  ...     'embeddings/word_embeddings/embedding')]
  [True, False, False, False, False, True]
  >>> weight_decay_filter('embeddings/word_embeddings/embedding', embeddings=False)
  False

  Args:
    name: the parameter's path name (keys joined by ``/``), or a dotted name.
    embeddings: whether embedding tables decay.

  Returns:
    ``True`` where weight decay applies.
  """
  if not isinstance(name, str):
    raise TypeError(f"weight_decay_filter: name must be a parameter's path name (str), got "
                    f"{name!r}")
  keys = [k for k in re.split(r"[/.]", name.lower()) if k]
  if keys and keys[-1] == "value":  # NNX: the variable's value under its name.
    keys = keys[:-1]
  if not keys or keys[-1] in _NO_DECAY_LEAVES:
    return False
  if any("norm" in k or k.startswith("ln") for k in keys):
    return False
  if any("embed" in k for k in keys) or keys[-1] in ("wte", "wpe"):
    return embeddings
  return True


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

  def decides(path, _):
    name = layer_scale.path_name(path)
    decision = apply_decay_param_fun(name)
    if not isinstance(decision, (bool, np.bool_)):
      raise TypeError(
          f"adamwdl: apply_decay_param_fun({name!r}) returned {decision!r}; it must return "
          "True (decay this parameter) or False. A filter that forgot its return gives None."
      )
    return bool(decision)

  return lambda tree: jax.tree_util.tree_map_with_path(decides, tree)


def check_mask(mask: Any, params: Any) -> None:
  """Raises unless ``mask`` (a tree, or a function's result) fits ``params`` with bools."""
  if mask is None:
    return
  source = "the weight-decay mask"
  if callable(mask):
    mask = mask(params)
    source = "the weight-decay mask function's result"
  try:
    jax.tree.map(lambda m, _: None, mask, params)
  except (ValueError, TypeError) as e:
    raise ValueError(
        f"adamwdl: {source} does not match the params: it must have the params' "
        "structure (or a prefix of it) with bool leaves.\n"
        f"mask:   {jax.tree.structure(mask)}\nparams: {jax.tree.structure(params)}"
    ) from e
  bad = [x for x in jax.tree.leaves(mask) if not isinstance(x, (bool, np.bool_))]
  if bad:
    raise ValueError(f"adamwdl: {source}'s leaves must be bools, got {bad[0]!r}")


def adamwdl(
    learning_rate: optax.ScalarOrSchedule = DEFAULT_LEARNING_RATE,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: jax.typing.ArrayLike = DEFAULT_WEIGHT_DECAY,
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
  return build(
      learning_rate, b1, b2, eps, weight_decay, layerwise_decay=layerwise_decay,
      n_layers=n_layers, set_param_lr_fun=set_param_lr_fun, name_dict=name_dict,
      apply_decay_param_fun=apply_decay_param_fun, mask=mask, grad_clip=grad_clip,
      lazy_mode=lazy_mode, multi_precision=multi_precision, parameters=parameters,
      stacked=stacked, layers=layers, debug_checks=debug_checks,
  )


def build(
    learning_rate: Any,
    b1: Any,
    b2: Any,
    eps: Any,
    weight_decay: Any,
    *,
    owner: str = "adamwdl",
    names: Mapping[str, str] | None = None,
    debug_checks: bool = False,
    **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
  """:func:`adamwdl`, its errors naming ``owner`` and the arguments as ``names`` renames them.

  ``names`` maps adamwdl's argument names to the caller's (``AdamWDL``:
  ``{"b1": "beta1", "b2": "beta2", "eps": "epsilon"}``); ``kwargs`` are
  adamwdl's keyword-only arguments.
  """
  unknown = sorted(set(kwargs) - set(_KEYWORDS))
  if unknown:
    raise TypeError(f"{owner}: unknown argument(s) {unknown}; it takes {list(_KEYWORDS)}")
  renamed: dict[str, str] = dict(names or {})

  def name(arg: str) -> str:
    return renamed.get(arg, arg)

  layerwise_decay = kwargs.get("layerwise_decay", 1.0)
  n_layers = kwargs.get("n_layers")
  set_param_lr_fun = kwargs.get("set_param_lr_fun")
  name_dict = kwargs.get("name_dict")
  apply_decay_param_fun = kwargs.get("apply_decay_param_fun")
  mask = kwargs.get("mask")
  grad_clip = kwargs.get("grad_clip")
  lazy_mode = kwargs.get("lazy_mode", False)
  multi_precision = kwargs.get("multi_precision", False)
  parameters = kwargs.get("parameters")
  stacked = kwargs.get("stacked", "auto")
  layers = kwargs.get("layers")
  if not isinstance(debug_checks, (bool, np.bool_)):
    raise TypeError(f"{owner}: debug_checks must be True or False, got {debug_checks!r}")
  checks.check_schedule_or_number(
      owner, name("learning_rate"), learning_rate, "a number >= 0 or a schedule (callable)"
  )
  for arg, value in (("b1", b1), ("b2", b2), ("eps", eps), ("weight_decay", weight_decay)):
    checks.check_number(owner, name(arg), value, **RANGES[arg])
  if grad_clip is not None and not _is_transform(grad_clip):
    raise TypeError(
        f"{owner}: grad_clip must be an optax transformation (with init and update), "
        f"e.g. optax_ldl.clip_grad_by_global_norm(1.0) or optax.clip_by_global_norm(1.0); "
        f"got {grad_clip!r}"
    )
  config = layer_scale.LayerDecay(
      layerwise_decay=layerwise_decay, n_layers=n_layers, rule=set_param_lr_fun,
      name_dict=name_dict, stacked=stacked, layers=layers,
  )
  decay_mask = decay_mask_of(apply_decay_param_fun, mask)
  tx = optax.chain(
      *([] if grad_clip is None else [grad_clip]),
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      # weight_decay passed check_number: a real scalar (or an array scalar).
      optax.add_decayed_weights(cast(optax.ScalarOrSchedule, weight_decay), decay_mask),
      optax.scale_by_learning_rate(learning_rate),
  )
  tx = layer_scale.layerwise(
      tx, config, lazy_mode=lazy_mode, multi_precision=multi_precision,
      parameters=parameters, extra_check=lambda params: check_mask(decay_mask, params),
      owner=owner,
  )
  if not debug_checks:
    return tx
  hyperparams = {name(arg): (value, RANGES[arg]) for arg, value in (
      ("learning_rate", learning_rate), ("b1", b1), ("b2", b2), ("eps", eps),
      ("weight_decay", weight_decay), ("layerwise_decay", layerwise_decay))}
  return _with_runtime_checks(tx, owner, hyperparams, config)


_KEYWORDS = ("layerwise_decay", "n_layers", "set_param_lr_fun", "name_dict",
             "apply_decay_param_fun", "mask", "grad_clip", "lazy_mode", "multi_precision",
             "parameters", "stacked", "layers")

# The accepted range of each numeric hyperparameter (checks.check_number's keywords).
RANGES: dict[str, dict[str, Any]] = {
    "learning_rate": dict(low=0.0, accepted="a number >= 0 or a schedule (callable)"),
    "b1": dict(low=0.0, high=1.0, high_open=True, accepted="a number in [0, 1)"),
    "b2": dict(low=0.0, high=1.0, high_open=True, accepted="a number in [0, 1)"),
    "eps": dict(low=0.0, low_open=True, accepted="a number > 0"),
    "weight_decay": dict(low=0.0, accepted="a number >= 0"),
    "layerwise_decay": dict(low=0.0, low_open=True, high=1.0, accepted="a number in (0, 1]"),
}


def _tree_depth(config: layer_scale.LayerDecay, tree: Any) -> tuple[int, bool] | None:
  """(the deepest stack's depth, whether any leaf is in a layer or embedding); None: unknown."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      layer_map = config.layer_map(layer_scale.float_params(tree))
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
    hyperparams: dict[str, tuple[Any, dict[str, Any]]],
    config: layer_scale.LayerDecay,
) -> optax.GradientTransformationExtraArgs:
  """``tx`` whose update first checks its array hyperparameters (``checkify.check``)."""

  def update_fn(updates, state, params=None, **extra_args):
    for arg, (value, spec) in hyperparams.items():
      if isinstance(value, jax.Array):
        checks.check_number_at_run_time(owner, arg, value, **spec)
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
