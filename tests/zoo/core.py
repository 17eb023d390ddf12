"""The zoo's data: a model entry, the hand-written placement rules, parameter filling."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_ldl._src.layer_map import Placement

# A rule: (regex matched against the whole path name, placement or a function of the match).
Rule = tuple[str, "Placement | Callable[[re.Match[str]], Placement]"]


def path_name(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/")


def float_paths(params) -> dict[str, Any]:
  """``{path name: leaf}`` for every floating-point leaf."""
  return {
      path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
      if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)
  }


# Placement helpers used by the hand-written rules.
def emb(stack: str = "") -> Placement:
  return Placement("embedding", stack)


HEAD = Placement("head")


def layer(stack: str = "", group: str = "i", offset: int = 0):
  """The layer whose index is the regex group ``group`` (plus ``offset``)."""
  return lambda m: Placement("layer", stack, layer=int(m[group]) + offset)


def nested(stack: str, per_stage: Sequence[int], stage: str = "s", block: str = "b"):
  """Blocks numbered ``stage/block``, flattened straight through the stages in order."""
  starts = np.cumsum([0, *per_stage])
  return lambda m: Placement("layer", stack, layer=int(starts[int(m[stage])]) + int(m[block]))


def stacked(stack: str = "", axis: int = 0, first: int = 0) -> Placement:
  return Placement("layer", stack, layer=first, axis=axis)


@dataclasses.dataclass(frozen=True)
class Built:
  params: Any
  fn: Callable[..., Any]
  args: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class ZooModel:
  """One zoo entry.

  Attributes:
    name: a short id (``library_model``).
    make: builds the model: ``() -> Built(params, fn, args)``; ``fn(params, *args)`` runs it.
    rules: the hand-written placements: ``(regex, Placement or match -> Placement)`` rows; the
      first row whose regex matches the whole path name places the leaf.
    depths: ``{stack: number of layers}``.
    path_rule: ``"exact"`` (the default path rule must reproduce the expectation) or
      ``"exact_or_raise"`` (it may instead raise a ``ValueError``).
    exercises: what the entry is for (documentation).
    refusal: a regex: ``trace_layers`` without ``overrides`` must raise a ``ValueError`` that
      matches it (a documented refusal, such as ALBERT's shared layer); empty: it must not.
    overrides: the ``overrides=`` passed to ``trace_layers`` (the fix a refusal names); the
      expectation is the placement with them.
  """

  name: str
  make: Callable[[], Built]
  rules: tuple[Rule, ...]
  depths: Mapping[str, int]
  path_rule: str = "exact_or_raise"
  exercises: str = ""
  refusal: str = ""
  overrides: Mapping[str, Any] | None = None

  def __post_init__(self):
    assert self.path_rule in ("exact", "exact_or_raise"), self.path_rule

  def build(self) -> Built:
    return _build(self.name, self.make)

  @property
  def expected(self) -> dict[str, Placement]:
    """``{path name: Placement}`` for each float leaf that a rule places."""
    return place(self.rules, float_paths(self.build().params))

  def unused_rules(self) -> list[str]:
    paths = float_paths(self.build().params)
    return [rx for rx, _ in self.rules if not any(re.fullmatch(rx, p) for p in paths)]


_CACHE: dict[str, Built] = {}


def _build(name: str, make: Callable[[], Built]) -> Built:
  if name not in _CACHE:
    # Library code broadcasts implicitly; the test suite sets rank promotion to 'raise'.
    with jax.numpy_rank_promotion("allow"):
      built = make()
    _CACHE[name] = dataclasses.replace(built, fn=allow_rank_promotion(built.fn))
  return _CACHE[name]


def place(rules: Sequence[Rule], paths) -> dict[str, Placement]:
  out = {}
  for path in paths:
    for rx, where in rules:
      m = re.fullmatch(rx, path)
      if m:
        out[path] = where if isinstance(where, Placement) else where(m)
        break
  return out


def allow_rank_promotion(fn):
  """The library code broadcasts implicitly; the test suite sets rank promotion to 'raise'."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with jax.numpy_rank_promotion("allow"):
      return fn(*args, **kwargs)

  return wrapped


def arrays(out):
  """A model output (ModelOutput, dataclass, dict, tuple) as nested tuples/dicts of arrays."""
  if isinstance(out, Mapping):
    return {str(k): arrays(v) for k, v in out.items() if v is not None}
  if isinstance(out, (tuple, list)):
    return tuple(arrays(v) for v in out if v is not None)
  return out


def fill(shapes, seed: int = 0):
  """Random values for a tree of ``ShapeDtypeStruct`` (norm scales near 1, the rest N(0, 0.02)).

  Cheaper than running a library's eager initialiser; the placements do not depend on values.
  """
  rng = np.random.default_rng(seed)

  def one(path, s):
    name = path_name(path)
    if not jnp.issubdtype(s.dtype, jnp.floating):
      return jnp.zeros(s.shape, s.dtype)
    if re.search(r"(^|/)var(_ema)?(/|$)", name):  # running variances must be positive
      return jnp.ones(s.shape, s.dtype)
    base = 1.0 if re.search(r"(scale|weight|weight_g)$", name) and "embed" not in name else 0.0
    return jnp.asarray(base + 0.02 * rng.standard_normal(s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(one, shapes)
