"""``LayerMap``: where every parameter sits (embedding stage, layer i of a stack, head).

A layer map is data: it is produced by :func:`optax_ldl.trace_layers` (from the
model's data flow) or by the path rule (from parameter names), read by
:class:`optax_ldl.LayerDecay` to give each parameter its learning-rate ratio,
printed by :func:`optax_ldl.describe`, and can be stored next to a checkpoint
(:meth:`LayerMap.to_json`).

With decay :math:`\\alpha` and a stack ``s`` of depth :math:`L_s` (its layers
numbered ``0 .. L_s - 1`` in execution order):

* layer ``i`` of stack ``s``: :math:`\\alpha^{L_s - i}`;
* the embedding stage of stack ``s`` (what runs before its first layer):
  :math:`\\alpha^{L_s + 1}`;
* the head (what runs after the last layer: final norm, pooler, heads): 1;
* a fixed ratio (an override): that ratio.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("embedding", "layer", "head", "ratio")


@dataclasses.dataclass(frozen=True, order=True)
class Placement:
  """Where one parameter sits.

  Attributes:
    kind: ``"embedding"`` (before the first layer of ``stack``), ``"layer"``,
      ``"head"`` (after the last layer: ratio 1), or ``"ratio"`` (a fixed
      ``ratio``, set by an override).
    stack: the stack (tower) the parameter belongs to, ``""`` when the model
      has one stack; for ``"head"`` and ``"ratio"`` it is informative only.
    layer: for ``"layer"``, the layer's index in its stack (from 0, in
      execution order); for a stacked leaf, the layer of its slice 0.
    axis: the axis along which the leaf stacks several consecutive layers
      (scanned or vmapped layers): slice ``j`` is layer ``layer + j``; ``None``
      for an ordinary leaf.
    ratio: for ``"ratio"``, the ratio.
  """

  kind: str
  stack: str = ""
  layer: int | None = None
  axis: int | None = None
  ratio: float | None = None

  def __post_init__(self):
    # NumPy and JAX scalars are accepted wherever Python numbers are, and stored as those.
    for field in ("layer", "axis"):
      value = _as_int(getattr(self, field))
      if value is not None:
        object.__setattr__(self, field, value)
    ratio = _as_float(self.ratio)
    if ratio is not None:
      object.__setattr__(self, "ratio", ratio)
    if self.kind not in KINDS:
      raise ValueError(f"Placement: kind must be one of {KINDS}, got {self.kind!r}")
    if not isinstance(self.stack, str):
      raise TypeError(f"Placement: stack must be a str, got {self.stack!r}")
    if self.kind == "layer":
      if not _is_int(self.layer) or int(self.layer) < 0:  # pyright: ignore[reportArgumentType]
        raise ValueError(
            f"Placement: a 'layer' placement needs layer, an int >= 0; got {self.layer!r}"
        )
    elif self.layer is not None:
      raise ValueError(f"Placement: layer is only for kind 'layer', got kind {self.kind!r}")
    if self.axis is not None and (self.kind != "layer" or not _is_int(self.axis)
                                  or self.axis < 0):
      raise ValueError(
          "Placement: axis (a stacked leaf's layer axis) must be an int >= 0 on a "
          f"'layer' placement; got axis={self.axis!r} with kind {self.kind!r}"
      )
    if self.kind == "ratio":
      if not isinstance(self.ratio, (int, float)) or isinstance(self.ratio, bool) or not (
          0.0 <= float(self.ratio) < float("inf")
      ):
        raise ValueError(
            f"Placement: a 'ratio' placement needs ratio, a finite number >= 0; got "
            f"{self.ratio!r}"
        )
    elif self.ratio is not None:
      raise ValueError(f"Placement: ratio is only for kind 'ratio', got kind {self.kind!r}")

  def __str__(self) -> str:
    stack = f"{self.stack}:" if self.stack else ""
    if self.kind == "layer":
      where = f"{stack}{self.layer}"
      return where if self.axis is None else f"{where}+ (stacked, axis {self.axis})"
    if self.kind == "embedding":
      return f"{stack}embedding"
    if self.kind == "ratio":
      return f"ratio {self.ratio:g}"
    return "head"


def several_stacks(placements: Iterable[Placement | None]) -> bool:
  """Whether the layers and embeddings among ``placements`` belong to more than one stack."""
  return len({p.stack for p in placements
              if p is not None and p.kind in ("layer", "embedding")}) > 1


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _as_int(x: Any) -> int | None:
  """``x`` as a Python int when it is an integer scalar (Python, NumPy or JAX), else None."""
  if x is None or isinstance(x, (bool, np.bool_)):
    return None
  if isinstance(x, (int, np.integer)):
    return int(x)
  if isinstance(x, jax.Array) and x.shape == () and jnp.issubdtype(x.dtype, jnp.integer):
    try:
      return int(x)
    except jax.errors.ConcretizationTypeError:
      return None
  return None


def _as_float(x: Any) -> float | None:
  """``x`` as a Python float when it is a real scalar (Python, NumPy or JAX), else None."""
  if x is None or isinstance(x, (bool, np.bool_)):
    return None
  if isinstance(x, (int, float, np.integer, np.floating)):
    return float(x)
  if isinstance(x, jax.Array) and x.shape == () and (
      jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
    try:
      return float(x)
    except jax.errors.ConcretizationTypeError:
      return None
  return None


@dataclasses.dataclass(frozen=True)
class LayerMap(Mapping[str, Placement]):
  """Every parameter's :class:`Placement`, and the depth of every stack.

  A read-only mapping ``path name -> Placement`` (path names are the tree
  paths, keys joined by ``/``, as ``jax.tree_util.keystr(path, simple=True,
  separator='/')``). Frozen, hashable, comparable and picklable; ``str()``
  gives a table, :meth:`to_json` / :meth:`from_json` a storable form.

  >>> lm = LayerMap.build(
  ...     {'embed/table': Placement('embedding'),
  ...      'layers_0/w': Placement('layer', layer=0),
  ...      'layers_1/w': Placement('layer', layer=1),
  ...      'head/w': Placement('head')},
  ...     depths={'': 2})
  >>> [round(lm.ratio(p, 0.5), 4) for p in lm]
  [0.125, 1.0, 0.25, 0.5]

  Attributes:
    placements: ``(path, Placement)`` pairs, sorted by path.
    depths: ``(stack, depth)`` pairs, sorted by stack: the number of layers.
    evidence: ``(path, reason)`` pairs: why each leaf was placed where it is
      (the rule-table row and the key that matched, or the data-flow unit), as
      the path rule and ``trace_layers`` record it; :meth:`why` reads it. Not
      part of the map's equality: two maps that place alike are equal.
  """

  placements: tuple[tuple[str, Placement], ...]
  depths: tuple[tuple[str, int], ...]
  evidence: tuple[tuple[str, str], ...] = ()

  @classmethod
  def build(
      cls,
      placements: Mapping[str, Placement],
      depths: Mapping[str, int] | None = None,
      evidence: Mapping[str, str] | None = None,
  ) -> LayerMap:
    """A map from ``{path: Placement}``; ``depths`` default to the layers present.

    ``evidence``: optionally ``{path: why it is placed there}``.
    """
    for path, place in placements.items():
      if not isinstance(path, str) or not isinstance(place, Placement):
        raise TypeError(
            f"LayerMap: placements must map path names (str) to Placement, got "
            f"{path!r}: {place!r}"
        )
    if depths is None:
      found: dict[str, int] = {}
      for place in placements.values():
        if place.kind == "layer" and place.axis is None:
          assert place.layer is not None
          found[place.stack] = max(found.get(place.stack, 0), place.layer + 1)
      depths = found
    given: dict[str, Any] = dict(depths)
    depths = {stack: d if (d := _as_int(depth)) is not None else depth
              for stack, depth in given.items()}
    for stack, depth in depths.items():
      if not isinstance(stack, str) or not _is_int(depth) or depth < 1:
        raise ValueError(
            f"LayerMap: depths must map stack names (str) to ints >= 1, got {stack!r}: "
            f"{depth!r}"
        )
    for path, place in placements.items():
      if place.kind in ("layer", "embedding") and place.stack not in depths:
        raise ValueError(
            f"LayerMap: {path!r} is placed in stack {place.stack!r}, which has no depth; "
            f"depths: {dict(depths)}"
        )
      if place.kind == "layer" and place.axis is None:
        assert place.layer is not None
        if place.layer >= depths[place.stack]:
          raise ValueError(
              f"LayerMap: {path!r} is layer {place.layer} of stack {place.stack!r}, "
              f"whose depth is {depths[place.stack]} (layers 0..{depths[place.stack] - 1})"
          )
    notes = {} if evidence is None else dict(evidence)
    for path, why in notes.items():
      if path not in placements or not isinstance(why, str):
        raise TypeError(f"LayerMap: evidence must map placed paths to str, got {path!r}: "
                        f"{why!r}")
    return cls(tuple(sorted(placements.items())), tuple(sorted(depths.items())),
               tuple(sorted(notes.items())))

  # Mapping interface.
  def __getitem__(self, path: str) -> Placement:
    return self._index[path]

  def __iter__(self) -> Iterator[str]:
    return (path for path, _ in self.placements)

  def __len__(self) -> int:
    return len(self.placements)

  def __hash__(self) -> int:
    return hash((self.placements, self.depths))

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, LayerMap):
      return NotImplemented
    return self.placements == other.placements and self.depths == other.depths

  @property
  def _index(self) -> dict[str, Placement]:
    index = self.__dict__.get("_index_cache")
    if index is None:
      index = dict(self.placements)
      object.__setattr__(self, "_index_cache", index)
    return index

  def __getstate__(self) -> dict[str, Any]:
    return {"placements": self.placements, "depths": self.depths, "evidence": self.evidence}

  def __setstate__(self, state: dict[str, Any]) -> None:
    object.__setattr__(self, "placements", state["placements"])
    object.__setattr__(self, "depths", state["depths"])
    object.__setattr__(self, "evidence", state.get("evidence", ()))

  def why(self, path: str) -> str:
    """Why ``path`` is placed where it is (``""`` when the map records no evidence)."""
    if path not in self:
      raise KeyError(path)
    return dict(self.evidence).get(path, "")

  def depth(self, stack: str = "") -> int:
    """The number of layers of ``stack``."""
    return dict(self.depths)[stack]

  def exponent(self, path: str, slice_index: int = 0) -> int | None:
    """The power of the decay this parameter gets, ``None`` for a fixed ratio.

    For a stacked leaf, ``slice_index`` is the slice along its axis.
    """
    place = self[path]
    if place.kind == "head":
      return 0
    if place.kind == "ratio":
      return None
    depth = self.depth(place.stack)
    if place.kind == "embedding":
      return depth + 1
    assert place.layer is not None
    return depth - (place.layer + slice_index)

  def ratio(self, path: str, decay: Any, slice_index: int = 0) -> Any:
    """The lr ratio of ``path`` (slice ``slice_index`` of a stacked leaf)."""
    exponent = self.exponent(path, slice_index)
    if exponent is None:
      return self[path].ratio
    return 1.0 if exponent == 0 else decay**exponent

  def __str__(self) -> str:
    rows = [(path, str(place)) for path, place in self.placements]
    width = max([len("path")] + [len(p) for p, _ in rows])
    depths = ", ".join(f"{s or '(single stack)'}: {d}" for s, d in self.depths) or "none"
    lines = [f"LayerMap ({len(rows)} leaves; layers per stack: {depths})",
             f"{'path'.ljust(width)}  placement", f"{'-' * width}  ---------"]
    lines += [f"{p.ljust(width)}  {w}" for p, w in rows]
    return "\n".join(lines)

  def __repr__(self) -> str:
    return f"LayerMap(<{len(self.placements)} leaves>, depths={dict(self.depths)!r})"

  def to_json(self) -> str:
    """A JSON string (store it next to a checkpoint); :meth:`from_json` reads it back."""
    return json.dumps({
        "placements": {
            path: {k: v for k, v in dataclasses.asdict(place).items() if v not in (None, "")}
            for path, place in self.placements
        },
        "depths": dict(self.depths),
        **({"evidence": dict(self.evidence)} if self.evidence else {}),
    }, indent=1, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> LayerMap:
    """The map :meth:`to_json` wrote."""
    data = json.loads(text)
    return cls.build(
        {path: Placement(**fields) for path, fields in data["placements"].items()},
        data["depths"],
        data.get("evidence"),
    )
