"""``path_layers``: the layer plan of a whole model, from its parameter names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optax_ldl._src import path_rule as rules
from optax_ldl._src.layer_decay import validate
from optax_ldl._src.layer_map import LayerMap
from optax_ldl._src.tree_names import floats_only, masked_names


def path_layers(
    params: Any,
    *,
    n_layers: Any = None,
    name_dict: Mapping[str, str] | None = None,
    stacked: Any = "auto",
) -> LayerMap:
  """Where every float parameter of the whole model sits, read from its path name.

  The default path rule (:func:`optax_ldl.classify`, :func:`optax_ldl.rule_table_markdown`)
  as a :class:`optax_ldl.LayerMap`: compute it once from the *whole* parameter
  tree and pass it as ``layers=`` to :func:`optax_ldl.adamwdl`,
  :func:`optax_ldl.layerwise` or :class:`optax_ldl.LayerDecay`. It then applies
  unchanged to any part of the model an optimizer is given: the trainable part
  of ``optax.masked``/``optax.partition``, ``nnx.Optimizer(model, tx,
  wrt=filter)``, or the adapters of some layers only. Each keeps the ratio its
  layer has in the whole model, and the depth is the model's. (The data-flow
  counterpart is :func:`optax_ldl.trace_layers`.)

  >>> import jax.numpy as jnp
  >>> params = {'embed': jnp.ones(2), 'layers_0': jnp.ones(2), 'layers_1': jnp.ones(2),
  ...           'layers_2': jnp.ones(2), 'head': jnp.ones(2)}
  >>> plan = path_layers(params)
  >>> plan.depth(), str(plan['layers_2']), str(plan['embed'])
  (3, '2', 'embedding')
  >>> import optax, optax_ldl
  >>> tx = optax_ldl.layerwise(optax.sgd(1.0), layerwise_decay=0.5, layers=plan)
  >>> top = {'layers_2': params['layers_2']}  # an optimizer that sees layer 2 only
  >>> u, _ = tx.update(top, tx.init(top))
  >>> float(u['layers_2'][0])  # layer 2 of 3: decay ** 1
  -0.5

  Args:
    params: the whole model's parameter tree (arrays or ``jax.ShapeDtypeStruct`` s;
      with NNX, ``nnx.state(model, nnx.Param)``).
    n_layers: ``None`` (read each stack's depth from the tree), an int, or
      ``{stack prefix: depth}``.
    name_dict: path name -> the name the rule reads.
    stacked: scanned layers stacked in one array (see :func:`optax_ldl.adamwdl`).

  Returns:
    A :class:`optax_ldl.LayerMap`.

  Raises:
    optax_ldl.LayerRuleError: a leaf the rule cannot place, with the fixes.
  """
  owner = "path_layers"
  validate(owner, n_layers=n_layers, name_dict=name_dict, stacked=stacked)
  hidden = masked_names(params)
  if hidden:
    raise ValueError(
        f"{owner}: params holds optax.MaskedNode placeholders ({hidden[:3]}): it is a part of "
        "the model. Give the whole parameter tree, so that the depth is the model's."
    )
  floats = floats_only(params)
  return rules.path_layers(floats, n_layers=n_layers, name_dict=name_dict, stacked=stacked,
                           owner=owner)
