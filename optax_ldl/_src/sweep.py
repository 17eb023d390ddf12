"""Sweeps in one program: K injected hyperparameter settings trained as one ``vmap``ped step.

With ``optax.inject_hyperparams`` the decay and the learning rate are state, not
constants of the program, so K settings are K rows of one state: the step is
traced and compiled once, then ``jax.vmap`` runs every setting in it. A traced
decay reaches the layer plan as an array and each leaf's ratio is computed from
it (``decay ** (L - i)``, :mod:`optax_ldl._src.plan`), per setting under
``vmap``; the state's key (``"decay@injected"``) is the same for every setting.

>>> import jax, jax.numpy as jnp, optax, optax_ldl
>>> from optax_ldl._src.sweep import grid, sweep_init, sweep_member
>>> tx = optax.inject_hyperparams(optax_ldl.adamwdl, static_args=("n_layers",))(
...     learning_rate=1e-2, layerwise_decay=1.0, n_layers=2, weight_decay=0.0)
>>> params = {'layers_0': jnp.ones(2), 'layers_1': jnp.ones(2), 'head': jnp.ones(2)}
>>> settings = grid(layerwise_decay=[1.0, 0.5], learning_rate=[1e-2, 1e-3])
>>> ps, states = sweep_init(tx, params, **settings)
>>> def step(p, s):
...   g = jax.tree.map(jnp.ones_like, p)
...   u, s = tx.update(g, s, p)
...   return optax.apply_updates(p, u), s
>>> ps, states = jax.jit(jax.vmap(step))(ps, states)
>>> [round(1 - float(sweep_member(ps, 1)[k][0]), 6) for k in ('layers_0', 'layers_1', 'head')]
[0.001, 0.001, 0.001]
>>> [round(1 - float(sweep_member(ps, 2)[k][0]), 6) for k in ('layers_0', 'layers_1', 'head')]
[0.0025, 0.005, 0.01]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from optax_ldl._src.hyperparams import _is_injected


def grid(**axes: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
  """Every combination of the given values, as one flat vector per hyperparameter.

  >>> g = grid(layerwise_decay=[1.0, 0.8], learning_rate=[1e-4, 3e-4, 1e-3])
  >>> [(float(d), float(lr)) for d, lr in zip(g['layerwise_decay'], g['learning_rate'])][:4]
  [(1.0, 0.0001), (1.0, 0.0003), (1.0, 0.001), (0.8, 0.0001)]

  Args:
    **axes: hyperparameter name -> the values to try (a non-empty sequence).

  Returns:
    name -> a float64 vector of length ``prod(len(values))``: setting ``k`` is
    ``{name: vector[k]}``, the product in the order given (the last name fastest).
  """
  if not axes:
    raise ValueError("grid: give at least one hyperparameter, e.g. "
                     "grid(layerwise_decay=[1.0, 0.8], learning_rate=[1e-4, 3e-4]).")
  for name, values in axes.items():
    if np.ndim(values) != 1 or len(values) == 0:
      raise ValueError(f"grid: {name}={values!r}; give a non-empty sequence of numbers.")
  combos = list(itertools.product(*axes.values()))
  return {name: np.asarray([c[i] for c in combos], np.float64) for i, name in enumerate(axes)}


def _injected(state: Any) -> Any:
  found = [node for node in jax.tree.leaves(state, is_leaf=_is_injected) if _is_injected(node)]
  if len(found) != 1:
    raise ValueError(
        f"sweep_init: the optimizer's state holds {len(found)} sets of injected "
        "hyperparameters; a sweep needs exactly one: build the optimizer with "
        "optax.inject_hyperparams(optax_ldl.adamwdl, static_args=...)(...), wrapped as you "
        "like (optax.chain, optax.MultiSteps, ...)."
    )
  return found[0]


def _check_values(injected: Any, values: dict[str, Any]) -> int:
  """The number of settings K; raises, naming the argument, on anything a sweep cannot run."""
  if not values:
    raise ValueError("sweep_init: give the values of at least one injected hyperparameter, "
                     "e.g. sweep_init(tx, params, layerwise_decay=[1.0, 0.8]).")
  scheduled = set(getattr(injected, "hyperparams_states", {}) or {})
  lengths = {}
  for name, v in values.items():
    if name not in injected.hyperparams:
      raise ValueError(
          f"sweep_init: {name}={v!r}, but {name!r} is not an injected hyperparameter of this "
          f"optimizer; injected: {sorted(injected.hyperparams)} (a static_args name is part of "
          "the program and cannot vary across a sweep)."
      )
    if name in scheduled:
      raise ValueError(
          f"sweep_init: {name} is a schedule, recomputed from the step at every update, so "
          f"the values {v!r} would be overwritten. Inject a number instead: a factory taking "
          f"the peak, e.g. def make(peak, layerwise_decay): return optax_ldl.adamwdl("
          "lambda step: peak * shape(step), layerwise_decay=layerwise_decay, ...)."
      )
    array = np.asarray(v)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.number):
      raise ValueError(f"sweep_init: {name}={v!r}; give a non-empty 1-D sequence of numbers, "
                       "one per setting.")
    lengths[name] = array.size
  if len(set(lengths.values())) != 1:
    raise ValueError(f"sweep_init: the value sequences have different lengths {lengths}; give "
                     "one value per setting for each (grid(...) makes them).")
  return next(iter(lengths.values()))


def sweep_init(tx: optax.GradientTransformation, params: Any,
               **values: Sequence[float] | ArrayLike) -> tuple[Any, Any]:
  """K copies of ``params`` and K optimizer states, setting ``k`` holding ``values[name][k]``.

  ``tx`` holds one ``optax.inject_hyperparams`` optimizer (wrapped in anything);
  ``values`` gives K values for some of its injected (numeric) hyperparameters,
  the others keep the value ``tx`` was built with. Every leaf of both results gets
  a leading axis of size K: ``jax.vmap`` a train step over it (``in_axes=0`` for
  the params and the state, ``None`` for a batch that all settings share), and
  ``jax.jit`` the result: one program for the whole sweep. Each value is cast to
  the dtype ``inject_hyperparams`` keeps it in.

  Args:
    tx: the optimizer (its ``init`` is called once, on ``params``).
    params: the initial parameters, shared by every setting.
    **values: injected hyperparameter name -> K numbers (:func:`grid` makes
      them from per-name lists).

  Returns:
    ``(params_k, state_k)``; :func:`sweep_member` takes setting ``k`` back out.
  """
  state = tx.init(params)
  injected = _injected(state)
  k = _check_values(injected, values)

  def stack(x):
    return jnp.broadcast_to(jnp.asarray(x), (k, *jnp.shape(x)))

  state_k = jax.tree.map(stack, state, is_leaf=lambda x: x is None)
  for name, v in values.items():
    dtype = injected.hyperparams[name].dtype
    state_k = optax.tree_utils.tree_set(state_k, **{name: jnp.asarray(np.asarray(v), dtype)})
  return jax.tree.map(stack, params), state_k


def sweep_member(tree: Any, k: int) -> Any:
  """Setting ``k`` of a swept tree (params, state, metrics): every leaf's row ``k``."""
  return jax.tree.map(lambda x: x[k], tree)
