"""Shared test fixtures: parameter trees, gradients, training loops, tree comparisons.

Imported as ``from fixtures import ...`` (``tests/`` is on ``sys.path``). Flax
models live with the tests that use them; this module needs jax, optax and numpy only.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

N_LAYERS = 3
DECAY = 0.5


def path_name(path: tuple[Any, ...]) -> str:
  """A parameter's path name: its keys joined by ``/``."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def names_and_leaves(tree: Any) -> list[tuple[str, Any]]:
  """``[(path name, leaf)]`` in tree order."""
  return [(path_name(p), x) for p, x in jax.tree_util.tree_leaves_with_path(tree)]


def by_name(tree: Any) -> dict[str, Any]:
  """``{path name: leaf}``."""
  return dict(names_and_leaves(tree))


def bert_like(n_layers: int = N_LAYERS, dtype: Any = jnp.float32) -> dict[str, Any]:
  """A BERT-shaped tree: embeddings, ``encoder/layers_i``, pooler, classifier."""
  key = iter(jax.random.split(jax.random.key(0), 64))
  normal = lambda *shape: jax.random.normal(next(key), shape, dtype)  # noqa: E731
  return {
      "embeddings": {"word_embeddings": {"embedding": normal(11, 4)},
                     "LayerNorm": {"scale": normal(4), "bias": normal(4)}},
      "encoder": {f"layers_{i}": {"attention": {"kernel": normal(4, 4), "bias": normal(4)}}
                  for i in range(n_layers)},
      "pooler": {"kernel": normal(4, 4)},
      "classifier": {"kernel": normal(4, 2), "bias": normal(2)},
  }


def bert_ratio(name: str, n_layers: int = N_LAYERS, decay: float = DECAY) -> float:
  """The documented ratio of a :func:`bert_like` leaf, by hand."""
  if name.startswith("embeddings/"):
    return decay ** (n_layers + 1)
  if name.startswith("encoder/layers_"):
    return decay ** (n_layers - int(name.split("/")[1][len("layers_"):]))
  return 1.0


def random_grads(params: Any, seed: int) -> Any:
  """Normal gradients shaped and typed like ``params``."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(
      treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def run(tx: optax.GradientTransformation, params: Any, steps: int = 5, seed: int = 0):
  """``steps`` updates with :func:`random_grads`; returns ``(params, state)``."""
  state = tx.init(params)
  for t in range(steps):
    updates, state = tx.update(random_grads(params, seed + t), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def flat_params() -> dict[str, Any]:
  """Deterministic (non-random) params: embeddings, three layers, a head."""
  return {
      "embeddings": {"embedding": jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)},
      "layers_0": {"kernel": jnp.linspace(0.5, 1.5, 9).reshape(3, 3), "bias": jnp.ones(3)},
      "layers_1": {"kernel": jnp.linspace(-0.5, 0.3, 9).reshape(3, 3), "bias": jnp.ones(3)},
      "layers_2": {"kernel": jnp.linspace(-0.1, 0.2, 9).reshape(3, 3), "bias": -jnp.ones(3)},
      "head": {"kernel": jnp.linspace(-2.0, 2.0, 6).reshape(3, 2)},
  }


def flat_ratio(name: str, decay: float = DECAY, n_layers: int = N_LAYERS) -> float:
  """The documented ratio of a :func:`flat_params` leaf, by hand."""
  top = name.split("/")[0]
  if top == "embeddings":
    return decay ** (n_layers + 1)
  if top.startswith("layers_"):
    return decay ** (n_layers - int(top[len("layers_"):]))
  return 1.0


def grads_at(step: int) -> Any:
  """Deterministic gradients for :func:`flat_params`."""
  return jax.tree.map(
      lambda p: jnp.cos(jnp.arange(p.size, dtype=jnp.float32) + 3.0 * step).reshape(p.shape),
      flat_params(),
  )


def assert_trees_equal(a: Any, b: Any) -> None:
  """Bit-for-bit equality, structure and dtypes included."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (name, x), (_, y) in zip(names_and_leaves(a), names_and_leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype, name
    assert np.array_equal(x, y, equal_nan=True), name


def moments(state: Any) -> tuple[Any, Any]:
  """Adam's ``(mu, nu)``, found by name wherever they sit in ``state``."""
  return optax.tree_utils.tree_get(state, "mu"), optax.tree_utils.tree_get(state, "nu")
