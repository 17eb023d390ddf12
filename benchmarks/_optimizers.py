"""The JAX side of the benchmarks: BERT-shaped trees, the optimizers, the jitted step.

``make_tx(kind, ...)`` builds ``optax.adamw`` or ``optax_ldl.adamwdl`` on one tree with
the same mask; its ``scale=`` argument is the seam for other ways of applying the layer
ratio (``_variants.py``): the adamwdl chain is then AdamW's chain followed by
``scale(optax_ldl.LayerDecay(...))``.
"""

from __future__ import annotations

from collections.abc import Callable

import _trees
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_ldl

LR, WD = 1e-4, 0.01
# How adamwdl is told about the scanned trees' stacked leaves (per-slice ratios).
SCANNED_STACKED = {"bert/encoder/layer": 0}
SCANNED_NOTE = f"per-slice ratios (`stacked={SCANNED_STACKED}`)"

Scale = Callable[[optax_ldl.LayerDecay], optax.GradientTransformation]


def path_name(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/")


def nest(flat: dict) -> dict:
  """``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
  out: dict = {}
  for name, v in flat.items():
    d = out
    *head, last = name.split("/")
    for k in head:
      d = d.setdefault(k, {})
    d[last] = v
  return out


def sds_tree(shape: str, n_layers: int | None = None, scanned: bool = False):
  """(depth, a tree of ``jax.ShapeDtypeStruct``) for a ``_trees.SHAPES`` entry."""
  n_lay, h, i = _trees.SHAPES[shape]
  n_lay = n_lay if n_layers is None else n_layers
  flat = _trees.flat_shapes(n_lay, h, i, scanned)
  return n_lay, nest({k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in flat.items()})


def real_tree(sds, seed: int, scale: float):
  """Normal(0, scale) arrays shaped like ``sds``."""
  leaves, treedef = jax.tree.flatten(sds)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  out = [
    jax.block_until_ready(scale * jax.random.normal(k, x.shape, x.dtype))
    for k, x in zip(keys, leaves)
  ]
  return jax.tree.unflatten(treedef, out)


def mask_of(tree):
  """Weight decay everywhere but biases and LayerNorm (``_trees.decays``)."""
  return jax.tree_util.tree_map_with_path(lambda p, _: _trees.decays(path_name(p)), tree)


def layer_decay(n_layers: int, scanned: bool) -> optax_ldl.LayerDecay:
  """The layer-wise decay every adamwdl-like optimizer here uses."""
  return optax_ldl.LayerDecay(
    layerwise_decay=_trees.LAYERWISE_DECAY,
    n_layers=n_layers,
    stacked=SCANNED_STACKED if scanned else "auto",
  )


def adamw_chain(mask) -> optax.GradientTransformation:
  """``optax.adamw(LR, weight_decay=WD, mask=mask)`` as the chain it is."""
  return optax.chain(
    optax.scale_by_adam(), optax.add_decayed_weights(WD, mask), optax.scale_by_learning_rate(LR)
  )


def make_tx(kind: str, tree, n_layers: int, scanned: bool, scale: Scale | None = None):
  """``"adamw"`` (optax.adamw) or ``"adamwdl"``; with ``scale``, adamwdl's ratio step replaced.

  ``scale(decay)`` gets the :class:`optax_ldl.LayerDecay` adamwdl would use and returns
  the transformation applied after AdamW's chain (``optax_ldl.scale_by_layer_ratio`` is
  what ``adamwdl`` itself uses); integer leaves are left out with
  ``optax_ldl.float_leaves_only``, as ``adamwdl`` does.
  """
  mask = mask_of(tree)
  if kind == "adamw":
    if scale is not None:
      raise ValueError("make_tx: scale= applies to kind='adamwdl' only")
    return optax.adamw(LR, weight_decay=WD, mask=mask)
  if kind != "adamwdl":
    raise ValueError(f"make_tx: kind must be 'adamw' or 'adamwdl', got {kind!r}")
  decay = layer_decay(n_layers, scanned)
  if scale is None:
    return optax_ldl.adamwdl(
      LR,
      weight_decay=WD,
      mask=mask,
      layerwise_decay=decay.layerwise_decay,
      n_layers=decay.n_layers,
      stacked=decay.stacked,
    )
  return optax_ldl.float_leaves_only(optax.chain(adamw_chain(mask), scale(decay)))


def step_fn(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


def jit_step(tx):
  """One training step's optimizer part, params and state donated."""
  return jax.jit(step_fn(tx), donate_argnums=(0, 1))


def state_bytes(tx, sds) -> int:
  st = jax.eval_shape(tx.init, sds)
  return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(st))
