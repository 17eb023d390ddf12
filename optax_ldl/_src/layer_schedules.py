r"""Layer schedules: a multiplier of each layer's ratio as a function of the step count.

A layer schedule gives every place of the layer plan a *window* ``(start, span)``
of steps, and its ratio is multiplied at step :math:`t` by

.. math::

  m(t) = \operatorname{clip}\left(\frac{t - \text{start} + 1}{\max(\text{span}, 1)},
  0, 1\right)

(0 before ``start``; a linear ramp reaching 1 after ``span`` steps; a window
``(start, 0)`` switches on at ``start``; a start of :data:`NEVER` is 0 for
good). The windows are static data read from the plan's placements, the step is
the count in the transformation's state, so the multiplier is one ``jnp``
expression of the step: jit-safe, and no recompile as it changes. A schedule
counts a place's distance from the top of its stack: the head 0, layer ``i``
of a stack of depth :math:`L` is :math:`L - i`, its embeddings :math:`L + 1`
(:meth:`optax_ldl.LayerMap.exponent`); a stacked leaf's slices each have theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from optax_ldl._src.layer_map import LayerMap, Placement
from optax_ldl._src.tree_names import names_and_leaves

NEVER = np.iinfo(np.int32).max  # a start step that never comes: frozen for good.

Window = tuple[int, int]


def _int(owner: str, arg: str, value: Any, minimum: int) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or (
      value < minimum):
    raise ValueError(f"{owner}: {arg} must be an int >= {minimum}, got {value!r}")
  return int(value)


class LayerSchedule:
  """A multiplier of each layer's ratio as a function of the step (the base of every kind).

  Build one with :func:`optax_ldl.gradual_unfreezing`,
  :func:`optax_ldl.backbone_ramp` or :func:`optax_ldl.freeze`; ``a * b``
  multiplies two schedules' multipliers. Pass it as ``layer_schedule=`` to
  :func:`optax_ldl.adamwdl`, :func:`optax_ldl.layerwise` or ``AdamWDL``.
  """

  def windows(self, place: Placement, distance: int | None, depth: int | None
              ) -> tuple[Window, ...]:
    """The ``(start, span)`` windows of a place ``distance`` from the top of its stack."""
    raise NotImplementedError

  def frozen_for_good(self, place: Placement, distance: int | None, depth: int | None) -> bool:
    """Whether the place is frozen for the whole run and keeps no optimizer state."""
    del place, distance, depth
    return False

  def __mul__(self, other: LayerSchedule) -> LayerSchedule:
    if not isinstance(other, LayerSchedule):
      return NotImplemented
    return _Product((self, other))


@dataclasses.dataclass(frozen=True)
class _Product(LayerSchedule):
  parts: tuple[LayerSchedule, ...]

  def windows(self, place, distance, depth):
    return tuple(w for part in self.parts for w in part.windows(place, distance, depth))

  def frozen_for_good(self, place, distance, depth):
    return any(part.frozen_for_good(place, distance, depth) for part in self.parts)


@dataclasses.dataclass(frozen=True)
class GradualUnfreezing(LayerSchedule):
  """See :func:`gradual_unfreezing`."""

  every: int | None
  starts: tuple[int, ...] | None
  layers_per_group: int
  embeddings: str

  def group(self, place: Placement, distance: int | None, depth: int | None) -> int | None:
    """The group of a place, counted from the top (the head is group 0); ``None``: never."""
    if place.kind in ("head", "ratio") or distance is None or depth is None:
      return 0
    bottom = 1 + (depth - 1) // self.layers_per_group  # the group of layer 0.
    if place.kind == "embedding":
      return {"last": bottom + 1, "with_bottom": bottom, "never": None}[self.embeddings]
    return 1 + (distance - 1) // self.layers_per_group

  def windows(self, place, distance, depth):
    group = self.group(place, distance, depth)
    if group is None:
      return ((NEVER, 0),)
    if self.every is not None:
      return ((group * self.every, 0),)
    assert self.starts is not None
    if group >= len(self.starts):
      where = f"layer {place.layer}" if place.kind == "layer" else str(place)
      raise ValueError(
          f"gradual_unfreezing: starts has {len(self.starts)} start steps but group {group} "
          f"(from the top, the head being group 0; {where}, {distance} from the top of a stack "
          f"of {depth} layers, {self.layers_per_group} layer(s) a group) has none: give one "
          "start step per group, or every=."
      )
    return ((self.starts[group], 0),)


def gradual_unfreezing(
    every: int | None = None,
    *,
    starts: Sequence[int] | None = None,
    layers_per_group: int = 1,
    embeddings: str = "last",
) -> GradualUnfreezing:
  """ULMFiT's gradual unfreezing: the top group trains first, then one more group at a time.

  Group 0 is the head (and fixed-ratio overrides); group ``k >= 1`` holds the
  layers at distance ``(k-1) * layers_per_group + 1 .. k * layers_per_group``
  from the top of their stack (each stack counted from its own top); the
  embeddings come last (``"last"``: a group of their own after layer 0's),
  with the bottom layers (``"with_bottom"``), or never (``"never"``). Group
  ``k`` trains from step ``k * every``, or from ``starts[k]``; before, its
  updates are multiplied by 0 (its optimizer state keeps tracking the
  gradients: see the docs page "Freezing and unfreezing").

  >>> sched = gradual_unfreezing(100, layers_per_group=2)

  Args:
    every: steps between two groups' starts (group ``k`` starts at ``k * every``).
    starts: instead of ``every``, the start step of each group, non-decreasing.
    layers_per_group: layers unfrozen together, an int >= 1.
    embeddings: ``"last"``, ``"with_bottom"`` or ``"never"``.

  Returns:
    A :class:`LayerSchedule`.
  """
  owner = "gradual_unfreezing"
  if (every is None) == (starts is None):
    raise ValueError(f"{owner}: give every= (steps between groups) or starts= (a start step "
                     f"per group, from the top), not {'both' if every is not None else 'neither'}")
  if every is not None:
    every = _int(owner, "every", every, 1)
  if starts is not None:
    if isinstance(starts, (str, bytes)) or not isinstance(starts, Sequence) or not starts:
      raise ValueError(f"{owner}: starts must be a non-empty sequence of ints >= 0 (one per "
                       f"group from the top), got {starts!r}")
    starts = tuple(_int(owner, f"starts[{k}]", s, 0) for k, s in enumerate(starts))
    for k in range(1, len(starts)):
      if starts[k] < starts[k - 1]:
        raise ValueError(f"{owner}: starts must be non-decreasing (a lower group unfreezes "
                         f"after a higher one): group {k} starts at {starts[k]}, before group "
                         f"{k - 1} at {starts[k - 1]}")
  layers_per_group = _int(owner, "layers_per_group", layers_per_group, 1)
  if embeddings not in ("last", "with_bottom", "never"):
    raise ValueError(f"{owner}: embeddings must be 'last', 'with_bottom' or 'never', got "
                     f"{embeddings!r}")
  return GradualUnfreezing(every, starts, layers_per_group, embeddings)


@dataclasses.dataclass(frozen=True)
class BackboneRamp(LayerSchedule):
  """See :func:`backbone_ramp`."""

  span: int
  start: int
  delay: int

  def windows(self, place, distance, depth):
    if place.kind in ("head", "ratio") or distance is None:
      return ((0, 0),)
    return ((self.start + self.delay * (distance - 1), self.span),)


def backbone_ramp(span: int, *, start: int = 0, delay: int = 0) -> BackboneRamp:
  """Lightning's backbone fine-tuning: everything below the head ramps from 0 to its ratio.

  The head (and fixed-ratio overrides) trains at its ratio from step 0; a place
  at distance ``k >= 1`` from the top of its stack starts at
  ``start + delay * (k - 1)`` and its multiplier grows linearly to 1 over
  ``span`` steps (per-layer warmup with ``delay > 0``).

  >>> sched = backbone_ramp(1000, start=500)

  Args:
    span: the length of the ramp in steps, an int >= 0 (0: a switch).
    start: the step the top layer's ramp begins, an int >= 0.
    delay: steps between the ramps of two consecutive layers, an int >= 0.

  Returns:
    A :class:`LayerSchedule`.
  """
  owner = "backbone_ramp"
  return BackboneRamp(_int(owner, "span", span, 0), _int(owner, "start", start, 0),
                      _int(owner, "delay", delay, 0))


@dataclasses.dataclass(frozen=True)
class Freeze(LayerSchedule):
  """See :func:`freeze`."""

  what: tuple[Any, ...]
  until: int | None
  keep_state: bool

  def chosen(self, place: Placement, distance: int | None, depth: int | None) -> bool:
    del distance, depth
    for item in self.what:
      if callable(item) and bool(item(place)):
        return True
      if isinstance(item, str) and item == place.kind:
        return True
      if isinstance(item, int) and place.kind == "layer" and place.layer == item:
        return True
    return False

  def windows(self, place, distance, depth):
    if not self.chosen(place, distance, depth):
      return ((0, 0),)
    return ((NEVER if self.until is None else self.until, 0),)

  def frozen_for_good(self, place, distance, depth):
    return not self.keep_state and self.until is None and self.chosen(place, distance, depth)


def freeze(what: Any, *, until: int | None = None, keep_state: bool = True) -> Freeze:
  """A ratio of exactly 0 for the chosen places: for the whole run, or until a step.

  ``what`` says which places, in one argument: ``"embedding"``, ``"head"``,
  ``"layer"`` (a kind), a layer index (an int; a stacked leaf's slices each
  count), a function ``Placement -> bool``, or a list of those (any of them).

  >>> bottom_half = freeze(lambda p: p.kind == 'embedding' or (
  ...     p.kind == 'layer' and p.layer < 6), keep_state=False)

  Args:
    what: the places to freeze (see above).
    until: the step they start training (``None``: never).
    keep_state: ``False`` (only with ``until=None``): the inner optimizer keeps
      no state for leaves frozen for good (it runs under ``optax.masked``).

  Returns:
    A :class:`LayerSchedule`.
  """
  owner = "freeze"
  items = tuple(what) if isinstance(what, (list, tuple)) else (what,)
  for item in items:
    ok = (callable(item) or item in ("embedding", "head", "layer") or (
        isinstance(item, (int, np.integer)) and not isinstance(item, bool) and item >= 0))
    if not ok:
      raise ValueError(
          f"freeze: what must be 'embedding', 'head', 'layer', a layer index (an int >= 0), a "
          f"function Placement -> bool, or a list of those; got {item!r}")
  items = tuple(int(x) if isinstance(x, np.integer) else x for x in items)
  if until is not None:
    until = _int(owner, "until", until, 0)
  if not isinstance(keep_state, (bool, np.bool_)):
    raise ValueError(f"{owner}: keep_state must be a bool, got {keep_state!r}")
  if not keep_state and until is not None:
    raise ValueError(f"{owner}: keep_state=False drops the optimizer state of the frozen "
                     f"leaves, so they cannot start training: it needs until=None, got "
                     f"until={until!r}")
  return Freeze(items, until, bool(keep_state))


def check(owner: str, schedule: Any) -> None:
  """Raises unless ``schedule`` is ``None`` or a :class:`LayerSchedule`."""
  if schedule is not None and not isinstance(schedule, LayerSchedule):
    raise TypeError(
        f"{owner}: layer_schedule must be None or an optax_ldl layer schedule "
        "(optax_ldl.gradual_unfreezing(...), optax_ldl.backbone_ramp(...), "
        f"optax_ldl.freeze(...), or a product of them), got {schedule!r}")


def multiplier(step: Any, windows: Any) -> Any:
  """The multipliers at ``step`` of windows ``[..., parts, 2]`` (the product over parts)."""
  windows = np.asarray(windows, np.int64)
  starts = jnp.asarray(np.minimum(windows[..., 0], NEVER), jnp.int32)
  spans = np.maximum(windows[..., 1], 1).astype(np.float32)
  since = jnp.clip(jnp.asarray(step, jnp.int32) - starts, -1, jnp.asarray(spans, jnp.int32))
  return jnp.prod(jnp.clip((since + 1).astype(jnp.float32) / spans, 0.0, 1.0), axis=-1)


def leaf_windows(schedule: LayerSchedule, layer_map: LayerMap, tree: Any
                 ) -> dict[str, np.ndarray]:
  """Path name -> its windows ``[parts, 2]`` (a stacked leaf: ``[slices, parts, 2]``)."""
  out = {}
  for name, x in names_and_leaves(tree):
    place = layer_map[name]
    depth = dict(layer_map.depths).get(place.stack)
    if place.axis is None:
      out[name] = np.asarray(schedule.windows(place, layer_map.exponent(name), depth))
      continue
    assert place.layer is not None
    out[name] = np.asarray([
        schedule.windows(Placement("layer", place.stack, place.layer + j), layer_map.exponent(
            name, j), depth) for j in range(int(np.shape(x)[place.axis]))])
  return out


def frozen_names(schedule: LayerSchedule, layer_map: LayerMap, tree: Any) -> set[str]:
  """The leaves frozen for good that keep no optimizer state (every slice of a stacked one)."""
  out = set()
  for name, x in names_and_leaves(tree):
    place = layer_map[name]
    depth = dict(layer_map.depths).get(place.stack)
    if place.axis is None:
      frozen = schedule.frozen_for_good(place, layer_map.exponent(name), depth)
    else:
      assert place.layer is not None
      frozen = all(schedule.frozen_for_good(
          Placement("layer", place.stack, place.layer + j), layer_map.exponent(name, j), depth)
          for j in range(int(np.shape(x)[place.axis])))
    if frozen:
      out.add(name)
  return out


def layer_map_for(owner: str, layer_map: LayerMap | None) -> LayerMap:
  """The plan's layer map; an error when a custom rule (ratios, no places) made the plan."""
  if layer_map is None:
    raise ValueError(
        f"{owner}: layer_schedule reads where each parameter sits, but set_param_lr_fun (a "
        "custom rule) gives ratios, not places. Drop set_param_lr_fun and place the "
        "parameters with layers=optax_ldl.path_layers(params) or "
        "layers=optax_ldl.trace_layers(fn, params, *example_args).")
  return layer_map


def factors(windows: dict[str, np.ndarray], step: Any) -> dict[str, Any]:
  """Path name -> its multiplier at ``step`` (a vector for a stacked leaf), one op per window."""
  seen: dict[bytes, Any] = {}
  out = {}
  for name, w in windows.items():
    key = w.tobytes() + bytes(str(w.shape), "ascii")
    if key not in seen:
      seen[key] = multiplier(step, w)
    out[name] = seen[key]
  return out


def window_text(windows: np.ndarray) -> str:
  """When a leaf trains, for ``describe``: ``"from 200"``, ``"ramp 100..199"``, ``"never"``, ..."""
  if windows.ndim == 3:  # a stacked leaf: one per slice.
    return "[" + ", ".join(window_text(w) for w in windows) + "]"
  parts = []
  for start, span in windows:
    if start >= NEVER:
      return "never"
    if span > 1:
      parts.append(f"ramp {start}..{start + span - 1}")
    elif start > 0:
      parts.append(f"from {start}")
  return " x ".join(parts) or "always"
