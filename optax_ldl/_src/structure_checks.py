"""Structure checks of update's arguments: updates against the params, state against init's.

Made in Python while the update is traced, so nothing is added to the compiled
step; the state's structure is compared only when the update fails.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_ldl._src.tree_names import path_name


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
    holes = [path_name(p) for (p, u), x in zip(
        jax.tree_util.tree_flatten_with_path(updates, is_leaf=is_none)[0],
        jax.tree.leaves(params, is_leaf=is_none)) if u is None and x is not None]
    if not holes:
      return
    raise ValueError(
        f"{owner}: updates (the gradients) must have the params' tree structure; "
        f"None where the params have a leaf: {_shown(holes, 4)}. Give a zero gradient "
        "(jnp.zeros_like) for a leaf that gets none, or freeze it with optax.masked / "
        "optax.partition."
    )
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
