r"""Layer-wise learning-rate decay for any Optax optimizer.

:class:`LayerDecay` is the whole configuration (the decay rate, where each
parameter sits, how scanned layers are stacked); :func:`scale_by_layer_ratio`
multiplies each update by its parameter's ratio, and :func:`layerwise` puts
that after any optimizer:

.. math::

  u_p \leftarrow r_p\, u_p, \qquad r_p = \alpha^{L_s - i} \text{ (layer } i
  \text{ of stack } s\text{)}, \ \alpha^{L_s + 1} \text{ (its embeddings)}, \ 1
  \text{ (heads)}.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_ldl._src import checks, rules, wrappers
from optax_ldl._src import stacked as stacked_lib
from optax_ldl._src.layer_map import LayerMap, Placement


def path_name(path: tuple[Any, ...]) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/")


class LayerGroups(NamedTuple):
  """The partition of a parameter tree into groups of equal lr ratio.

  Attributes:
    labels: a tree like the parameters whose leaves are group labels (str).
    ratios: group label -> lr ratio: a float, a JAX scalar when the decay is
      traced (``optax.inject_hyperparams``), or a :class:`StackedRatio` (one
      ratio per slice) for stacked leaves.
    placements: path name -> :class:`optax_ldl.Placement` (``None`` under a
      custom rule).
  """

  labels: Any
  ratios: dict[str, Any]
  placements: dict[str, Placement | None]


def _same(a: Any, b: Any) -> bool:
  if isinstance(a, (jax.Array, np.ndarray)) or isinstance(b, (jax.Array, np.ndarray)):
    return a is b
  return type(a) is type(b) and a == b


def _hashable(x: Any) -> Any:
  if isinstance(x, (jax.Array, np.ndarray)):
    return ("array", id(x))
  if isinstance(x, Mapping):
    return tuple(sorted((k, _hashable(v)) for k, v in x.items()))
  try:
    hash(x)
  except TypeError:
    return ("object", id(x))
  return x


@dataclasses.dataclass(frozen=True, eq=False)
class LayerDecay:
  """Layer-wise lr decay: the decay rate and where every parameter sits.

  One frozen, hashable object that :func:`scale_by_layer_ratio`,
  :func:`layerwise`, :func:`optax_ldl.adamwdl` and :func:`optax_ldl.describe`
  all read, so a configuration is written (and checked) once.

  >>> import jax.numpy as jnp
  >>> decay = LayerDecay(layerwise_decay=0.5)
  >>> params = {'embed': jnp.ones(2), 'layers_0': jnp.ones(2),
  ...           'layers_1': jnp.ones(2), 'head': jnp.ones(2)}
  >>> groups = decay.groups(params)
  >>> {p: groups.ratios[label] for p, label in sorted(groups.labels.items())}
  {'embed': 0.125, 'head': 1.0, 'layers_0': 0.25, 'layers_1': 0.5}

  Attributes:
    layerwise_decay: the decay rate :math:`\\alpha`, in ``(0, 1]`` (1: no decay).
    n_layers: the number of layers: ``None`` (read from the tree), an int (one
      stack), or ``{stack: depth}``; ignored with ``layers``.
    rule: a custom rule ``(decay, name_dict, n_layers, param) -> ratio``
      (PaddleNLP's ``set_param_lr_fun``), or ``None`` for the path rule.
    name_dict: path name -> the name the rule reads (Paddle's static names).
    stacked: scanned layers stacked in one array: ``"auto"``, ``None``/``False``,
      ``{path_prefix: axis}`` or ``path_name -> axis | None``.
    layers: a :class:`optax_ldl.LayerMap` (from :func:`optax_ldl.trace_layers`)
      placing every parameter; replaces the path rule.
  """

  layerwise_decay: Any = 1.0
  n_layers: Any = None
  rule: Callable[..., Any] | None = None
  name_dict: Mapping[str, str] | None = None
  stacked: Any = "auto"
  layers: LayerMap | None = None

  def __post_init__(self):
    owner = "LayerDecay"
    checks.check_number(owner, "layerwise_decay", self.layerwise_decay, low=0.0,
                        low_open=True, high=1.0, accepted="a number in (0, 1]")
    n = self.n_layers
    if isinstance(n, Mapping):
      for stack, depth in n.items():
        if not isinstance(stack, str):
          raise TypeError(f"{owner}: n_layers keys must be stack path prefixes (str), got "
                          f"{stack!r}")
        checks.check_int(owner, f"n_layers[{stack!r}]", depth, minimum=1,
                         accepted="an int >= 1")
    elif n is not None:
      checks.check_int(owner, "n_layers", n, minimum=1,
                       accepted="an int >= 1, a dict {stack prefix: int}, or None to read it "
                                "from the tree")
    if self.rule is not None and not callable(self.rule):
      raise TypeError(
          f"{owner}: set_param_lr_fun (rule) must be a function (decay, name_dict, n_layers, "
          f"param) -> ratio, or None for the path rule; got {self.rule!r}"
      )
    if self.name_dict is not None:
      if not isinstance(self.name_dict, Mapping):
        raise TypeError(f"{owner}: name_dict must be a dict of path name -> name, got "
                        f"{self.name_dict!r}")
      bad = [(k, v) for k, v in self.name_dict.items()
             if not isinstance(k, str) or not isinstance(v, str)]
      if bad:
        raise TypeError(
            f"{owner}: name_dict must map path names (str) to names (str); the entry "
            f"{bad[0][0]!r}: {bad[0][1]!r} is not."
        )
    rules.check_stacked_arg(owner, self.stacked)
    if self.layers is not None:
      if not isinstance(self.layers, LayerMap):
        raise TypeError(
            f"{owner}: layers must be an optax_ldl.LayerMap (from optax_ldl.trace_layers), "
            f"got {self.layers!r}"
        )
      if self.rule is not None:
        raise ValueError(f"{owner}: pass layers (a LayerMap) or set_param_lr_fun, not both.")
      if n is not None:
        given = dict(n) if isinstance(n, Mapping) else (
            {"": int(n)} if len(self.layers.depths) == 1 else None)
        mapped = dict(self.layers.depths)
        if given is None or (
            set(given.values()) != set(mapped.values()) if len(mapped) == 1
            else given != mapped
        ):
          raise ValueError(
              f"{owner}: n_layers={n!r} disagrees with the layer map's depths {mapped}; "
              "with layers= the depths come from the map: drop n_layers."
          )

  @classmethod
  def of(cls, decay: LayerDecay | None = None, **fields: Any) -> LayerDecay:
    """``decay`` itself (then ``fields`` must be the defaults), or one built from ``fields``."""
    if decay is None:
      return cls(**fields)
    if not isinstance(decay, LayerDecay):
      raise TypeError(f"decay must be an optax_ldl.LayerDecay or None, got {decay!r}")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    given = sorted(k for k, v in fields.items() if not _same(v, defaults[k]))
    if given:
      raise TypeError(f"pass a LayerDecay or its fields, not both (got decay and {given})")
    return decay

  def __getstate__(self) -> dict[str, Any]:  # the fields, not the layer-map cache.
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  def __setstate__(self, state: dict[str, Any]) -> None:
    for name, value in state.items():
      object.__setattr__(self, name, value)

  def _key(self) -> tuple[Any, ...]:
    return tuple(_hashable(getattr(self, f.name)) for f in dataclasses.fields(self))

  def __hash__(self) -> int:
    return hash(self._key())

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, LayerDecay):
      return NotImplemented
    return all(_same(getattr(self, f.name), getattr(other, f.name))
               for f in dataclasses.fields(self))

  @property
  def is_one(self) -> bool:
    """Whether the decay is the Python number 1 (every ratio is 1, for good)."""
    d = self.layerwise_decay
    return isinstance(d, numbers.Real) and not isinstance(d, bool) and d == 1.0

  def layer_map(self, tree: Any) -> LayerMap | None:
    """Where every float leaf of ``tree`` sits (``None`` under a custom rule).

    Cached per tree structure and shapes: the map depends on nothing else, and
    an update traced after ``init`` reuses init's map.
    """
    leaves, treedef = jax.tree.flatten(tree)
    decay = checks.concrete_float(self.layerwise_decay)
    key = (treedef, tuple(tuple(np.shape(x)) for x in leaves),
           decay is not None and decay != 1.0, self.runtime_depth is None)
    cache = self.__dict__.setdefault("_layer_maps", {})
    if key not in cache:
      if len(cache) >= 16:
        cache.clear()
      cache[key] = self._layer_map(tree)
    return cache[key]

  def _layer_map(self, tree: Any) -> LayerMap | None:
    if self.rule is not None and self.rule is not _paddle_rule():
      return None
    if self.layers is not None:
      return _restrict(self.layers, tree)
    n_layers = None if self.runtime_depth is not None else self.n_layers
    if self.name_dict is not None:  # a missing entry is a mistake whatever the decay.
      for path, _ in jax.tree_util.tree_leaves_with_path(tree):
        rules.static_name("name_dict", self.name_dict, path_name(path))
    decay = checks.concrete_float(self.layerwise_decay)
    if decay is not None and decay != 1.0:
      return rules.path_layers(tree, n_layers=n_layers, name_dict=self.name_dict,
                               stacked=self.stacked)
    # A decay of 1 gives every parameter ratio 1 whatever its layer: the layers are
    # shown by describe when the rule can read them, never an error or a warning. A
    # traced decay (optax.inject_hyperparams under jit) was a number at init, where a
    # tree the rule cannot place was refused unless the decay was 1 (debug_checks
    # checks it at run time).
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      try:
        return rules.path_layers(tree, n_layers=n_layers, name_dict=self.name_dict,
                                 stacked=self.stacked)
      except ValueError:  # LayerRuleError, or an index above a given n_layers.
        return LayerMap.build({path_name(p): Placement("head")
                               for p, _ in jax.tree_util.tree_leaves_with_path(tree)}, {})

  @property
  def runtime_depth(self) -> Any:
    """``n_layers`` when it is a JAX array (``optax.inject_hyperparams``), else ``None``.

    The layers are then read from the tree and the depth from this value at run
    time, so init (concrete) and a jitted update (traced) group alike.
    """
    return self.n_layers if isinstance(self.n_layers, jax.Array) else None

  def groups(self, tree: Any) -> LayerGroups:
    """Groups the float leaves of ``tree`` by lr ratio (labels depend on paths only)."""
    floats = jax.tree.map(lambda x: x if wrappers.is_float(x) else None, tree)
    layer_map = self.layer_map(floats)
    if layer_map is None:
      return _custom_groups(floats, self)
    return _map_groups(floats, layer_map, self.layerwise_decay, self.runtime_depth)

  def check(self, params: Any) -> None:
    """Raises now what ``init`` would raise: naming, layout and layer-count mistakes."""
    groups = self.groups(params)
    decay = checks.concrete_float(self.layerwise_decay)
    if decay is None or decay == 1.0 or not groups.placements:
      return
    placed = [p for p in groups.placements.values() if p is not None]
    if placed and not any(p.kind in ("layer", "embedding") for p in placed):
      paths = sorted(groups.placements)[:8]
      raise ValueError(
          f"layerwise_decay={self.layerwise_decay!r} but no parameter is in a layer, so "
          f"nothing would be decayed. Paths: {paths}. Place them with "
          "layers=optax_ldl.trace_layers(fn, params, *example_args), map their names with "
          "name_dict, pass set_param_lr_fun, or use layerwise_decay=1.0.\n"
          + rules.RECOGNISED
      )
    if not placed and all(_is_one(r) for r in groups.ratios.values()):
      raise ValueError(
          f"layerwise_decay={self.layerwise_decay!r} but set_param_lr_fun gave ratio 1.0 to "
          f"every parameter ({len(groups.placements)} of them), so no layer would be "
          f"decayed. Check the names it matches (the path names, e.g. "
          f"{sorted(groups.placements)[0]!r}, or their name_dict entries)."
      )


def _paddle_rule() -> Any:
  from optax_ldl._src import paddle  # paddle imports this module: import on use.

  return paddle.layerwise_lr_decay


def _restrict(layer_map: LayerMap, tree: Any) -> LayerMap:
  """The map's placements of ``tree``'s leaves; an error naming the leaves it lacks."""
  names = [path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
  missing = [n for n in names if n not in layer_map]
  if missing:
    raise ValueError(
        f"layers: the LayerMap places no parameter at {missing[:6]}"
        f"{' ...' if len(missing) > 6 else ''} ({len(missing)} of {len(names)} leaves); "
        "it was made for another parameter tree. Trace it again on these params: "
        "optax_ldl.trace_layers(fn, params, *example_args)."
    )
  return layer_map


def _is_one(ratio: Any) -> bool:
  if isinstance(ratio, stacked_lib.StackedRatio):
    return isinstance(ratio.ratios, np.ndarray) and bool(np.all(ratio.ratios == 1.0))
  return checks.concrete_float(ratio) == 1.0


def _power(decay: Any, exponent: Any) -> Any:
  return 1.0 if isinstance(exponent, int) and exponent == 0 else decay**exponent


def _map_groups(tree: Any, layer_map: LayerMap, decay: Any, depth: Any = None) -> LayerGroups:
  """One group per power of the decay (a stacked leaf: one ratio per slice).

  ``depth``: a runtime layer count (an array, ``optax.inject_hyperparams``)
  replacing the map's, one stack only; the groups are then labelled by the
  distance to the top of the stack, which does not depend on the count.
  """
  if depth is not None and len(layer_map.depths) > 1:
    raise ValueError(
        f"n_layers is an array ({depth!r}) but the tree has {len(layer_map.depths)} stacks "
        f"({[s for s, _ in layer_map.depths]}); give n_layers as a dict of ints, static "
        "(optax.inject_hyperparams(..., static_args=('n_layers',)))."
    )
  map_depth = dict(layer_map.depths)

  def power(name: str, place: Placement, j: int = 0) -> tuple[str, Any]:
    """The label and the exponent of slice ``j`` of ``name``."""
    exponent = layer_map.exponent(name, j)
    assert exponent is not None
    if depth is None or place.kind == "head":
      return f"decay^{exponent}", exponent
    offset = map_depth[place.stack] - exponent  # the count minus this, at run time.
    return f"depth-{offset}", depth - offset

  labels, ratios, placements = {}, {}, {}
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    name = path_name(path)
    place = layer_map[name]
    placements[name] = place
    if place.kind == "ratio":
      label = f"ratio_{float(place.ratio)!r}"  # pyright: ignore[reportArgumentType]
      ratios.setdefault(label, float(place.ratio))  # pyright: ignore[reportArgumentType]
    elif place.axis is not None:
      slices = [power(name, place, j) for j in range(int(np.shape(x)[place.axis]))]
      label = "stacked_axis" + str(place.axis) + "_" + ",".join(lbl for lbl, _ in slices)
      if label not in ratios:
        ratios[label] = stacked_lib.StackedRatio(
            stacked_lib.ratio_vector([_power(decay, e) for _, e in slices]), place.axis)
    else:
      label, exponent = power(name, place)
      if label not in ratios:
        ratios[label] = _power(decay, exponent)
    labels[name] = label
  return LayerGroups(_relabel(tree, labels), ratios, placements)


def _custom_groups(tree: Any, config: LayerDecay) -> LayerGroups:
  """Groups from a custom rule, called once per leaf (per slice for stacked leaves)."""
  from optax_ldl._src import paddle  # paddle imports this module: import on use.

  decay, n_layers, name_dict = config.layerwise_decay, config.n_layers, config.name_dict
  rule = config.rule
  assert rule is not None  # a custom rule: layer_map() returned None.
  leaves = [(path_name(p), p, x) for p, x in jax.tree_util.tree_leaves_with_path(tree)]
  static_args = _is_python_number(decay) and (
      n_layers is None or _is_python_number(n_layers))
  labels, ratios, placements = {}, {}, {}
  explicit_only = config.is_one
  for name, path, x in leaves:
    rule_name = rules.static_name("set_param_lr_fun", name_dict, name)
    shape, dtype = tuple(np.shape(x)), getattr(x, "dtype", None)
    spec = stacked_lib.leaf_spec(config.stacked, name, shape, n_layers, explicit_only)
    placements[name] = None
    if spec is not None:  # stacked: the rule sees each slice's unrolled name.
      vector = stacked_lib.ratio_vector([
          paddle.call_rule(rule, decay, name_dict, n_layers, paddle.Param(
              stacked_lib.unrolled_name(rule_name, spec, i), path,
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
    ratio = paddle.call_rule(
        rule, decay, name_dict, n_layers, paddle.Param(name, path, shape, dtype))
    if static_args:
      label = f"ratio_{float(np.asarray(ratio))!r}"
    else:  # array hyperparameters may be traced later: one group per parameter,
      label = f"param_{name}"  # so that init and a jitted update agree.
    labels[name] = label
    ratios[label] = ratio
  return LayerGroups(_relabel(tree, labels), ratios, placements)


def _relabel(tree: Any, labels: dict[str, str]) -> Any:
  return jax.tree_util.tree_map_with_path(lambda p, _: labels[path_name(p)], tree)


class ScaleByLayerRatioState(NamedTuple):
  """State of :func:`scale_by_layer_ratio`.

  Attributes:
    ratios: one float scalar per group of unstacked parameters whose ratio is a
      number other than 0 and 1, keyed ``"<label>@<ratio>"``
      (``"decay^3@0.512"``): the key names the ratio the group was built with,
      so a state made with another decay rate, layer count or rule has other
      keys and is refused, never silently applied with its old ratios. An entry
      zeroed by a "reset" (``jax.tree.map(jnp.zeros_like, state)``,
      ``optax.tree_utils.tree_zeros_like``) makes the next update NaN, loudly,
      never a silently frozen layer: reset a state with ``tx.init(params)``.
  """

  ratios: dict[str, jax.Array]


def _state_key(label: str, ratio: Any) -> str | None:
  """The state key of a group whose ratio is read from the state, else None.

  Static (Python or NumPy) scalar ratios other than 0 and 1 are kept in the
  state: the compiled update reads them as operands, so every layer's update is
  the same kernel (a ratio written into the program as a literal gives each
  layer kernels of its own and multiplies compile time: ``benchmarks/``). A
  stacked group's ratio vector stays a constant of the program (its leaves hold
  every layer, so a constant adds no kernels); JAX array ratios
  (``inject_hyperparams``, a traced decay) are runtime values already.
  """
  if isinstance(ratio, (stacked_lib.StackedRatio, jax.Array)) or ratio in (0, 1):
    return None
  return f"{label}@{float(ratio)!r}"


def _stored_ratios(state: ScaleByLayerRatioState, keys: dict[str, str]) -> dict[str, Any]:
  """The ratios read from the state; NaN for a zeroed entry.

  ``s / sign(s)`` is ``s`` for a stored ratio (always > 0: ratios of 0 and 1 are
  not stored) and ``0 / 0 = NaN`` for an entry zeroed by a "reset" such as
  ``optax.tree_utils.tree_zeros_like``: the next update is NaN, loudly, instead
  of freezing the layer silently. No configured ratio enters the program as a
  literal, so the kernels that scale the updates stay identical across layers
  (a literal fallback per group roughly doubled compile time: ``benchmarks/``).
  """
  return {label: state.ratios[key] / jnp.sign(state.ratios[key]) for label, key in keys.items()}


def scale_by_layer_ratio(
    decay: LayerDecay | None = None,
    *,
    layerwise_decay: Any = 1.0,
    n_layers: Any = None,
    rule: Callable[..., Any] | None = None,
    name_dict: Mapping[str, str] | None = None,
    stacked: Any = "auto",
    layers: LayerMap | None = None,
) -> optax.GradientTransformationExtraArgs:
  """Multiplies each update by its parameter's layer-wise lr ratio.

  The parameters are grouped by ratio (:meth:`LayerDecay.groups`) and each
  group's updates are multiplied by its ratio: the result is that of
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
    decay: a :class:`LayerDecay`; or ``None``, and the fields below.
    layerwise_decay: see :class:`LayerDecay` (each field, named as there, is a
      keyword argument, so ``optax.inject_hyperparams`` can inject the decay).
    n_layers: see :class:`LayerDecay`.
    rule: see :class:`LayerDecay`.
    name_dict: see :class:`LayerDecay`.
    stacked: see :class:`LayerDecay`.
    layers: see :class:`LayerDecay`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  config = LayerDecay.of(decay, layerwise_decay=layerwise_decay, n_layers=n_layers, rule=rule,
                         name_dict=name_dict, stacked=stacked, layers=layers)
  float_dtype = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 unless x64.

  def state_keys(groups):
    keys = {label: _state_key(label, r) for label, r in groups.ratios.items()}
    return {label: key for label, key in keys.items() if key is not None}

  last_keys: list[str] = []  # the ratio keys of the last init on params.

  def init_fn(params):
    if type(params).__name__ == "_ParamsPlaceholder":
      # optax.tree_utils.tree_map_params inits on a placeholder for the params to find
      # them in the state: the ratios are not params, and have the last init's keys.
      return ScaleByLayerRatioState({key: jnp.ones((), float_dtype) for key in last_keys})
    groups = config.groups(params)
    keys = state_keys(groups)
    last_keys[:] = keys.values()
    return ScaleByLayerRatioState({
        key: jnp.asarray(groups.ratios[label], float_dtype) for label, key in keys.items()
    })

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    groups = config.groups(updates)
    keys = state_keys(groups)
    if set(keys.values()) != set(state.ratios):
      raise ValueError(
          "scale_by_layer_ratio: the state holds the ratios "
          f"{sorted(state.ratios)}, but this transformation gives the updates "
          f"{sorted(keys.values())}: the state was made for other parameters or "
          "with another layerwise_decay, n_layers, rule or stacked setting. Make "
          "the state with this transformation's init. To keep the moments "
          "of an old state, give it the ratios of a fresh one: "
          "optax.tree_utils.tree_set(state, ratios=optax.tree_utils.tree_get("
          "tx.init(params), 'ratios')); to change the decay during training, "
          "use optax.inject_hyperparams."
      )
    stored = _stored_ratios(state, keys)

    def scale(u, label):
      ratio = groups.ratios[label]
      if label in stored:
        r = stored[label]
      elif isinstance(ratio, stacked_lib.StackedRatio):
        r = stacked_lib.broadcast_ratio(ratio.ratios, ratio.axis, jnp.ndim(u))
      elif isinstance(ratio, jax.Array) or ratio == 0:
        r = ratio
      else:  # a static ratio of 1.
        return u
      return stacked_lib.times_ratio(u, r)

    return jax.tree.map(scale, updates, groups.labels), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def with_checks(
    tx: optax.GradientTransformationExtraArgs,
    check: Callable[[Any], None],
    parameters: Any = None,
    owner: str = "optax_ldl",
) -> optax.GradientTransformationExtraArgs:
  """``tx`` whose ``init`` first runs ``check(params)`` (and now, on ``parameters``).

  Its ``update`` checks structures, in Python, while it is traced: the updates
  must have the params' structure, and, when ``tx.update`` fails, the state the
  structure ``tx.init`` gives for these params (``jax.eval_shape``, cached per
  tree structure, shapes and dtypes), so a state from another tree, another
  optimizer or another ``multi_precision`` setting, or a checkpoint restored
  without a target, is refused with a ``ValueError`` naming ``state`` (and a
  grads tree missing a leaf, naming ``updates``) rather than failing deep
  inside. Nothing is added to the compiled update.
  """
  if parameters is not None:
    check(parameters)
  expected_states: dict[Any, Any] = {}

  def init_fn(params):
    check(params)
    return tx.init(params)

  def update_fn(updates, state, params=None, **extra_args):
    _check_updates_structure(owner, updates, params)
    try:
      return tx.update(updates, state, params, **extra_args)
    except Exception as error:  # only then is the state's structure worth a look.
      _check_state_structure(owner, tx, expected_states, state,
                             updates if params is None else params, error)
      raise

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


_MAX_CACHED_STRUCTURES = 64


def _key_paths(tree: Any) -> list[str]:
  """Every leaf's key path (``None`` subtrees included), e.g. ``[0].inner_state.mu['w']``."""
  return [jax.tree_util.keystr(p) for p, _ in
          jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]]


