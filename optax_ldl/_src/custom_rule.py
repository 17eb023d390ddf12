"""The custom-rule protocol: ``Param``, ``call_rule`` and PaddleNLP's ``layerwise_lr_decay``.

A custom rule (PaddleNLP's ``set_param_lr_fun``) is a function ``(decay, name_dict,
n_layers, param) -> ratio`` called once per parameter (per slice of a stacked leaf);
:func:`custom_plan_entries` turns its answers into the layer plan's groups.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.core  # jax.core.Tracer: jax imports it, but type checkers need it named.
import numpy as np

from optax_ldl._src import path_rule as rules
from optax_ldl._src import stacked_ratio
from optax_ldl._src.path_rule import stacks
from optax_ldl._src.tree_names import path_name


@dataclasses.dataclass
class Param:
  """What a layer rule is given about one parameter (Paddle's ``Parameter``).

  Rules read ``param.name`` and return the ratio; rules written for older
  PaddleNLP that multiply ``param.optimize_attr["learning_rate"]`` and return
  ``None`` work too.

  Attributes:
    name: the parameter's path name, keys joined by ``/`` (or its
      ``name_dict`` entry).
    path: the JAX key path.
    shape: the parameter's shape.
    dtype: the parameter's dtype.
    optimize_attr: ``{"learning_rate": 1.0}``, for Paddle-style rules to scale.
  """

  name: str
  path: tuple[Any, ...] = ()
  shape: tuple[int, ...] = ()
  dtype: Any = None
  optimize_attr: dict[str, Any] = dataclasses.field(
      default_factory=lambda: {"learning_rate": 1.0}
  )


def _param_name(param: Any) -> str:
  """The name of ``param``: a string, a JAX key path, or an object's ``.name``."""
  if isinstance(param, str):
    return param
  if isinstance(param, tuple):
    return path_name(param)
  name = getattr(param, "name", None)
  if not isinstance(name, str):
    raise TypeError(
        "param must be a name (str), a JAX key path (tuple) or an object with "
        f"a str .name (like optax_ldl.Param), got {param!r}"
    )
  return name


def layerwise_lr_decay(
    decay_rate: Any,
    name_dict: Mapping[str, str] | None,
    n_layers: Any,
    param: Any,
) -> Any:
  r"""PaddleNLP's layer-wise lr decay rule: the lr ratio of one parameter.

  With ``n_layers`` transformer layers numbered ``0 .. n_layers-1``:

  .. math::

    r = \begin{cases}
      \alpha^{L - i} & \text{parameter in layer } i \\
      \alpha^{L + 1} & \text{embedding} \\
      1 & \text{otherwise (pooler, head, final norm)}
    \end{cases}

  so the top layer gets :math:`\alpha` (not 1) and the embeddings the smallest
  ratio. Paddle static names (``encoder.layers.N``, ``embedding``) get exactly
  Paddle's result; JAX path names get the path rule (:func:`optax_ldl.classify`).
  Passed as ``set_param_lr_fun`` (``AdamWDL``'s default), the whole tree is
  placed by the path rule, which also sees nesting and stacks.

  Like Paddle's function (PaddleNLP 2.8) it returns the ratio; it does not
  touch ``param.optimize_attr``.

  >>> round(layerwise_lr_decay(0.9, None, 12, 'encoder.layers.11.linear1.weight'), 6)
  0.9
  >>> round(layerwise_lr_decay(0.9, None, 12, 'params/embeddings/word_embeddings/embedding'), 6)
  0.254187
  >>> layerwise_lr_decay(0.9, None, 12, 'params/classifier/kernel')
  1.0

  Args:
    decay_rate: the layer-wise decay :math:`\alpha`, in ``(0, 1]``.
    name_dict: maps the parameter's name to the name the rule reads (Paddle's
      dynamic-to-static names), or ``None`` to read the name itself.
    n_layers: the number of transformer layers :math:`L`.
    param: a name, a JAX key path, or an object with ``.name`` (e.g.
      :class:`optax_ldl.Param`).

  Returns:
    The ratio (a float, or a JAX scalar if ``decay_rate`` is one).

  References:
    Yang et al., `XLNet <https://arxiv.org/abs/1906.08237>`_, 2019;
    Clark et al., `ELECTRA <https://arxiv.org/abs/2003.10555>`_, 2020.
  """
  name = _param_name(param)
  match = rules.classify(rules.static_name("layerwise_lr_decay", name_dict, name))
  if match.kind == "layer":
    if match.layer is None:
      raise ValueError(
          f"parameter {name!r} is in a nested numbered block {match.indices}; its layer "
          "depends on the whole tree. Use the default rule (set_param_lr_fun=None), which "
          "numbers nested blocks straight through, or layers=optax_ldl.trace_layers(...)."
      )
    if not isinstance(n_layers, jax.core.Tracer) and match.layer > int(n_layers):
      raise ValueError(
          f"parameter {name!r} is in layer {match.layer}, but n_layers={int(n_layers)} is "
          "smaller, which would give it a ratio above 1 (layers are numbered from 0); pass "
          f"n_layers >= {match.layer + 1}."
      )
    return decay_rate ** (n_layers - match.layer)
  if match.kind == "embedding":
    return decay_rate ** (n_layers + 1)
  return 1.0


