"""``describe``: what the optimizer will do to each parameter, before training."""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import jax
import numpy as np

from optax_ldl._src import adamwdl as adamwdl_lib
from optax_ldl._src import layer_rules
from optax_ldl._src import stacked as stacked_lib


class Row(NamedTuple):
  """One parameter as the optimizer sees it.

  Attributes:
    path: the path name (keys joined by ``/``).
    shape: the shape.
    dtype: the dtype name.
    layer: the layer index, ``"embedding"``, ``"other"`` (default rule), ``"-"``
      (a custom rule), ``"int"`` (an integer leaf, never updated), or
      ``"stacked(axis=A)"`` (scanned layers stacked along axis ``A``).
    lr_ratio: the layer-wise ratio of the learning rate; for a stacked leaf a
      tuple, the ratio of each slice along the stacked axis.
    weight_decay: whether weight decay applies.
  """

  path: str
  shape: tuple[int, ...]
  dtype: str
  layer: Any
  lr_ratio: float | tuple[float, ...]
  weight_decay: bool


class Description(NamedTuple):
  """The rows of :func:`describe`; ``str()`` gives the table."""

  rows: list[Row]
  learning_rate: Any

  def __str__(self) -> str:
    numeric_lr = adamwdl_lib.checks.concrete_float(self.learning_rate)
    header = ["path", "shape", "dtype", "layer", "lr ratio"]
    header += ["lr"] if numeric_lr is not None else []
    header += ["weight decay"]
    lines = []
    for r in self.rows:
      line = [r.path, str(r.shape), r.dtype, str(r.layer), _fmt(r.lr_ratio, ".6g")]
      if numeric_lr is not None:
        lr = r.lr_ratio
        lr = tuple(numeric_lr * x for x in lr) if isinstance(lr, tuple) else numeric_lr * lr
        line += [_fmt(lr, ".4g")]
      line += ["yes" if r.weight_decay else "no"]
      lines.append(line)
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    n_params = sum(int(np.prod(r.shape)) for r in self.rows)
    ratios = {
        x
        for r in self.rows
        if r.layer != "int"
        for x in (r.lr_ratio if isinstance(r.lr_ratio, tuple) else (r.lr_ratio,))
    }
    decayed = sum(r.weight_decay for r in self.rows)
    summary = (
        f"{len(self.rows)} leaves, {n_params:,} parameters, {len(ratios)} distinct lr "
        f"ratios, weight decay on {decayed} leaves"
    )
    return "\n".join(
        [fmt(header), fmt(["-" * w for w in widths])] + [fmt(x) for x in lines] + [summary]
    )


def _fmt(value: Any, spec: str) -> str:
  if isinstance(value, tuple):  # a stacked leaf: one ratio per slice.
    return "[" + " ".join(format(x, spec) for x in value) + "]"
  return format(value, spec)


_ADAMWDL_ARGS = set(inspect.signature(adamwdl_lib.adamwdl).parameters)