def _outline(tree: Any, depth: int = 4) -> str:
  """A short picture of a tree's containers: ``Name(field=..., ...)``, ``{'k': *}``, ``*``."""
  if tree is None:
    return "None"
  if jax.tree_util.all_leaves([tree]):
    return "*"
  if depth == 0:
    return "..."
  children = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is not tree)[0]
  shown = []
  for path, child in children[:4]:
    key = path[0]
    inner = _outline(child, depth - 1)
    if isinstance(key, jax.tree_util.DictKey):
      shown.append(f"{key.key!r}: {inner}")
    elif isinstance(key, jax.tree_util.GetAttrKey):
      shown.append(f"{key.name}={inner}")
    else:
      shown.append(inner)
  if len(children) > 4:
    shown.append(f"... {len(children) - 4} more")
  body = ", ".join(shown)
  if isinstance(tree, dict):
    return "{" + body + "}"
  if type(tree) is list:
    return "[" + body + "]"
  if type(tree) is tuple:
    return "(" + body + ")"
  return f"{type(tree).__name__}({body})"


def _difference(expected: list[str], got: list[str]) -> tuple[list[str], list[str]]:
  """The key paths only ``expected`` has, and those only ``got`` has (in order)."""
  got_set, expected_set = set(got), set(expected)
  return [p for p in expected if p not in got_set], [p for p in got if p not in expected_set]


