"""The public entry point ``trace_layers``: check the inputs, trace ``fn``, walk, place.

The forward pass ``fn(params, *args, **kwargs)`` is traced abstractly with
:func:`jax.make_jaxpr` (nothing is compiled or run). Every float parameter leaf
is followed through the equations (:mod:`.walk`); the layers are the repeated
numbered units of the parameter tree (:mod:`.units`), numbered by first use, the
leaves a loop slices (:mod:`.stacks`), or the periods of the data flow
(:mod:`.period`); everything else is placed from where it runs (:mod:`.place`):
before the first layer (the embedding stage), between two layers (the later one),
after the last layer (the head). Every placement comes with its evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from optax_ldl._src.layer_map import LayerMap
from optax_ldl._src.trace.errors import OWNER, describe_value
from optax_ldl._src.trace.overrides import check_overrides
from optax_ldl._src.trace.place import place
from optax_ldl._src.trace.units import module_comps
from optax_ldl._src.trace.walk import Walker


def _is_arraylike(x: Any) -> bool:
  return isinstance(x, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct))


def _abstract(x: Any) -> Any:
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  return jax.ShapeDtypeStruct(np.shape(x), x.dtype)


def _is_float(v: Any) -> bool:
  return np.issubdtype(v.dtype, np.inexact) or v.dtype == jax.numpy.bfloat16


def abstract_leaves(params: Any) -> tuple[list[str], list[Any], Any]:
  """The path names, ``jax.ShapeDtypeStruct`` and tree structure of the params' leaves."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in flat]
  values = [v for _, v in flat]
  for name, v in zip(names, values):
    if not _is_arraylike(v):
      raise TypeError(
          f"{OWNER}: params must be a pytree of arrays or jax.ShapeDtypeStruct; leaf "
          f"{name!r} is {describe_value(v)} ({type(v).__name__})")
  return names, [_abstract(v) for v in values], treedef


def float_leaves(abstract: list[Any]) -> list[int]:
  """The indices of the float leaves (the ones to place); none is an error."""
  float_idx = [i for i, v in enumerate(abstract) if _is_float(v)]
  if not float_idx:
    raise ValueError(f"{OWNER}: params has no float leaves to place (leaves: "
                     f"{len(abstract)}); pass the trainable parameters")
  return float_idx


def make_jaxpr(fn: Callable[..., Any], params: Any, example_args: tuple[Any, ...],
               example_kwargs: dict[str, Any]) -> Any:
  """The closed jaxpr of ``fn(params, *example_args, **example_kwargs)``.

  Array-like example inputs are abstract (their jaxpr inputs follow the params'),
  the others are static.
  """
  ex_flat, ex_tree = jax.tree_util.tree_flatten((example_args, example_kwargs))
  dyn_pos = [i for i, x in enumerate(ex_flat) if _is_arraylike(x)]
  dyn = [_abstract(ex_flat[i]) for i in dyn_pos]

  def call(p, dyn_values):
    full = list(ex_flat)
    for i, x in zip(dyn_pos, dyn_values):
      full[i] = x
    args, kwargs = jax.tree_util.tree_unflatten(ex_tree, full)
    return fn(p, *args, **kwargs)

  try:
    return jax.make_jaxpr(call)(params, dyn)
  except Exception as e:  # noqa: BLE001 - re-raised with context.
    raise ValueError(
        f"{OWNER}: tracing fn(params, *example_args, **example_kwargs) failed with "
        f"{type(e).__name__}: {e}\n(fn is called with params as its first argument, then "
        f"the example inputs; they may be arrays or jax.ShapeDtypeStruct)") from e


def module_tree_names(names: list[str]) -> list[str]:
  """The leaves' names inside one module tree held in several collections, else ``names``.

  Flax's variables (``{'params': ..., 'batch_stats': ...}``) hold one module tree
  in several collections: a BatchNorm's ``mean`` and ``var`` sit in
  ``batch_stats/<module>`` beside its ``scale`` in ``params/<module>``. The units
  are the modules, whatever collection holds their leaves: read apart, the
  ``batch_stats`` family could be taken for the layers and a block's convolution,
  read before its first statistic, placed before the block. The leading key is
  dropped when the top level holds several collections, the names stay unique
  without it, and every module of all but the largest collection is a module of
  the largest (two towers, an encoder and a decoder, have modules of their own:
  their names are kept).
  """
  if len(names) < 2 or any("/" not in n for n in names):
    return names
  inner = [n.split("/", 1)[1] for n in names]
  if len(set(inner)) != len(inner):
    return names
  modules: dict[str, set[str]] = {}
  for n, rest in zip(names, inner):
    modules.setdefault(n.split("/", 1)[0], set()).add("/".join(module_comps(rest)))
  if len(modules) < 2:
    return names
  main = max(modules, key=lambda c: len(modules[c]))
  if all(mods <= modules[main] for c, mods in modules.items() if c != main):
    return inner
  return names


