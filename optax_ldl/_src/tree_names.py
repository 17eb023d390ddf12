"""Parameter path names and leaf predicates: how every module names and filters leaves."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax


def path_name(path: tuple[Any, ...]) -> str:
  """A leaf's path name: its keys joined by ``/`` (``encoder/layers_0/kernel``)."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def names_and_leaves(tree: Any) -> list[tuple[str, Any]]:
  """``[(path name, leaf)]`` in tree order."""
  return [(path_name(p), x) for p, x in jax.tree_util.tree_leaves_with_path(tree)]


def is_float(x: Any) -> bool:
  """Whether a leaf (an array, a ``jax.ShapeDtypeStruct`` or a number) is floating point."""
  dtype = getattr(x, "dtype", None)
  return bool(jnp.issubdtype(jnp.result_type(x) if dtype is None else dtype, jnp.inexact))


def floats_only(tree: Any) -> Any:
  """``tree`` with every non-float leaf replaced by ``None`` (the leaves layers are read from)."""
  return jax.tree.map(lambda x: x if is_float(x) else None, tree)


def is_masked(x: Any) -> bool:
  return isinstance(x, optax.MaskedNode)


def masked_names(tree: Any) -> list[str]:
  """The path names of the ``optax.MaskedNode`` placeholders in ``tree`` (hidden leaves)."""
  return [path_name(p) for p, x in
          jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_masked)[0] if is_masked(x)]


def natural_key(text: str) -> tuple[Any, ...]:
  """Sorts ``layers_2`` before ``layers_10``."""
  return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))