def _shown(paths: list[str], limit: int = 4) -> str:
  more = f" ... ({len(paths)} in all)" if len(paths) > limit else ""
  return ", ".join(paths[:limit]) + more


def _details(missing: list[str], extra: list[str], missing_label: str, extra_label: str,
             same: str, limit: int) -> list[str]:
  """The parts of a structure-mismatch message: what is missing, what is extra."""
  detail = [f"{label}: {_shown(paths, limit)}"
            for label, paths in ((missing_label, missing), (extra_label, extra)) if paths]
  return detail or [same]


def _check_updates_structure(owner: str, updates: Any, params: Any) -> None:
  """Raises a ``ValueError`` naming ``updates`` unless they have the params' structure."""
  if params is None:
    return
  is_none = lambda x: x is None  # noqa: E731
  if jax.tree.structure(updates, is_leaf=is_none) == jax.tree.structure(params, is_leaf=is_none):
    return
  missing, extra = _difference(
      [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params, is_leaf=is_none)[0]],
      [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(updates, is_leaf=is_none)[0]],
  )
  detail = _details(
      missing, extra, "missing (in the params, not in the updates)",
      "unexpected (in the updates, not in the params)",
      "the same leaves in other containers (e.g. a list for a tuple)", limit=4)
  raise ValueError(
      f"{owner}: updates (the gradients) must have the params' tree structure; "
      + "; ".join(detail) + ".\n"
      f"updates: {_outline(updates)}\nparams:  {_outline(params)}"
  )


