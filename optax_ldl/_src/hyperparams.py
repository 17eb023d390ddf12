"""``hyperparams``: the current injected hyperparameters, read from a wrapped optimizer's state."""

from __future__ import annotations

from typing import Any

import jax
import optax


def _is_injected(node: Any) -> bool:
  return isinstance(node, (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState))


def hyperparams(state: Any) -> dict[str, jax.Array]:
  """The hyperparameters an ``optax.inject_hyperparams`` optimizer holds now, however wrapped.

  Finds the injected state inside any wrapper (``optax.chain``,
  ``optax.MultiSteps``, ``optax.apply_if_finite``, ``optax.masked``, a Flax
  ``TrainState.opt_state``, ...) so that reading or logging the current
  ``learning_rate`` or ``layerwise_decay`` does not depend on the wrapper's
  layout (``state.inner_state[0].hyperparams``, ...). Set a value with
  ``optax.tree_utils.tree_set(state, layerwise_decay=...)``.

  >>> import jax.numpy as jnp, optax, optax_ldl
  >>> tx = optax.MultiSteps(optax.inject_hyperparams(optax_ldl.adamwdl)(
  ...     learning_rate=1e-3, layerwise_decay=0.8), every_k_schedule=2)
  >>> state = tx.init({'layers_0': jnp.ones(2), 'layers_1': jnp.ones(2)})
  >>> h = hyperparams(state)
  >>> round(float(h['learning_rate']), 6), round(float(h['layerwise_decay']), 6)
  (0.001, 0.8)

  Args:
    state: an optimizer state holding one ``optax.inject_hyperparams`` state.

  Returns:
    ``{name: value}``: the injected hyperparameters (JAX scalars).

  Raises:
    ValueError: the state holds no injected hyperparameters, or several sets
      (then read each with ``optax.tree_utils.tree_get_all_with_path``).
  """
  found = [node for node in jax.tree.leaves(state, is_leaf=_is_injected) if _is_injected(node)]
  if not found:
    raise ValueError(
        "hyperparams: the state holds no injected hyperparameters: build the optimizer "
        "with optax.inject_hyperparams(optax_ldl.adamwdl)(...) to change or read them "
        "during training."
    )
  if len(found) > 1:
    raise ValueError(
        f"hyperparams: the state holds {len(found)} sets of injected hyperparameters (one per "
        "inject_hyperparams); read each with optax.tree_utils.tree_get_all_with_path(state, "
        "'hyperparams')."
    )
  return dict(found[0].hyperparams)
