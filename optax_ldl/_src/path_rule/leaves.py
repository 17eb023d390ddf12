"""The whole-tree rule's working data: the float leaves as it reads them, the stacks it finds.

:func:`read_leaves` is the first phase of ``path_layers``; the later phases
(stacks, numbered families, depths) fill :class:`FoundStack` records and list
their problems (:data:`Problems`) for one :class:`LayerRuleError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_ldl._src.path_rule.names import classify, static_name
from optax_ldl._src.path_rule.table import FIXES, LayerMatch, LayerRuleError

# (what is wrong, the paths concerned): the rule collects them all, then refuses once.
Problems = list[tuple[str, list[str]]]


@dataclasses.dataclass
class Leaf:
  """One float leaf as the rule reads it."""

  path: str                 # the path name (the LayerMap's key)
  rule_name: str            # what the rule reads (name_dict, timm dots as '/')
  shape: tuple[int, ...]
  plain_keys: bool          # only str dict keys (and NNX's trailing .value)
  match: LayerMatch = LayerMatch("other")


@dataclasses.dataclass
class FoundStack:
  """A stack of layers found in the tree: a numbered family or a stacked container."""

  name: str                           # the family / container path
  anchor: list[str]                   # keys the stack lives under (for the embeddings)
  layers: dict[str, int] = dataclasses.field(default_factory=dict)   # path -> flat index
  stacked: dict[str, int] = dataclasses.field(default_factory=dict)  # path -> axis
  length: int | None = None           # a stacked stack's axis length
  depth: int = 0
  why: dict[str, str] = dataclasses.field(default_factory=dict, compare=False)  # the evidence


def read_leaves(tree: Any, name_dict: Mapping[str, str] | None, owner: str) -> list[Leaf]:
  """The float leaves of ``tree``, each with the name the rule reads and its :func:`classify`."""
  leaves: list[Leaf] = []
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    if not _is_float(x):
      continue
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    leaves.append(Leaf(name, static_name(owner, name_dict, name), tuple(np.shape(x)),
                       _plain_keys(path)))
  _read_dotted_names(leaves)
  for leaf in leaves:
    leaf.match = classify(leaf.rule_name)
  return leaves


def _is_float(x: Any) -> bool:
  dtype = getattr(x, "dtype", None)
  try:
    return bool(jnp.issubdtype(jnp.result_type(x) if dtype is None else dtype, jnp.inexact))
  except TypeError:
    return False


def _plain_keys(path: tuple[Any, ...]) -> bool:
  for j, key in enumerate(path):
    if isinstance(key, jax.tree_util.DictKey) and isinstance(key.key, str):
      continue
    if (j == len(path) - 1 and isinstance(key, jax.tree_util.GetAttrKey)
        and key.name == "value"):
      continue  # an NNX Variable's value
    return False
  return True


def _read_dotted_names(leaves: list[Leaf]) -> None:
  """A flat dict of timm names (``blocks.0.attn.qkv.weight``): read ``.`` as ``/``.

  Only when no name is a Paddle layer name (``encoder.layers``) and some dotted
  name has a numbered layer once read so.
  """
  dotted = [lf for lf in leaves if "." in lf.rule_name and "/" not in lf.rule_name]
  if not dotted or any("encoder.layers" in lf.rule_name for lf in leaves):
    return
  if any(classify(lf.rule_name.replace(".", "/")).kind == "layer" for lf in dotted):
    for lf in dotted:
      lf.rule_name = lf.rule_name.replace(".", "/")


def placed_paths(stacks: dict[str, FoundStack]) -> set[str]:
  """The paths some stack holds (as a numbered layer or a stacked leaf)."""
  return {p for st in stacks.values() for p in (*st.layers, *st.stacked)}


def one_per_member(paths: list[str], layered: list[Leaf]) -> list[str]:
  """One example path per family member (the message lists members, not every leaf)."""
  seen, out = set(), []
  by_path = {lf.path: lf for lf in layered}
  for p in sorted(paths):
    m = by_path[p].match
    key = (m.family, m.indices)
    if key not in seen:
      seen.add(key)
      out.append(p)
  return out


def refuse(owner: str, problems: Problems, extra: str = "") -> LayerRuleError:
  """The error listing every problem with its paths, then ``extra`` and the fixes."""
  lines = [f"{owner}: the default path rule cannot place these parameters with confidence "
           "(it never guesses):"]
  for title, paths in problems:
    lines.append(f"  - {title}:")
    lines += _show(paths)
  if extra:
    lines.append(extra)
  lines.append(FIXES)
  return LayerRuleError("\n".join(lines))


def _show(paths: list[str], limit: int = 8) -> list[str]:
  paths = sorted(paths)
  out = [f"    {p}" for p in paths[:limit]]
  if len(paths) > limit:
    out.append(f"    ... and {len(paths) - limit} more")
  return out


def stack_named(stacks: dict[str, FoundStack], name: str) -> FoundStack:
  """The stack ``name`` (a family or container path), made if new."""
  return stacks.setdefault(name, FoundStack(name, name.split("/")[:-1]))