def describe(params: Any, **adamwdl_kwargs: Any) -> Description:
  """The lr ratio, layer and weight-decay decision for every parameter.

  Takes the keyword arguments of :func:`optax_ldl.adamwdl` (those that do not
  change the table, like ``b1``, are accepted and checked the same way), so one
  configuration dict serves both.

  >>> import jax.numpy as jnp
  >>> params = {'embeddings': {'embedding': jnp.zeros((10, 4))},
  ...           'layers_0': {'kernel': jnp.zeros((4, 4)), 'bias': jnp.zeros(4)},
  ...           'layers_1': {'kernel': jnp.zeros((4, 4)), 'bias': jnp.zeros(4)},
  ...           'head': {'kernel': jnp.zeros((4, 2))}}
  >>> print(describe(params, learning_rate=1e-3, layerwise_decay=0.5, n_layers=2,
  ...                apply_decay_param_fun=lambda n: not n.endswith('bias')))
  path                  shape    dtype    layer      lr ratio  lr        weight decay
  --------------------  -------  -------  ---------  --------  --------  ------------
  embeddings/embedding  (10, 4)  float32  embedding  0.125     0.000125  yes
  head/kernel           (4, 2)   float32  other      1         0.001     yes
  layers_0/bias         (4,)     float32  0          0.25      0.00025   no
  layers_0/kernel       (4, 4)   float32  0          0.25      0.00025   yes
  layers_1/bias         (4,)     float32  1          0.5       0.0005    no
  layers_1/kernel       (4, 4)   float32  1          0.5       0.0005    yes
  6 leaves, 88 parameters, 4 distinct lr ratios, weight decay on 4 leaves

  Args:
    params: the parameter tree (arrays or ``jax.ShapeDtypeStruct`` s).
    **adamwdl_kwargs: arguments of :func:`optax_ldl.adamwdl`.

  Returns:
    A :class:`Description`: ``.rows`` as data, ``str()`` as a table.
  """
  unknown = set(adamwdl_kwargs) - _ADAMWDL_ARGS
  if unknown:
    raise TypeError(
        f"describe: unknown argument(s) {sorted(unknown)}; it takes the keyword "
        f"arguments of adamwdl: {sorted(_ADAMWDL_ARGS)}"
    )
  kwargs = {"parameters": params, **adamwdl_kwargs}
  adamwdl_lib.adamwdl(**kwargs)  # every check the optimizer makes, raised here.
  signature = inspect.signature(adamwdl_lib.adamwdl).bind(**kwargs)
  signature.apply_defaults()
  args = signature.arguments

  floats = jax.tree.map(lambda p: p if adamwdl_lib.is_float(p) else None, params)
  groups = layer_rules.layer_groups(
      floats,
      layerwise_decay=args["layerwise_decay"],
      n_layers=args["n_layers"],
      set_param_lr_fun=args["set_param_lr_fun"],
      name_dict=args["name_dict"],
      stacked=args["stacked"],
  )

  def as_float(ratio):
    if isinstance(ratio, stacked_lib.StackedRatio):
      return tuple(float(x) for x in np.asarray(ratio.ratios))
    return float(ratio)

  ratio_of = {
      layer_rules.path_name(p): as_float(groups.ratios[label])
      for p, label in jax.tree_util.tree_leaves_with_path(groups.labels)
  }
  axis_of = {
      layer_rules.path_name(p): groups.ratios[label].axis
      for p, label in jax.tree_util.tree_leaves_with_path(groups.labels)
      if isinstance(groups.ratios[label], stacked_lib.StackedRatio)
  }
  decay_mask = adamwdl_lib.decay_mask_of(args["apply_decay_param_fun"], args["mask"])
  if decay_mask is None:
    decay_mask = jax.tree.map(lambda _: True, params)
  elif callable(decay_mask):
    decay_mask = decay_mask(params)
  decays = {
      layer_rules.path_name(p): bool(d)
      for p, d in jax.tree_util.tree_leaves_with_path(
          jax.tree.map(lambda m, p: jax.tree.map(lambda _: m, p), decay_mask, params)
      )
  }
  rows = []
  for path, p in jax.tree_util.tree_leaves_with_path(params):
    name = layer_rules.path_name(path)
    dtype = str(np.dtype(p.dtype)) if hasattr(p, "dtype") else type(p).__name__
    if name not in ratio_of:
      rows.append(Row(name, tuple(np.shape(p)), dtype, "int", 0.0, False))
      continue
    match = groups.matches.get(name)
    layer = "-" if match is None else (match.layer if match.kind == "layer" else match.kind)
    if name in axis_of:
      layer = f"stacked(axis={axis_of[name]})"
    wd = decays[name] and adamwdl_lib.checks.concrete_float(args["weight_decay"]) != 0.0
    rows.append(Row(name, tuple(np.shape(p)), dtype, layer, ratio_of[name], wd))
  return Description(rows, args["learning_rate"])