def walk(closed: Any, abstract: list[Any], pinned: Mapping[int, Any]) -> tuple[Walker, int]:
  """The walker after its walk of the jaxpr, and the example inputs' bit.

  A float (or pinned) leaf ``i`` enters with mask ``1 << i`` and is its own alias;
  integer leaves and the example inputs enter as data.
  """
  n = len(abstract)
  data = 1 << n
  walker = Walker(data)
  jaxpr = closed.jaxpr
  in_masks, in_alias = [], []
  for i, v in enumerate(abstract):
    if i in pinned or _is_float(v):
      in_masks.append(1 << i)
      in_alias.append((i, tuple(range(len(v.shape)))))
    else:
      in_masks.append(data)
      in_alias.append(None)
  n_rest = len(jaxpr.invars) - n
  walker.walk(jaxpr, in_masks + [data] * n_rest, in_alias + [None] * n_rest)
  return walker, data


def trace_layers(
    fn: Callable[..., Any],
    params: Any,
    *example_args: Any,
    overrides: Mapping[str, Any] | None = None,
    numbering: str = "per_stack",
    **example_kwargs: Any,
) -> LayerMap:
  """Places every float parameter (embedding stage, layer ``i``, head) from the data flow.

  ``fn(params, *example_args, **example_kwargs)`` runs the model's forward pass;
  it is traced abstractly with :func:`jax.make_jaxpr` (nothing is compiled or
  run: ``params`` and the example arguments may be arrays or
  :class:`jax.ShapeDtypeStruct`). Example arguments that are not arrays (flags,
  strings) are passed as they are.

  * **Layers**: the repeated units of the parameter tree, numbered siblings
    ``X_N``, numbered children ``X/N`` (list indices, haiku's ``block_N``
    under ``~`` included) or a number inside a flat key (Keras'
    ``stack0_block1_2_conv``, scenic's ``resblocks.3``) whose units have the same
    structure: the same leaves, the numbers inside them aside (a norm counter
    that runs through the whole model), of the same shapes (composite units: of
    the same ranks, as a ResNet's stages widen). Nested numbering
    (``stages/S/blocks/B``) is flattened: the block is the layer, numbered
    straight through the stages. Numbered parts of one block are not layers: a
    residual branch (``x + f(x)``) that holds two of them (a ResNet basic block's
    convs) or one of them and other leaves of the block (a decoder block's
    self- and cross-attention, each after its norm) makes the block the layer.
    A first layer with a few extra leaves (T5's relative attention bias in block
    0) still repeats the others. Layers are numbered from 0 in execution order
    (first use), not by their names. A numbered family whose units differ (a
    ``Sequential`` head) is not a stack. Where no family holds the layers whole
    (only global auto-numbered names: ``linear``, ``linear_1``, ...,
    ``layer_norm_7``), the layers are the periods of the data flow: the modules,
    in the order they are first read, repeat along the residual stream, each
    period holding its residual branches whole. A leaf a ``scan`` slices along
    an axis (``nn.scan``, ``nnx.scan``), or that a ``scan`` / ``while_loop`` /
    ``fori_loop`` body indexes with its counter (``w[i]``), holds all the layers
    of a stack: ``Placement('layer', stack, layer=0, axis=a)``, the depth is the
    scan length (a while loop's: the size of that axis). Any other loop body is
    walked like a scan's: its first iteration reads the loop's input. One
    module tree held in several collections (Flax variables:
    ``{'params': ..., 'batch_stats': ...}``) is read as one: a module's leaves
    are in its unit whatever collection holds them.
  * **Embedding stage**: a leaf outside the layers that is applied before them
    and whose result enters the first layer (token / position / patch
    embeddings, class tokens, stems, pre-norms). A leaf in the embedding stage of
    several stacks (a shared or tied embedding) goes with the deepest stack.
    A repeated stack through which all of another stack's input runs (a conv
    feature extractor, a hybrid ViT's ResNet: every application of the other
    stack's first layer to the data depends on it) is that stack's embedding
    stage. An encoder read by a decoder's first layer through cross-attention
    only (a side input; the decoder's own embeddings are its main path) stays a
    stack of its own.
  * A leaf outside the layers applied between layer ``k`` and ``k + 1`` (a
    downsample between stages) belongs to layer ``k + 1``.
  * **Head** (ratio 1): everything else: final norms, poolers, heads of any
    shape; a value computed once outside the layers and used by every layer
    (BEiT's shared relative-position bias), as BEiT does.
  * **Several stacks** (encoder and decoder, two towers): with
    ``numbering='per_stack'`` each stack has its own depth; stack names are the
    family's path (``params/encoder/layer``), ``''`` for a single stack. With
    ``numbering='continue'`` the stacks form one stack, numbered on across
    stacks in execution order (BART: encoder ``0..E-1``, decoder ``E..``).
  * A leaf read in the branches of several layers (shared weights), whatever
    the order of the operations (``h @ w_i @ shared``, ``(h @ shared) @ w_i``),
    is an error that names the leaf and the layers, unless ``overrides`` places
    it. ALBERT's one
    layer, applied by every layer of the model, is refused the same way (named
    with its number of applications); ``overrides={its prefix: 0}`` makes it the
    only layer (layer 0 of 1), the leaves before it the embedding stage, the ones
    after it the head.

  Integer leaves are not placed.

  >>> import jax.numpy as jnp
  >>> def forward(p, x):
  ...   h = x @ p['embed']
  ...   for i in range(2):
  ...     h = h + jnp.tanh(h @ p[f'layers_{i}']['w'])
  ...   return h @ p['head']
  >>> params = {'embed': jnp.ones((3, 4)), 'head': jnp.ones((4, 2)),
  ...           'layers_0': {'w': jnp.ones((4, 4))}, 'layers_1': {'w': jnp.ones((4, 4))}}
  >>> layers = trace_layers(forward, params, jnp.ones((1, 3)))
  >>> [str(layers[p]) for p in ('embed', 'layers_0/w', 'layers_1/w', 'head')]
  ['embedding', '0', '1', 'head']
  >>> [round(layers.ratio(p, 0.5), 3) for p in ('embed', 'layers_0/w', 'layers_1/w', 'head')]
  [0.125, 0.25, 0.5, 1.0]

  Args:
    fn: the forward pass, called as ``fn(params, *example_args, **example_kwargs)``.
    params: the parameters (a pytree of arrays or ``jax.ShapeDtypeStruct``).
    *example_args: example inputs (arrays, ``ShapeDtypeStruct``; others are static).
    overrides: ``{path name or prefix: 'embedding' | 'head' | int | Placement}``
      pins leaves (the longest matching prefix wins): ``'embedding'`` (of the
      deepest stack), ``'head'``, an int (a layer of the only stack; when the
      tree has no layers of its own, the leaves pinned to ints ``0..L-1`` are the
      layers and the others are placed around them) or any
      :class:`Placement` (``Placement('ratio', ratio=r)`` for a fixed ratio).
      Pinned leaves are left out of the layer search.
    numbering: ``'per_stack'`` (each stack its own depth) or ``'continue'``.
    **example_kwargs: example keyword inputs.

  Returns:
    A :class:`LayerMap` with every float leaf's :class:`Placement` and why it is
    there (:meth:`LayerMap.why`, shown by ``describe(...).evidence()``): the unit
    and stack and how the units were found, or where the leaf is read around them,
    or ``'override'``.

  Raises:
    TypeError: ``fn`` is not callable or ``params`` is not a pytree of arrays.
    ValueError: ``fn`` fails on the example inputs, there are no float leaves, no
      layers are found, the tree is ambiguous, or a leaf is shared by several layers.
  """
  if not callable(fn):
    raise TypeError(f"{OWNER}: fn must be callable as fn(params, *example_args, "
                    f"**example_kwargs), got {describe_value(fn)}")
  if numbering not in ("per_stack", "continue"):
    raise ValueError(f"{OWNER}: numbering must be 'per_stack' or 'continue', got "
                     f"{numbering!r}")
  names, abstract, treedef = abstract_leaves(params)
  float_idx = float_leaves(abstract)
  pinned = check_overrides(overrides, names, float_idx)
  closed = make_jaxpr(fn, jax.tree_util.tree_unflatten(treedef, abstract), example_args,
                      example_kwargs)
  walker, data = walk(closed, abstract, pinned)
  units = module_tree_names(names)
  layer_map = place(walker, units, abstract, float_idx, pinned, numbering, data)
  if units is names:
    return layer_map
  back = dict(zip(units, names))
  return LayerMap.build({back[p]: pl for p, pl in layer_map.placements}, dict(layer_map.depths),
                        {back[p]: why for p, why in layer_map.evidence})
