"""Stacked (scanned) layers: which leaves hold every layer in one array, and along which axis.

``flax.linen.scan`` (``variable_axes={'params': 0}``), ``nnx.scan``/``nnx.vmap``
and MaxText (``decoder/layers/...``, ``param_scan_axis=1``) keep all the layers
of a transformer in one array per weight. The layer-wise ratio of such a leaf is
a vector ``r[i]`` (the ratio layer ``i`` would get unrolled), broadcast along
the stacked axis.

Which leaves are stacked is set by the ``stacked`` argument of
:func:`optax_ldl.adamwdl` (and :class:`optax_ldl.LayerDecay`). ``path_layers``
reads it with the whole tree in view (:func:`explicit_stacks`,
:func:`scan_bodies`, :func:`auto_stacks`); under a custom ``set_param_lr_fun``,
:func:`leaf_spec` reads it leaf by leaf. Both read stacks from the names through
one function, :func:`~optax_ldl._src.path_rule.names.stack_container` (the
``"stack"`` rows of the rule table):

* ``"auto"`` (default): a leaf under a container the table names a stack
  (``layers``, ``blocks``, ``scan``, ``scanned_layers``, ``ScanBlock_0``, ...: a
  key not followed by a numeric key, in a path with no numbered layer) is stacked
  along axis 0. Leaf by leaf, its axis 0 must have length ``n_layers`` (any
  length when it is ``None``); the whole-tree rule further asks for a tree
  without numbered layers and one axis-0 length per container. Only used when
  the layer-wise decay is not the number 1.
* ``None`` or ``False``: no leaf is stacked.
* a mapping ``{path_prefix: axis}``: leaves whose path name (keys joined by
  ``/``) is the prefix or starts with ``prefix + '/'`` are stacked along
  ``axis`` (the longest matching prefix wins; an axis of ``None`` unstacks).
* a callable ``path_name -> axis | None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.core  # jax.core.Tracer: named for type checkers.
import numpy as np

from optax_ldl._src.path_rule.leaves import FoundStack, Leaf, Problems, one_per_member, stack_named
from optax_ldl._src.path_rule.names import stack_container, tower_key
from optax_ldl._src.path_rule.table import RULES, rows

ACCEPTED = (
    "'auto', None/False, a dict {path prefix (keys joined by '/'): axis (int)}, "
    "or a function path_name -> axis (int) or None"
)


def check_stacked_arg(owner: str, stacked: Any) -> None:
  """Raises ``TypeError`` if ``stacked`` is not one of the accepted forms."""
  if stacked is None or stacked is False or stacked == "auto" or callable(stacked):
    if isinstance(stacked, str) and stacked != "auto":
      raise TypeError(f"{owner}: stacked must be {ACCEPTED}; got {stacked!r}")
    return
  if isinstance(stacked, Mapping):
    for prefix, axis in stacked.items():
      if not isinstance(prefix, str) or not (
          axis is None or (isinstance(axis, (int, np.integer)) and not isinstance(axis, bool))
      ):
        raise TypeError(
            f"{owner}: stacked must be {ACCEPTED}; the entry {prefix!r}: {axis!r} "
            "is not a str prefix mapped to an int axis (or None)."
        )
    return
  raise TypeError(f"{owner}: stacked must be {ACCEPTED}; got {stacked!r}")


def _lookup_prefix(stacked: Mapping[str, Any], name: str) -> tuple[bool, Any, str]:
  best = None
  for prefix in stacked:
    p = prefix.rstrip("/")
    if p == "" or name == p or name.startswith(p + "/"):
      if best is None or len(p) > len(best.rstrip("/")):
        best = prefix
  if best is None:
    return False, None, ""
  return True, stacked[best], best.rstrip("/")


def explicit_axis(stacked: Any, name: str, shape: tuple[int, ...],
                  n_given: int | None) -> tuple[int, str] | None:
  """``(axis, container)`` for an explicitly stacked leaf, else ``None``."""
  if stacked is None or stacked is False or isinstance(stacked, str):
    return None
  if isinstance(stacked, Mapping):
    found, axis, prefix = _lookup_prefix(stacked, name)
    if not found or axis is None:
      return None
    source = f"stacked[{prefix!r}]"
    container = prefix if prefix and prefix != name else _parent(name)
  else:
    axis = stacked(name)
    if axis is None or axis is False:
      return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
      raise TypeError(
          f"stacked({name!r}) returned {axis!r}; the function must return an int axis or None."
      )
    source = f"stacked({name!r})"
    container = stack_container(name) or _parent(name)
  ndim = len(shape)
  if not -ndim <= axis < ndim:
    raise ValueError(
        f"parameter {name!r} of shape {tuple(shape)} is stacked along axis {axis} "
        f"({source}), which is out of range for its {ndim} dimension(s); the axis "
        f"must be in [{-ndim}, {ndim}) (n_layers={n_given}). stacked accepts {ACCEPTED}."
    )
  axis = int(axis) % ndim
  if n_given is not None and shape[axis] != n_given:
    raise ValueError(
        f"parameter {name!r} of shape {tuple(shape)} is stacked along axis {axis} "
        f"({source}), whose length {shape[axis]} is not n_layers={n_given}; "
        "the stacked axis must hold one slice per layer. Fix the axis or "
        f"n_layers; stacked accepts {ACCEPTED}."
    )
  return axis, container


def _parent(name: str) -> str:
  return name.rsplit("/", 1)[0] if "/" in name else ""


# ----------------------------------------------------------------------------------------
# One leaf at a time (a custom set_param_lr_fun).
# ----------------------------------------------------------------------------------------


class StackSpec(NamedTuple):
  """How one leaf is stacked.

  Attributes:
    axis: the stacked axis, non-negative.
    length: the leaf's length along ``axis`` (``n_layers``).
    key_index: the index (in the name split by ``/``) of the key holding the
      stack, which the unrolled name replaces by ``layers_i``; ``None`` if no
      key of the path is a stack key.
  """

  axis: int
  length: int
  key_index: int | None


def _stack_key_index(name: str) -> int | None:
  """The index of the key of ``name`` that holds stacked layers (see ``stack_container``)."""
  container = stack_container(name)
  return len(container.split("/")) - 1 if container else None


def leaf_spec(
    stacked: Any, name: str, shape: tuple[int, ...], n_layers: Any, explicit_only: bool
) -> StackSpec | None:
  """How the leaf ``name`` of ``shape`` is stacked, or ``None``.

  >>> leaf_spec('auto', 'blocks/w', (4, 2, 2), 4, explicit_only=False)
  StackSpec(axis=0, length=4, key_index=0)

  Args:
    stacked: the ``stacked`` argument.
    name: the leaf's path name.
    shape: its shape.
    n_layers: the layer count (an int, or traced).
    explicit_only: ignore ``"auto"`` (the decay is 1, stacking changes nothing).

  Raises:
    ValueError: an explicitly stacked axis out of range for the leaf, or whose
      length is not ``n_layers``.
  """
  if stacked is None or stacked is False:
    return None
  concrete_n = None if n_layers is None or isinstance(n_layers, jax.core.Tracer) else int(n_layers)
  if isinstance(stacked, str):  # "auto"
    if explicit_only or not shape:
      return None
    key_index = _stack_key_index(name)
    if key_index is None:
      return None
    if concrete_n is not None and shape[0] != concrete_n:
      return None
    return StackSpec(0, shape[0], key_index)
  found = explicit_axis(stacked, name, shape, concrete_n)
  if found is None:
    return None
  axis, container = found
  n_tokens = len(name.split("/"))
  if isinstance(stacked, Mapping):  # the unrolled name replaces the prefix's last key.
    n_prefix = len(container.split("/")) if container else 0
    key_index = n_prefix - 1 if 0 < n_prefix < n_tokens else _stack_key_index(name)
  else:
    key_index = _stack_key_index(name)
  return StackSpec(axis, shape[axis], key_index)


def unrolled_name(name: str, spec: StackSpec, i: int) -> str:
  """The name slice ``i`` would have unrolled: the stack key becomes ``layers_i``.

  >>> unrolled_name('params/decoder/layers/mlp/kernel', StackSpec(1, 4, 2), 3)
  'params/decoder/layers_3/mlp/kernel'
  """
  tokens = name.split("/")
  if spec.key_index is None:
    return "/".join(tokens[:-1] + [f"layers_{i}", tokens[-1]])
  tokens[spec.key_index] = f"layers_{i}"
  return "/".join(tokens)


def slice_shape(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
  """``shape`` without ``axis``: the shape of one layer's slice."""
  return tuple(s for j, s in enumerate(shape) if j != axis)