def _expected_state(tx: Any, cache: dict[Any, Any], like: Any) -> Any:
  """``jax.eval_shape(tx.init, like)`` cached per structure, shapes and dtypes (None: unknown)."""
  leaves, treedef = jax.tree.flatten(like)
  try:
    key = (treedef, tuple((tuple(np.shape(x)), str(jnp.result_type(x))) for x in leaves))
    hash(key)
  except Exception:  # noqa: BLE001 - leaves without a shape or dtype: not checked.
    return None
  if key not in cache:
    if len(cache) >= _MAX_CACHED_STRUCTURES:
      cache.clear()
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # init's own warnings were given at init.
        cache[key] = jax.eval_shape(tx.init, like)
    except Exception:  # noqa: BLE001 - init cannot run on these: update raises its own error.
      cache[key] = None
  return cache[key]


def _check_state_structure(owner: str, tx: Any, cache: dict[Any, Any], state: Any,
                           like: Any, error: Exception) -> None:
  """Raises a ``ValueError`` naming ``state`` unless it has the structure init gives ``like``."""
  expected = _expected_state(tx, cache, like)
  if expected is None:
    return
  is_none = lambda x: x is None  # noqa: E731
  if jax.tree.structure(state, is_leaf=is_none) == jax.tree.structure(expected, is_leaf=is_none):
    return
  missing, extra = _difference(_key_paths(expected), _key_paths(state))
  if (missing or extra) and all(".ratios[" in p for p in missing + extra):
    return  # only the layer ratios differ: scale_by_layer_ratio says which and why.
  detail = _details(missing, extra, "expected but missing", "present but not expected",
                    "the same leaves in other containers", limit=3)
  raise ValueError(
      f"{owner}: state does not have the structure this transformation's init gives for "
      "these params: it was made by another optimizer (e.g. optax.adamw), for another "
      "parameter tree, or with another multi_precision/lazy_mode/grad_clip setting, or it "
      "is a checkpoint restored without a target (dicts and lists instead of optax's "
      "state NamedTuples). Make it with tx.init(params), or restore the checkpoint with "
      "tx.init(params) (or jax.eval_shape(tx.init, params)) as the target.\n"
      + "; ".join(detail) + ".\n"
      f"expected: {_outline(expected)}\ngot:      {_outline(state)}"
  ) from error


