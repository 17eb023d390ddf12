"""Layer rules: which transformer layer a parameter belongs to, and its lr ratio.

A parameter's *name* is its path in the parameter tree, keys joined by ``/``
(``params/encoder/layers_3/attention/query/kernel``). A rule maps a name to a
learning-rate ratio. The default rule, :func:`layerwise_lr_decay`, is PaddleNLP's
``layerwise_lr_decay`` extended to the common JAX layouts.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.core  # jax.core.Tracer: jax imports it, but type checkers need it named.
import numpy as np

from optax_ldl._src import stacked as stacked_lib

# A token that names a numbered layer by itself: ``layers_3`` (Flax auto-names,
# MaxText/T5X), ``layer_3``, ``block_3``, ``blocks_3``, ``encoderblock_3``
# (big_vision ViT), ``encoder_layer_3``, ``transformer_block_3``, ``resblocks_3``.
_NUMBERED_LAYER = re.compile(
    r"^(?:layers?|blocks?|encoder_?block|encoder_?layer|transformer_?block"
    r"|resblocks?)_(\d+)$",
    re.IGNORECASE,
)
# A container token followed by a separate numeric token: ``layer/3`` (HF-Flax
# BERT/RoBERTa/ELECTRA), ``layers/3`` (Paddle names, nnx.List), ``h/3`` (GPT-2),
# ``blocks/3`` and ``resblocks/3``.
_LAYER_CONTAINER = re.compile(r"^(?:layers?|blocks?|h|resblocks?)$", re.IGNORECASE)
# Embedding tables: any token containing ``embed`` (``embedding``, ``embeddings``,
# ``word_embeddings``, ``pos_embedding``, ``patch_embed``, ``Embed_0``,
# ``token_embedder``) and GPT-2's ``wte``/``wpe``.
_EMBEDDING = re.compile(r"embed|^wte$|^wpe$", re.IGNORECASE)

RULE_TABLE = """\
| name contains                                   | kind      | ratio                          |
|-------------------------------------------------|-----------|--------------------------------|
| `encoder.layers.N` (Paddle static name)         | layer N   | decay ** (n_layers - N)        |
| `layers_N`, `layer_N`, `block(s)_N`,            | layer N   | decay ** (n_layers - N)        |
| `encoderblock_N`, `encoder_layer_N`,            |           |                                |
| `transformer_block_N`, `resblock(s)_N`          |           |                                |
| `layer/N`, `layers/N`, `h/N`, `block(s)/N`,     | layer N   | decay ** (n_layers - N)        |
| `resblock(s)/N`                                 |           |                                |
| `embedding` (Paddle), or a path key containing  | embedding | decay ** (n_layers + 1)        |
| `embed`, or `wte` / `wpe`                       |           |                                |
| anything else (pooler, head, final norm)        | other     | 1.0                            |"""


class LayerMatch(NamedTuple):
  """Where the default rule places a name.

  Attributes:
    kind: ``"layer"``, ``"embedding"``, ``"other"``, or ``"stacked"`` (a
      stacked leaf holding every layer, see :mod:`optax_ldl._src.stacked`).
    layer: the layer index for ``kind == "layer"``, else ``None``.
  """

  kind: str
  layer: int | None = None


@dataclasses.dataclass
class Param:
  """What a layer rule is given about one parameter (Paddle's ``Parameter``).

  Rules read ``param.name`` and return the ratio; rules written for older
  PaddleNLP that multiply ``param.optimize_attr["learning_rate"]`` and return
  ``None`` work too.

  Attributes:
    name: the parameter's path name, keys joined by ``/``.
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


def _key_str(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_name(path: tuple[Any, ...]) -> str:
  """The name of a parameter: its tree path, keys joined by ``/``.

  >>> import jax
  >>> path = (jax.tree_util.DictKey('encoder'), jax.tree_util.SequenceKey(3))
  >>> path_name(path)
  'encoder/3'
  """
  return "/".join(_key_str(k) for k in path)


def classify(static_name: str) -> LayerMatch:
  """Places a parameter name in a layer, the embeddings, or neither.

  Names without ``/`` that contain a ``.`` are Paddle static names and get
  exactly Paddle's rule (``encoder.layers.N``, then ``embedding``). Other names
  are JAX tree paths and get the rule table in ``RULE_TABLE``.

  >>> classify('encoder.layers.3.linear1.weight')
  LayerMatch(kind='layer', layer=3)
  >>> classify('params/encoder/layers_3/mlp/kernel')
  LayerMatch(kind='layer', layer=3)
  >>> classify('params/transformer/h/11/attn/c_attn/kernel')
  LayerMatch(kind='layer', layer=11)
  >>> classify('params/transformer/wte/embedding')
  LayerMatch(kind='embedding', layer=None)
  >>> classify('params/pooler/dense/kernel')
  LayerMatch(kind='other', layer=None)

  Args:
    static_name: the name the rule sees (after ``name_dict``).

  Returns:
    A :class:`LayerMatch`.

  Raises:
    ValueError: a Paddle name with ``encoder.layers`` not followed by
      ``.N.``, as Paddle's own rule fails on it.
  """
  if "encoder.layers" in static_name:
    # Paddle's rule, verbatim: the token after "encoder.layers." is the index.
    idx = static_name.find("encoder.layers.")
    parts = static_name[idx:].split(".") if idx >= 0 else []
    if len(parts) < 3 or not parts[2].isdigit():
      raise ValueError(
          f"parameter name {static_name!r} contains 'encoder.layers' but not "
          "'encoder.layers.<N>.'; PaddleNLP's layerwise_lr_decay cannot read "
          "a layer index from it. Map it to a name of the form "
          "'encoder.layers.<N>.<...>' with name_dict, or pass set_param_lr_fun."
      )
    return LayerMatch("layer", int(parts[2]))
  if "." in static_name and "/" not in static_name:
    return LayerMatch("embedding" if "embedding" in static_name else "other")
  tokens = static_name.split("/")
  for i, token in enumerate(tokens):
    numbered = _NUMBERED_LAYER.match(token)
    if numbered:
      return LayerMatch("layer", int(numbered.group(1)))
    if (
        _LAYER_CONTAINER.match(token)
        and i + 1 < len(tokens)
        and tokens[i + 1].isdigit()
    ):
      return LayerMatch("layer", int(tokens[i + 1]))
  if any(_EMBEDDING.search(token) for token in tokens):
    return LayerMatch("embedding")
  return LayerMatch("other")


def param_name(param: Any) -> str:
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


def static_name(name_dict: Mapping[str, str] | None, name: str) -> str:
  """``name_dict[name]``, or a ``ValueError`` that says what is missing."""
  if name_dict is None:
    return name
  try:
    return name_dict[name]
  except KeyError:
    raise ValueError(
        f"name_dict has no entry for parameter {name!r}. name_dict maps every "
        "parameter's path name (keys joined by '/') to the name the layer rule "
        f"sees; it has {len(name_dict)} entries, e.g. "
        f"{sorted(name_dict)[:3]!r}."
    ) from None


def _exponent(match: LayerMatch, n_layers: Any) -> Any:
  if match.kind == "layer":
    return n_layers - match.layer
  if match.kind == "embedding":
    return n_layers + 1
  return 0


def check_layer_index(
    name: str, match: LayerMatch, decay_rate: Any, n_layers: Any
) -> None:
  """Raises if ``match`` is a layer index above ``n_layers`` (Paddle's ratio would exceed 1).

  Index ``n_layers`` itself gets ratio 1, as in Paddle.
  """
  if match.kind != "layer" or not is_concrete(n_layers):
    return
  assert match.layer is not None  # kind "layer" always carries its index.
  if is_concrete(decay_rate) and float(decay_rate) == 1.0:
    return  # every ratio is 1: the count cannot matter.
  if match.layer > int(n_layers):
    raise ValueError(
        f"parameter {name!r} is in layer {match.layer}, but n_layers="
        f"{int(n_layers)} is smaller, which would give it a ratio above 1 "
        f"(layers are numbered from 0); pass n_layers >= {match.layer + 1}."
    )


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
  Paddle's result; JAX tree paths get the rule table in the README.

  Like Paddle's function (PaddleNLP 2.8) it returns the ratio; it does not
  touch ``param.optimize_attr`` (rules that do, and return ``None``, work too).

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
    The ratio (a float, or a JAX scalar if ``decay_rate`` or ``n_layers`` is one).

  References:
    Yang et al., `XLNet <https://arxiv.org/abs/1906.08237>`_, 2019;
    Clark et al., `ELECTRA <https://arxiv.org/abs/2003.10555>`_, 2020.
  """
  name = param_name(param)
  match = classify(static_name(name_dict, name))
  check_layer_index(name, match, decay_rate, n_layers)
  exponent = _exponent(match, n_layers)
  return 1.0 if match.kind == "other" else decay_rate**exponent


def is_static_one(x: Any) -> bool:
  """Whether ``x`` is the Python number 1 (not an array that may change later)."""
  return isinstance(x, (int, float)) and not isinstance(x, bool) and x == 1.0


def is_concrete(x: Any) -> bool:
  """Whether ``x`` has a value now (not a tracer inside ``jit``)."""
  return not isinstance(x, jax.core.Tracer)



class LayerGroups(NamedTuple):
  """The partition of a parameter tree into groups of equal lr ratio.

  Attributes:
    labels: a tree like the parameters whose leaves are group labels (str).
    ratios: group label -> lr ratio (a float, or a JAX scalar when the decay
      rate or layer count is traced, as under ``optax.inject_hyperparams``); for
      a group of stacked leaves a ``StackedRatio(ratios, axis)``: one ratio per
      slice along ``axis``.
    matches: path name -> :class:`LayerMatch` (default rule only, else empty).
  """

  labels: Any
  ratios: dict[str, Any]
  matches: dict[str, LayerMatch]


def _leaves_with_names(tree: Any) -> list[tuple[str, tuple[Any, ...], Any]]:
  return [(path_name(p), p, x) for p, x in jax.tree_util.tree_leaves_with_path(tree)]


def _check_name_dict(name_dict: Mapping[str, str] | None, names: list[str]) -> None:
  if name_dict is not None:
    for name in names:
      static_name(name_dict, name)


def _stack_specs(tree: Any, stacked: Any, decay: Any, n_layers: Any) -> dict[str, Any]:
  """Path name -> ``StackSpec`` for the stacked leaves of ``tree``."""
  explicit_only = is_static_one(decay)
  specs = {}
  for name, _, x in _leaves_with_names(tree):
    spec = stacked_lib.leaf_spec(
        stacked, name, tuple(np.shape(x)), n_layers, explicit_only
    )
    if spec is not None:
      specs[name] = spec
  return specs


def _default_groups(
    tree: Any,
    decay: Any,
    n_layers: Any,
    name_dict: Mapping[str, str] | None,
    specs: Mapping[str, Any] | None = None,
) -> LayerGroups:
  leaves = _leaves_with_names(tree)
  _check_name_dict(name_dict, [name for name, _, _ in leaves])
  # Only a Python 1.0 may collapse the groups: an array decay (inject_hyperparams)
  # can change later, and the partition's labels must stay the same.
  decay_is_one = is_static_one(decay)
  matches, labels, ratios = {}, {}, {}
  specs = specs or {}
  for name, _, _ in leaves:
    spec = specs.get(name)
    if spec is not None:  # every layer in one leaf: a ratio per slice.
      matches[name] = LayerMatch("stacked")
      labels[name] = label = f"stacked_axis{spec.axis}_n{spec.length}"
      if label not in ratios:
        ratios[label] = stacked_lib.StackedRatio(
            stacked_lib.ratio_vector([decay ** (n_layers - i) for i in range(spec.length)]),
            spec.axis,
        )
      continue
    match = classify(static_name(name_dict, name))
    check_layer_index(name, match, decay, n_layers)
    matches[name] = match
    if decay_is_one:
      label = "all"
    elif match.kind == "layer":
      label = f"layer_{match.layer}"
    else:
      label = match.kind
    labels[name] = label
    if label not in ratios:
      ratios[label] = 1.0 if label in ("all", "other") else decay ** _exponent(match, n_layers)
  if not (is_concrete(decay) and float(decay) == 1.0) and leaves and not any(
      m.kind in ("layer", "stacked") for m in matches.values()
  ):
    examples = ", ".join(repr(name) for name, _, _ in leaves[:4])
    raise ValueError(
        f"layerwise_decay={decay!r} but no parameter matched a layer rule, so "
        f"no layer would be decayed. Parameter names look like {examples}. The "
        "default rule recognises 'encoder.layers.N' (Paddle names) and path keys "
        "'layers_N', 'layer_N', 'block_N', 'encoderblock_N', 'layer/N', "
        "'layers/N', 'h/N' (see optax_ldl.RULE_TABLE), and scanned layers "
        "stacked on axis 0 (length n_layers) under a 'layers'/'scan' key; for "
        "another layout pass stacked={'path/prefix': axis}. Map your names with "
        "name_dict, pass set_param_lr_fun, or use layerwise_decay=1.0."
    )
  return LayerGroups(_relabel(tree, labels), ratios, matches)


def _is_python_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _custom_groups(
    tree: Any,
    rule: Callable[..., Any],
    decay: Any,
    n_layers: Any,
    name_dict: Mapping[str, str] | None,
    specs: Mapping[str, Any] | None = None,
) -> LayerGroups:
  leaves = _leaves_with_names(tree)
  _check_name_dict(name_dict, [name for name, _, _ in leaves])
  labels, ratios = {}, {}
  static_args = _is_python_number(decay) and _is_python_number(n_layers)

  def call_rule(param):
    ratio = rule(decay, name_dict, n_layers, param)
    if ratio is None:  # a Paddle-style rule: it scaled optimize_attr instead.
      ratio = param.optimize_attr["learning_rate"]
    if is_concrete(ratio):
      value = np.asarray(ratio)
      if value.shape != () or not np.isfinite(value) or value < 0:
        raise ValueError(
            f"set_param_lr_fun returned {ratio!r} for parameter {param.name!r}; a "
            "ratio must be a finite scalar >= 0."
        )
    return ratio

  specs = specs or {}
  for name, path, x in leaves:
    shape, dtype = tuple(np.shape(x)), getattr(x, "dtype", None)
    spec = specs.get(name)
    if spec is not None:  # stacked: the rule sees each slice's unrolled name.
      vector = stacked_lib.ratio_vector([
          call_rule(Param(stacked_lib.unrolled_name(name, spec, i), path,
                          stacked_lib.slice_shape(shape, spec.axis), dtype))
          for i in range(spec.length)
      ])
      if static_args and isinstance(vector, np.ndarray):
        label = f"stacked_axis{spec.axis}_{tuple(vector.tolist())!r}"
      else:
        label = f"param_{name}"
      labels[name] = label
      ratios[label] = stacked_lib.StackedRatio(vector, spec.axis)
      continue
    param = Param(name, path, shape, dtype)
    ratio = call_rule(param)
    if static_args:
      label = f"ratio_{float(np.asarray(ratio))!r}"
    else:  # array hyperparameters may be traced later: one group per parameter,
      label = f"param_{name}"  # so that init and a jitted update agree.
    labels[name] = label
    ratios[label] = ratio
  if (
      is_concrete(decay)
      and float(decay) != 1.0
      and leaves
      and all(_is_one(r) for r in ratios.values())
  ):
    raise ValueError(
        f"layerwise_decay={decay!r} but set_param_lr_fun gave ratio 1.0 to every "
        f"parameter ({len(leaves)} of them), so no layer would be decayed. Check "
        "the names it matches (the path names, e.g. "
        f"{leaves[0][0]!r}, or their name_dict entries)."
    )
  return LayerGroups(_relabel(tree, labels), ratios, {})


def _is_one(ratio: Any) -> bool:
  if isinstance(ratio, stacked_lib.StackedRatio):
    return isinstance(ratio.ratios, np.ndarray) and bool(np.all(ratio.ratios == 1.0))
  return is_concrete(ratio) and float(ratio) == 1.0


def _relabel(tree: Any, labels: dict[str, str]) -> Any:
  return jax.tree_util.tree_map_with_path(lambda p, _: labels[path_name(p)], tree)


def layer_groups(
    tree: Any,
    *,
    layerwise_decay: Any,
    n_layers: Any,
    set_param_lr_fun: Callable[..., Any] | None,
    name_dict: Mapping[str, str] | None,
    stacked: Any = "auto",
) -> LayerGroups:
  """Groups the leaves of ``tree`` by lr ratio, checking the configuration.

  Labels depend on the tree's paths (and on the decay rate only through the
  rule), never on leaf values, as ``optax.partition`` requires.

  Args:
    tree: parameters, updates, or ``jax.ShapeDtypeStruct`` leaves.
    layerwise_decay: the decay rate.
    n_layers: the number of layers.
    set_param_lr_fun: a rule ``(decay, name_dict, n_layers, param) -> ratio``,
      or ``None`` (and :func:`layerwise_lr_decay`) for the default rule.
    name_dict: path name -> the name the rule reads, or ``None``.
    stacked: which leaves stack every layer along one axis (scanned layers):
      ``"auto"``, ``None``/``False``, ``{path_prefix: axis}`` or a function
      ``path_name -> axis | None`` (see :mod:`optax_ldl._src.stacked`).

  Returns:
    A :class:`LayerGroups`.
  """
  stacked_lib.check_stacked_arg("layer_groups", stacked)
  specs = _stack_specs(tree, stacked, layerwise_decay, n_layers)
  if set_param_lr_fun is None or set_param_lr_fun is layerwise_lr_decay:
    return _default_groups(tree, layerwise_decay, n_layers, name_dict, specs)
  return _custom_groups(
      tree, set_param_lr_fun, layerwise_decay, n_layers, name_dict, specs
  )