# ----------------------------------------------------------------------------------------
# The whole tree (path_layers' stack phases).
# ----------------------------------------------------------------------------------------


def explicit_stacks(owner: str, leaves: list[Leaf], stacked: Any, n_given: int | None,
                    stacks: dict[str, FoundStack]) -> list[Leaf]:
  """Stacks the leaves that ``stacked={prefix: axis}`` (or a function) names; returns the rest.

  Raises:
    ValueError: an axis out of range or of the wrong length, or leaves of one
      container that disagree on the number of layers.
  """
  explicit: dict[str, tuple[int, str]] = {}
  for leaf in leaves:  # every axis checked before the lengths are compared.
    spec = explicit_axis(stacked, leaf.path, leaf.shape, n_given)
    if spec is not None:
      explicit[leaf.path] = spec
  for leaf in leaves:
    if leaf.path in explicit:
      axis, container = explicit[leaf.path]
      st = stack_named(stacks, container)
      length = leaf.shape[axis]
      if st.length is not None and st.length != length:
        raise ValueError(
            f"{owner}: the stacked leaves under {container!r} disagree on the number of "
            f"layers: {leaf.path!r} has {length} along axis {axis}, others {st.length}; "
            f"stacked accepts {ACCEPTED}."
        )
      st.length = length
      st.stacked[leaf.path] = axis
      st.why[leaf.path] = f"stacked explicitly: '{container}', {length} layers on axis {axis}"
  return [leaf for leaf in leaves if leaf.path not in explicit]