def float_params(params: Any) -> Any:
  """``params`` with every non-float leaf replaced by ``optax.MaskedNode()``."""
  return jax.tree.map(lambda p: p if wrappers.is_float(p) else optax.MaskedNode(), params)


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
    extra_check: Callable[[Any], None] | None = None,
    owner: str = "layerwise",
) -> optax.GradientTransformationExtraArgs:
  """Layer-wise lr decay around any Optax optimizer.

  Each parameter's update from ``inner`` (learning rate and weight decay
  included) is multiplied by its layer ratio (:class:`LayerDecay`), so the
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
    decay: a :class:`LayerDecay`, or ``None`` to build one from ``kwargs``.
    lazy_mode: Paddle's lazy mode (:func:`optax_ldl.lazy_rows`).
    multi_precision: float32 master weights for half-precision params
      (:func:`optax_ldl.master_weights`).
    parameters: optionally the params (or ``jax.ShapeDtypeStruct`` s), to check
      the configuration now rather than at ``init``.
    layerwise_decay: see :class:`LayerDecay` (its fields are keyword arguments
      here, so ``optax.inject_hyperparams(optax_ldl.layerwise)`` works).
    n_layers: see :class:`LayerDecay`.
    rule: see :class:`LayerDecay`.
    name_dict: see :class:`LayerDecay`.
    stacked: see :class:`LayerDecay`.
    layers: see :class:`LayerDecay`.
    extra_check: a further check of the params, run with the others.
    owner: the name errors and warnings give (the alias that called this).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  config = LayerDecay.of(decay, layerwise_decay=layerwise_decay, n_layers=n_layers, rule=rule,
                         name_dict=name_dict, stacked=stacked, layers=layers)
  if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "update", None))):
    raise TypeError(f"{owner}: inner must be an optax transformation, got {inner!r}")
  tx = optax.chain(inner, scale_by_layer_ratio(config))
  for arg, flag in (("lazy_mode", lazy_mode), ("multi_precision", multi_precision)):
    if not isinstance(flag, (bool, np.bool_)):
      raise TypeError(f"{owner}: {arg} must be True or False, got {flag!r}")
  if lazy_mode:
    tx = wrappers.lazy_rows(tx)
  if multi_precision:
    tx = wrappers.master_weights(tx)
  tx = wrappers.float_leaves_only(tx)

  def check(params):
    if extra_check is not None:
      extra_check(params)
    config.check(float_params(params))
    if not multi_precision:
      wrappers.warn_half_precision(params, owner)

  return with_checks(tx, check, parameters, owner)


def _is_python_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)