def call_rule(rule: Callable[..., Any], decay: Any, name_dict: Any, n_layers: Any,
              param: Param) -> Any:
  """``rule(decay, name_dict, n_layers, param)``, its result checked.

  A rule that returns ``None`` is a Paddle-style rule that scaled
  ``param.optimize_attr["learning_rate"]``: that value is the ratio.
  """
  try:
    inspect.signature(rule).bind(decay, name_dict, n_layers, param)
  except TypeError:
    raise TypeError(
        f"set_param_lr_fun must take (decay, name_dict, n_layers, param), as PaddleNLP's "
        f"layerwise_lr_decay does; {rule!r} cannot be called that way. Pass the unbound "
        "function (not a functools.partial with arguments already bound: AdamWDL binds "
        "layerwise_decay, name_dict and n_layers itself)."
    ) from None
  except ValueError:  # no signature (a builtin): let the call decide.
    pass
  ratio = rule(decay, name_dict, n_layers, param)
  if ratio is None:
    ratio = param.optimize_attr["learning_rate"]
  if isinstance(ratio, (str, bytes, bool)) or not (
      isinstance(ratio, (int, float, np.number, np.ndarray, jax.Array))
  ):
    raise TypeError(
        f"set_param_lr_fun returned {ratio!r} for parameter {param.name!r}; a ratio must "
        "be a finite real number >= 0 (or None after scaling param.optimize_attr)."
    )
  if not isinstance(ratio, jax.core.Tracer):
    value = np.asarray(ratio)
    if (value.shape != () or np.iscomplexobj(value) or not np.isfinite(value)
        or value < 0):
      raise ValueError(
          f"set_param_lr_fun returned {ratio!r} for parameter {param.name!r}; a ratio "
          "must be a finite real scalar >= 0."
      )
  return ratio



def _is_python_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _ask(owner: str, rule: Callable[..., Any], decay: Any, name_dict: Any, n_layers: Any,
         param: Param) -> Any:
  """:func:`call_rule`; a rule that fails on ``n_layers=None`` is told to pass it."""
  try:
    return call_rule(rule, decay, name_dict, n_layers, param)
  except TypeError as error:
    if n_layers is None and "NoneType" in str(error):
      raise ValueError(
          f"{owner}: set_param_lr_fun failed on {param.name!r} with n_layers=None ({error}). "
          "A custom rule is given n_layers as it is, and the path rule's reading of the "
          "depth is not used with it: pass n_layers=<the number of layers> (PaddleNLP's "
          "AdamWDL defaults to 12)."
      ) from error
    raise


def custom_groups(owner: str, tree: Any, rule: Callable[..., Any], decay: Any, n_layers: Any,
                  name_dict: Mapping[str, str] | None, stacked: Any
                  ) -> tuple[dict[str, str], dict[str, Any], dict[str, int | None]]:
  """The groups of ``tree``'s leaves under a custom rule: ``(labels, ratios, axes)``.

  ``labels``: path name -> group; ``ratios``: group -> ratio (a number, a JAX
  scalar, or a ``StackedRatio``); ``axes``: path name -> the layer axis of a
  stacked leaf (the rule is then asked once per slice, with the slice's unrolled
  name), else ``None``. Python-number hyperparameters group leaves of equal
  ratio together; array ones (``optax.inject_hyperparams``) give a group per
  leaf, so that init and a traced update group alike.
  """
  static_args = _is_python_number(decay) and (n_layers is None or _is_python_number(n_layers))
  explicit_only = _is_python_number(decay) and decay == 1.0
  labels: dict[str, str] = {}
  ratios: dict[str, Any] = {}
  axes: dict[str, int | None] = {}
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    name = path_name(path)
    rule_name = rules.static_name("set_param_lr_fun", name_dict, name)
    shape, dtype = tuple(np.shape(x)), getattr(x, "dtype", None)
    spec = stacks.leaf_spec(stacked, name, shape, n_layers, explicit_only)
    axes[name] = None if spec is None else spec.axis
    if spec is not None:  # stacked: the rule sees each slice's unrolled name.
      vector = stacked_ratio.ratio_vector([
          _ask(owner, rule, decay, name_dict, n_layers, Param(
              stacks.unrolled_name(rule_name, spec, i), path,
              stacks.slice_shape(shape, spec.axis), dtype))
          for i in range(spec.length)
      ])
      if static_args and isinstance(vector, np.ndarray):
        label = f"stacked_axis{spec.axis}_{tuple(vector.tolist())!r}"
      else:
        label = f"param_{name}"
      labels[name] = label
      ratios[label] = stacked_ratio.StackedRatio(vector, spec.axis)
      continue
    ratio = _ask(owner, rule, decay, name_dict, n_layers, Param(name, path, shape, dtype))
    label = f"ratio_{float(np.asarray(ratio))!r}" if static_args else f"param_{name}"
    labels[name] = label
    ratios[label] = ratio
  return labels, ratios, axes