def _stack_row(container: str) -> str:
  """The name of the ``stack`` row that matches the container's last key."""
  key = container.rsplit("/", 1)[-1]
  return next((r.name for _, r in rows("stack") if r.regex.match(key)), "none")


def _lone_zero_families(layered: list[Leaf]) -> dict[str, list[str]]:
  """Container -> its families whose only member is ``<Name>_0`` (a possible nn.scan body)."""
  families: dict[str, list[Leaf]] = {}
  for lf in layered:
    families.setdefault(lf.match.family, []).append(lf)
  by_container: dict[str, list[str]] = {}
  for family, lfs in families.items():
    row = RULES[lfs[0].match.rule]
    parts = family.split("/")
    if (row.where != "token" or any(lf.match.indices != (0,) for lf in lfs)
        or any(lf.rule_name.split("/")[len(parts) - 1] != parts[-1] + "_0" for lf in lfs)):
      continue
    by_container.setdefault("/".join(parts[:-1]), []).append(family)
  return by_container


def scan_bodies(layered: list[Leaf], rest: list[Leaf], stacked: Any,
                stacks: dict[str, FoundStack], problems: Problems) -> list[Leaf]:
  """Flax ``nn.scan`` bodies read as layer 0: stacks them, or refuses; returns the other leaves.

  ``nn.scan(Body, name='blocks')`` stores every layer in one leaf under
  ``blocks/<Name>_0/...`` (the module the body makes, auto-named ``_0``), so
  ``<Name>_0`` is no layer 0. A family whose only member is ``<Name>_0``, when
  every leaf under its parent container has the same axis-0 length ``n > 1``,
  is such a body: with ``stacked='auto'`` and a container the table knows as a
  stack (``blocks``, ``layers``, ...) it is a stack of ``n`` layers on axis 0;
  otherwise, when the shapes clearly say stacked (several leaves, none 1-D), the
  rule refuses rather than guess between a scanned stack and a 1-layer model.
  With ``stacked=None``/``False`` the caller has said there are no stacks.
  """
  if stacked is None or stacked is False:
    return layered
  stack_rows = [r.regex for _, r in rows("stack")]
  bodies: dict[str, list[Leaf]] = {}
  for container, fams in _lone_zero_families(layered).items():
    inside = [lf for lf in rest
              if container == "" or lf.rule_name.startswith(container + "/")]
    if any(lf.match.kind == "layer" and lf.match.family not in fams for lf in inside):
      continue  # other numbered families under it: not a scan body.
    lengths = {lf.shape[0] if lf.shape else None for lf in inside}
    if (len(lengths) != 1 or None in lengths or (lengths.pop() or 0) < 2
        or not all(lf.plain_keys for lf in inside)):
      continue
    key = container.rsplit("/", 1)[-1]
    if stacked == "auto" and container and any(r.match(key) for r in stack_rows):
      bodies[container] = inside
    elif len(inside) > 1 and all(len(lf.shape) >= 2 for lf in inside):
      members = sorted({f.rsplit("/", 1)[-1] + "_0" for f in fams})
      problems.append((
          f"{container or 'the root'!r} may be an nn.scan stack: its only numbered module "
          f"{'/'.join(members)} has no siblings and every leaf under it has the same axis-0 "
          f"length {inside[0].shape[0]} (a scanned body, or layer 0 of a 1-layer model?); "
          f"give the axis with stacked={{{container!r}: 0}}, or stacked=None for one layer",
          [lf.path for lf in inside]))
      return []
  if not bodies:
    return layered
  taken = {lf.path for lfs in bodies.values() for lf in lfs}
  left = [lf for lf in layered if lf.path not in taken]
  names = list(bodies) + sorted({lf.match.family for lf in left})
  if len(names) > 1:
    towers = [tower_key(n) for n in names]
    if None in towers or len(set(towers)) != len(towers):
      problems.append((
          f"several candidate layer stacks ({', '.join(repr(n) for n in names)}: scanned "
          "bodies and numbered families); which are the model's layers is not clear from "
          "the names", sorted(taken)[:4] + one_per_member([lf.path for lf in left], left)))
      return []
  for container, lfs in bodies.items():
    st = stack_named(stacks, container)
    st.length = lfs[0].shape[0]
    for lf in lfs:
      st.stacked[lf.path] = 0
      st.why[lf.path] = (f"stacked='auto': nn.scan body under '{container}', {st.length} "
                         f"layers on axis 0 (row '{_stack_row(container)}')")
  return left


