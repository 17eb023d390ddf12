"""Each stack's depth: the n_layers argument read, matched to the stacks, checked on the tree.

The last phase of ``path_layers`` before the placements: a depth per stack,
from ``n_layers`` (an int, ``{stack prefix: depth}`` or ``None``) or from the
tree (the stacked axis length, or the top layer index + 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.core  # jax.core.Tracer: named for type checkers.
import numpy as np

from optax_ldl._src.path_rule.leaves import FoundStack


def n_layers_arg(owner: str, n_layers: Any) -> int | dict[str, int] | None:
  """``n_layers`` as None, an int >= 1 or a dict; a traced value is ignored (None)."""
  if n_layers is None or isinstance(n_layers, jax.core.Tracer):
    return None
  if isinstance(n_layers, Mapping):
    out = {}
    for k, v in n_layers.items():
      if not isinstance(k, str):
        raise TypeError(f"{owner}: n_layers dict keys must be stack prefixes (str), got {k!r}")
      out[k] = _one_n(owner, v, f"n_layers[{k!r}]")
    return out
  return _one_n(owner, n_layers, "n_layers")


def _one_n(owner: str, v: Any, what: str) -> int:
  if isinstance(v, bool) or not (isinstance(v, (int, np.integer)) or (
      hasattr(v, "shape") and np.shape(v) == () and np.issubdtype(np.asarray(v).dtype,
                                                                   np.integer))):
    raise TypeError(
        f"{owner}: {what} must be an int >= 1, a dict {{stack prefix: int}} or None; "
        f"got {v!r}"
    )
  n = int(np.asarray(v))
  if n < 1:
    raise ValueError(f"{owner}: {what} must be >= 1, got {n}")
  return n


def set_depths(owner: str, stacks: dict[str, FoundStack], n_arg: int | dict[str, int] | None,
               notes: list[str]) -> None:
  """Sets each stack's ``depth``; a note when ``n_layers`` differs from what the tree shows.

  Raises:
    ValueError: one ``n_layers`` for stacks of different depths, a dict that
      misses or does not match a stack, a stacked axis of another length, or a
      layer index above ``n_layers``.
  """
  shown = {s: (st.length if st.length is not None else max(st.layers.values()) + 1)
           for s, st in stacks.items()}
  if isinstance(n_arg, dict):
    given = _match_depths(owner, n_arg, list(stacks))
  elif isinstance(n_arg, int):
    if len(set(shown.values())) > 1:
      raise ValueError(
          f"{owner}: n_layers={n_arg} is one number, but the tree has stacks of different "
          f"depths: {shown}. Pass n_layers as a dict {{stack prefix: depth}} (e.g. "
          f"{ {s.split('/')[-2] if '/' in s else s: d for s, d in shown.items()} }) or "
          "n_layers=None to infer each stack's depth."
      )
    given = dict.fromkeys(stacks, n_arg)
  else:
    given = {}
  for s, st in stacks.items():
    n = given.get(s)
    if n is None:
      st.depth = shown[s]
      continue
    if st.length is not None:
      if n != st.length:
        raise ValueError(
            f"{owner}: n_layers={n} but the stacked leaves under {s!r} hold {st.length} "
            f"layers on their axis (e.g. {sorted(st.stacked)[0]!r}); pass "
            f"n_layers={st.length}, or give the axis with stacked={{'path/prefix': axis}}."
        )
      st.depth = n
      continue
    top = max(st.layers.values())
    if top > n:
      path = min(p for p, i in st.layers.items() if i == top)
      raise ValueError(
          f"{owner}: parameter {path!r} is in layer {top}, but n_layers={n} is smaller, which "
          "would give it a ratio above 1 (layers are numbered from 0); pass "
          f"n_layers >= {top + 1} (the tree has {top + 1} layers"
          f"{'' if len(stacks) == 1 else f' in {s!r}'})."
      )
    if n != top + 1:
      where = "" if len(stacks) == 1 else f" in {s!r}"
      extra = (f" (layer {n} gets ratio 1, as in PaddleNLP)" if top == n else
               f" (the top layer gets decay**{n - top}, not decay)")
      notes.append(
          f"n_layers={n} but the tree shows {top + 1} layers{where}{extra}. If the optimizer "
          f"sees the whole model, pass n_layers={top + 1} (or None); if it sees a part of it "
          "(nnx.Optimizer(wrt=...), adapters, frozen top layers), keep n_layers or pass "
          "layers=optax_ldl.path_layers(<the whole model's params>), which silences this")
    st.depth = n


def _match_depths(owner: str, n_arg: dict[str, int], names: list[str]) -> dict[str, int]:
  """The depth of each stack ``names`` from ``n_arg`` (the longest matching key wins)."""
  def matches(key: str, stack: str) -> bool:
    if key == "" or key == stack:
      return True
    return f"/{key}/" in f"/{stack}/" or stack.startswith(key + "/")

  out: dict[str, int] = {}
  for s in names:
    keys = [k for k in n_arg if matches(k, s)]
    if not keys:
      raise ValueError(
          f"{owner}: n_layers={n_arg} gives no depth for the stack {s!r}; its stacks are "
          f"{sorted(names)} (a key may be any run of keys of a stack's path, e.g. 'encoder')."
      )
    out[s] = n_arg[max(keys, key=len)]
  unused = [k for k in n_arg if not any(matches(k, s) for s in names)]
  if unused:
    raise ValueError(
        f"{owner}: n_layers keys {unused} match no stack; the stacks are {sorted(names)}."
    )
  return out

