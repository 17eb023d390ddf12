r"""``LayerDecay`` and its ``LayerPlan``: the configuration, and the ratio of every leaf.

:class:`LayerDecay` is the whole configuration of layer-wise decay (the decay
rate, and where each parameter sits: a :class:`optax_ldl.LayerMap`, the path
rule, ``name_dict`` or a custom rule). :meth:`LayerDecay.plan` resolves it for
one parameter tree into a :class:`LayerPlan`, the one object that the
transformation (:func:`optax_ldl.scale_by_layer_ratio`),
:func:`optax_ldl.describe`, :func:`optax_ldl.layer_drift` and the checks read.
Ratios are computed here and nowhere else:

.. math::

  r_p = \alpha^{L_s - i} \text{ (layer } i \text{ of stack } s\text{)}, \quad
  \alpha^{L_s + 1} \text{ (its embeddings)}, \quad 1 \text{ (heads)}.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from optax_ldl._src import checks, custom_rule
from optax_ldl._src import path_rule as rules
from optax_ldl._src.layer_map import LayerMap, Placement
from optax_ldl._src.plan import LayerPlan, is_one, map_plan
from optax_ldl._src.tree_names import floats_only, masked_names, names_and_leaves

_MAX_CACHED_MAPS = 16


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


def validate(owner: str, *, layerwise_decay: Any = 1.0, n_layers: Any = None,
             rule: Any = None, name_dict: Any = None, stacked: Any = "auto",
             layers: Any = None, floor: Any = None, stages: Any = None) -> None:
  """Checks the layer arguments, each error naming ``owner`` (the function the user called)."""
  checks.hyperparameter(owner, "layerwise_decay", layerwise_decay)
  _check_floor_and_stages(owner, layerwise_decay, rule, floor, stages)
  checks.n_layers(owner, n_layers)
  checks.layer_rule(owner, rule)
  checks.name_dict(owner, name_dict)
  rules.check_stacked_arg(owner, stacked)
  if layers is None:
    return
  if not isinstance(layers, LayerMap):
    raise TypeError(
        f"{owner}: layers must be an optax_ldl.LayerMap (from optax_ldl.path_layers or "
        f"optax_ldl.trace_layers), got {layers!r}"
    )
  if rule is not None:
    raise ValueError(f"{owner}: pass layers (a LayerMap) or set_param_lr_fun, not both.")
  if n_layers is not None:
    given = dict(n_layers) if isinstance(n_layers, Mapping) else (
        {"": int(n_layers)} if len(layers.depths) == 1 else None)
    mapped = dict(layers.depths)
    if given is None or (set(given.values()) != set(mapped.values()) if len(mapped) == 1
                         else given != mapped):
      raise ValueError(
          f"{owner}: n_layers={n_layers!r} disagrees with the layer map's depths {mapped}; "
          "with layers= the depths come from the map: drop n_layers."
      )


def _check_floor_and_stages(owner: str, layerwise_decay: Any, rule: Any, floor: Any,
                            stages: Any) -> None:
  if floor is not None:
    checks.hyperparameter(owner, "layerwise_decay", floor, "floor")
    if not (isinstance(layerwise_decay, (int, float)) and layerwise_decay == 1.0):
      raise ValueError(f"{owner}: floor={floor!r} sets the decay (floor ** (1 / (L + 1))); "
                       f"pass floor or layerwise_decay={layerwise_decay!r}, not both.")
  if stages is not None:
    sizes = stages if isinstance(stages, (list, tuple)) else (stages,)
    if not sizes or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1
                        for k in sizes):
      raise ValueError(
          f"{owner}: stages must be None, an int >= 1 (layers per stage: chunks of k "
          "layers from the bottom) or a list of ints >= 1 (the layers of each stage, "
          f"bottom to top), got {stages!r}")
  for arg, value in (("floor", floor), ("stages", stages)):
    if value is not None and rule is not None and rule is not custom_rule.layerwise_lr_decay:
      raise ValueError(f"{owner}: {arg} reads the layer plan, but set_param_lr_fun (a custom "
                       "rule) gives ratios, not places: pass one of them.")


@dataclasses.dataclass(frozen=True, eq=False)
class LayerDecay:
  """Layer-wise lr decay: the decay rate and where every parameter sits.

  One frozen, hashable object that :func:`optax_ldl.scale_by_layer_ratio`,
  :func:`optax_ldl.layerwise`, :func:`optax_ldl.adamwdl` and
  :func:`optax_ldl.describe` all read; :meth:`plan` resolves it for a tree.

  >>> import jax.numpy as jnp
  >>> decay = LayerDecay(layerwise_decay=0.5)
  >>> params = {'embed': jnp.ones(2), 'layers_0': jnp.ones(2),
  ...           'layers_1': jnp.ones(2), 'head': jnp.ones(2)}
  >>> plan = decay.plan(params)
  >>> {p: plan.ratio(p) for p in sorted(plan.labels)}
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
    layers: a :class:`optax_ldl.LayerMap` placing every parameter of the whole
      model (from :func:`optax_ldl.path_layers` or
      :func:`optax_ldl.trace_layers`); it applies unchanged to any part of the
      model an optimizer is given (``optax.masked``/``optax.partition``,
      ``nnx.Optimizer(wrt=...)``, adapters).
    floor: instead of ``layerwise_decay``, the embeddings' ratio: each stack
      of depth :math:`L` then decays by :math:`\\text{floor}^{1/(L+1)}`, so a
      recipe carries between a 12- and a 24-layer model.
    stages: stage-wise grouping (mmengine's ``decay_type='stage_wise'``): one
      ratio per stage instead of per layer: an int ``k`` (chunks of ``k``
      layers from the bottom) or the layers of each stage, bottom to top
      (ConvNeXt-T: ``(3, 3, 9, 3)``); the depth :math:`L` is then the number
      of stages.
  """

  layerwise_decay: Any = 1.0
  n_layers: Any = None
  rule: Callable[..., Any] | None = None
  name_dict: Mapping[str, str] | None = None
  stacked: Any = "auto"
  layers: LayerMap | None = None
  floor: Any = None
  stages: Any = None

  def __post_init__(self):
    validate("LayerDecay", **self._fields())

  def _fields(self) -> dict[str, Any]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  @classmethod
  def of(cls, decay: LayerDecay | None, owner: str, **fields: Any) -> LayerDecay:
    """``decay`` itself (then ``fields`` must be the defaults), or one built from ``fields``.

    The fields are checked with ``owner`` named in the errors.
    """
    if decay is None:
      validate(owner, **fields)
      return cls(**fields)
    if not isinstance(decay, LayerDecay):
      raise TypeError(f"{owner}: decay must be an optax_ldl.LayerDecay or None, got {decay!r}")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    given = sorted(k for k, v in fields.items() if not _same(v, defaults[k]))
    if given:
      raise TypeError(f"{owner}: pass a LayerDecay or its fields, not both (got decay and "
                      f"{given})")
    return decay

  def __getstate__(self) -> dict[str, Any]:  # the fields, not the layer-map cache.
    return self._fields()

  def __setstate__(self, state: dict[str, Any]) -> None:
    for name, value in state.items():
      object.__setattr__(self, name, value)

  def __hash__(self) -> int:
    return hash(tuple(_hashable(v) for v in self._fields().values()))

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, LayerDecay):
      return NotImplemented
    return all(_same(getattr(self, f.name), getattr(other, f.name))
               for f in dataclasses.fields(self))

  @property
  def is_one(self) -> bool:
    """Whether the decay is the Python number 1 (every ratio is 1, for good)."""
    d = self.layerwise_decay
    return (isinstance(d, numbers.Real) and not isinstance(d, bool) and d == 1.0
            and self.floor is None)

  def _decaying(self) -> bool | None:
    """Whether some ratio is below 1 (``None``: unknown, a traced decay)."""
    if self.floor is not None:
      return checks.concrete_float(self.floor) != 1.0
    decay = checks.concrete_float(self.layerwise_decay)
    return None if decay is None else decay != 1.0

  @property
  def runtime_depth(self) -> Any:
    """``n_layers`` when it is a JAX array (``optax.inject_hyperparams``), else ``None``.

    The layers are then read from the tree and the depth from this value at run
    time, so init (concrete) and a jitted update (traced) group alike.
    """
    return self.n_layers if isinstance(self.n_layers, jax.Array) else None

  def layer_map(self, tree: Any, owner: str = "adamwdl") -> LayerMap | None:
    """Where every float leaf of ``tree`` sits (``None`` under a custom rule).

    Cached per tree structure and shapes: the map depends on nothing else, and
    an update traced after ``init`` reuses init's map. ``owner``: the function
    the user called, named in the errors.
    """
    leaves, treedef = jax.tree.flatten(tree)
    key = (treedef, tuple(tuple(np.shape(x)) for x in leaves), bool(self._decaying()),
           self.runtime_depth is None)
    cache = self.__dict__.setdefault("_layer_maps", {})
    if key not in cache:
      if len(cache) >= _MAX_CACHED_MAPS:
        cache.clear()
      cache[key] = self._compute_layer_map(tree, owner)
    return cache[key]

  def _compute_layer_map(self, tree: Any, owner: str) -> LayerMap | None:
    if self.rule is not None and self.rule is not custom_rule.layerwise_lr_decay:
      return None
    if self.layers is not None:
      return _restrict(self.layers, tree)
    n_layers = None if self.runtime_depth is not None else self.n_layers
    if self.name_dict is not None:  # a missing entry is a mistake whatever the decay.
      _check_name_dict(self.name_dict, [name for name, _ in names_and_leaves(tree)])
    if self._decaying():
      return rules.path_layers(tree, n_layers=n_layers, name_dict=self.name_dict,
                               stacked=self.stacked, owner=owner)
    # A decay of 1 gives every parameter ratio 1 whatever its layer: the layers are
    # shown by describe when the rule can read them, never an error or a warning. A
    # traced decay (optax.inject_hyperparams under jit) was a number at init, where a
    # tree the rule cannot place was refused unless the decay was 1.
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      try:
        return rules.path_layers(tree, n_layers=n_layers, name_dict=self.name_dict,
                                 stacked=self.stacked)
      except ValueError:  # LayerRuleError, or an index above a given n_layers.
        return LayerMap.build({name: Placement("head") for name, _ in names_and_leaves(tree)},
                              {})

  def plan(self, tree: Any, owner: str = "LayerDecay") -> LayerPlan:
    """The :class:`LayerPlan` of the float leaves of ``tree`` (other leaves are left out)."""
    floats = floats_only(tree)
    layer_map = self.layer_map(floats, owner)
    if layer_map is None:
      assert self.rule is not None
      labels, ratios, axes = custom_rule.custom_groups(
          owner, floats, self.rule, self.layerwise_decay, self.n_layers, self.name_dict,
          self.stacked)
      return LayerPlan(labels, ratios, dict.fromkeys(labels), axes,
                       dict.fromkeys(labels, "set_param_lr_fun (a custom rule)"))
    return map_plan(floats, layer_map, self.layerwise_decay, self.runtime_depth,
                    floor=self.floor, stages=self.stages)

  def check(self, params: Any, owner: str = "LayerDecay") -> LayerPlan:
    """Raises now what ``init`` would raise; returns the plan of ``params``."""
    _check_whole_model(owner, self, params)
    plan = self.plan(params, owner)
    if not self._decaying() or not plan.placements:
      return plan
    placed = [p for p in plan.placements.values() if p is not None]
    if placed and not any(p.kind in ("layer", "embedding") for p in placed):
      paths = sorted(plan.placements)[:8]
      raise ValueError(
          f"{owner}: layerwise_decay={self.layerwise_decay!r} but no parameter is in a layer, "
          f"so nothing would be decayed. Paths: {paths}. Place them with "
          "layers=optax_ldl.trace_layers(fn, params, *example_args), map their names with "
          "name_dict, pass set_param_lr_fun, or use layerwise_decay=1.0.\n" + rules.RECOGNISED
      )
    if not placed and all(is_one(r) for r in plan.ratios.values()):
      raise ValueError(
          f"{owner}: layerwise_decay={self.layerwise_decay!r} but set_param_lr_fun gave ratio "
          f"1.0 to every parameter ({len(plan.placements)} of them), so no layer would be "
          f"decayed. Check the names it matches (the path names, e.g. "
          f"{sorted(plan.placements)[0]!r}, or their name_dict entries)."
      )
    return plan


def _check_name_dict(name_dict: Mapping[str, str], names: list[str]) -> None:
  """Raises, naming every leaf it misses, unless ``name_dict`` maps every float leaf."""
  missing = [n for n in names if n not in name_dict]
  if not missing:
    return
  raise ValueError(
      f"name_dict has no entry for {len(missing)} of the {len(names)} float parameters: "
      f"{missing[:6]}{' ...' if len(missing) > 6 else ''}. name_dict must map every float "
      "parameter's path name (keys joined by '/') to the name the layer rule reads; a "
      "partial or prefix mapping is not completed with guesses. Add the missing entries "
      f"(e.g. {missing[0]!r}: {missing[0]!r} to keep a path name as it is), or drop "
      f"name_dict to read the path names. Its keys now: {sorted(name_dict)[:3]!r}"
      f"{' ...' if len(name_dict) > 3 else ''}."
  )


def _check_whole_model(owner: str, config: LayerDecay, params: Any) -> None:
  """Refuses to read the layers from a part of the model (``optax.masked``, ``optax.partition``).

  Those wrappers hand the optimizer the params with ``optax.MaskedNode``
  placeholders for the leaves it does not train; the depth read from the rest
  would be wrong by the hidden layers (freezing the top layer shifts every ratio
  by one power of the decay). A plan of the whole model, or explicit depths, is
  needed.
  """
  if config.layers is not None or config.rule is not None or config.n_layers is not None:
    return
  if config.is_one:
    return
  hidden = masked_names(params)
  if not hidden:
    return
  raise ValueError(
      f"{owner}: the optimizer is given part of the model: {len(hidden)} parameters are "
      f"hidden from it by optax.masked or optax.partition (e.g. {hidden[:3]}), so the layers "
      "and their depth cannot be read from what it sees (a frozen top layer would shift "
      "every ratio by one power of the decay). Compute the layer plan from the whole "
      "model and pass it: layers=optax_ldl.path_layers(params) (or "
      "layers=optax_ldl.trace_layers(fn, params, *example_args)), with params the full "
      "parameter tree."
  )


def _restrict(layer_map: LayerMap, tree: Any) -> LayerMap:
  """The map's placements of ``tree``'s leaves; an error naming the leaves it lacks.

  NNX names a variable's array ``<path>/value`` in ``nnx.state`` (which a plan is
  made from, and ``nnx.Optimizer`` inits on) but ``<path>`` in the gradients its
  ``update`` is given: either spelling finds the other's placement.
  """
  names = [name for name, _ in names_and_leaves(tree)]
  found: dict[str, Placement] = {}
  aliases: dict[str, str] = {}
  for name in names:
    for key in (name, f"{name}/value", name.removesuffix("/value")):
      if key in layer_map:
        found[name], aliases[name] = layer_map[key], key
        break
  missing = [n for n in names if n not in found]
  if missing:
    raise ValueError(
        f"layers: the LayerMap places no parameter at {missing[:6]}"
        f"{' ...' if len(missing) > 6 else ''} ({len(missing)} of {len(names)} leaves); "
        "it was made for another parameter tree. Make it again from the whole model's "
        "params: optax_ldl.path_layers(params) or "
        "optax_ldl.trace_layers(fn, params, *example_args)."
    )
  if all(n in layer_map for n in names):
    return layer_map
  return LayerMap.build(found, dict(layer_map.depths),
                        {n: layer_map.why(k) for n, k in aliases.items() if layer_map.why(k)})