def auto_stacks(candidates: list[Leaf], stacks: dict[str, FoundStack],
                problems: Problems) -> None:
  """``stacked='auto'`` in a tree without numbered layers: each stack container's leaves.

  A container (``LayerMatch.stack``) whose leaves have plain dict keys and one
  axis-0 length holds that many layers on axis 0; otherwise it is refused.
  """
  groups: dict[str, list[Leaf]] = {}
  for lf in candidates:
    if lf.match.stack:
      groups.setdefault(lf.match.stack, []).append(lf)
  for container, lfs in groups.items():
    lengths = {lf.shape[0] if lf.shape else None for lf in lfs}
    if all(lf.plain_keys for lf in lfs) and len(lengths) == 1 and None not in lengths:
      st = stack_named(stacks, container)
      st.length = lengths.pop()
      for lf in lfs:
        st.stacked[lf.path] = 0
        st.why[lf.path] = (f"stacked='auto': '{container}' holds {st.length} layers on axis 0 "
                           f"(row '{_stack_row(container)}')")
    else:
      why = ("its leaves' axis-0 lengths differ "
             f"({sorted((lf.shape[0] if lf.shape else 'scalar') for lf in lfs)[:6]!s})"
             if all(lf.plain_keys for lf in lfs) else
             "its path has list indices, integer keys or custom pytree nodes")
      problems.append((f"{container!r} may hold scanned layers, but {why}; give the axis "
                       "with stacked={'path/prefix': axis} (or stacked=None)",
                       [lf.path for lf in lfs]))
