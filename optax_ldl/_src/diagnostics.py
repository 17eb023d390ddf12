"""``describe``: what the optimizer will do to each parameter, before training."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import numpy as np

from optax_ldl._src import adamwdl as adamwdl_lib
from optax_ldl._src import checks, layer_scale, wrappers
from optax_ldl._src import stacked as stacked_lib
from optax_ldl._src.layer_map import Placement


class Row(NamedTuple):
  """One parameter as the optimizer sees it.

  Attributes:
    path: the path name (keys joined by ``/``).
    shape: the shape.
    dtype: the dtype name.
    layer: where it sits: a layer index (``"<stack>:<i>"`` with several
      stacks), ``"embedding"``, ``"head"``, ``"ratio"`` (a fixed ratio),
      ``"stacked(axis=A)"`` (scanned layers stacked along axis ``A``), ``"-"``
      (a custom rule) or ``"int"`` (an integer leaf, never updated).
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


def natural_key(text: str) -> tuple[Any, ...]:
  """Sorts ``layers_2`` before ``layers_10``."""
  return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


class Description(NamedTuple):
  """The rows of :func:`describe`; ``str()`` gives the table, :meth:`summary` one line a group.

  Attributes:
    rows: one :class:`Row` per leaf, in natural path order.
    lr: the learning rate at ``step`` (a float), or ``None`` if unknown.
    step: the step at which ``lr`` was read.
  """

  rows: list[Row]
  lr: float | None
  step: int

  def _lr_header(self) -> list[str]:
    if self.lr is None:
      return []
    return ["lr" if self.step == 0 else f"lr@{self.step}"]

  def _lr_cells(self, ratio: Any) -> list[str]:
    if self.lr is None:
      return []
    lr = self.lr
    return [_fmt(tuple(lr * x for x in ratio) if isinstance(ratio, tuple) else lr * ratio, ".4g")]

  def __str__(self) -> str:
    header = ["path", "shape", "dtype", "layer", "lr ratio", *self._lr_header(), "weight decay"]
    lines = [
        [r.path, str(r.shape), r.dtype, str(r.layer), _fmt(r.lr_ratio, ".6g"),
         *self._lr_cells(r.lr_ratio), "yes" if r.weight_decay else "no"]
        for r in self.rows
    ]
    n_params = sum(int(np.prod(r.shape)) for r in self.rows)
    ratios = {x for r in self.rows if r.layer != "int"
              for x in (r.lr_ratio if isinstance(r.lr_ratio, tuple) else (r.lr_ratio,))}
    decayed = sum(r.weight_decay for r in self.rows)
    return _table(header, lines) + (
        f"\n{len(self.rows)} leaves, {n_params:,} parameters, {len(ratios)} distinct lr "
        f"ratios, weight decay on {decayed} leaves"
    )

  def groups(self) -> list[tuple[str, list[Row]]]:
    """The rows grouped by ``Row.layer``, bottom (embeddings) to top (heads)."""
    order: dict[str, list[Row]] = {}
    for r in self.rows:
      order.setdefault(str(r.layer), []).append(r)

    def rank(layer: str) -> tuple[Any, ...]:
      stack, _, where = layer.rpartition(":")
      kind = 0 if where == "embedding" else 3 if where in ("head", "ratio", "-", "int") else 1
      return (kind, natural_key(stack), natural_key(where))

    return [(layer, order[layer]) for layer in sorted(order, key=rank)]

  def summary(self) -> str:
    """One line per layer group: leaves, parameters, lr ratio(s), lr, weight decay."""
    header = ["group", "leaves", "params", "lr ratio", *self._lr_header(), "weight decay"]
    lines = []
    for layer, rows in self.groups():
      ratios = sorted({r.lr_ratio for r in rows},
                      key=lambda x: x[0] if isinstance(x, tuple) else x)
      ratio = ratios[0] if len(ratios) == 1 else None
      decayed = sum(r.weight_decay for r in rows)
      lines.append([
          layer, str(len(rows)), f"{sum(int(np.prod(r.shape)) for r in rows):,}",
          _fmt(ratio, ".6g") if ratio is not None else "mixed",
          *(self._lr_cells(ratio) if ratio is not None else ([] if self.lr is None else ["-"])),
          f"{decayed}/{len(rows)}",
      ])
    return _table(header, lines)


def _table(header: list[str], lines: list[list[str]]) -> str:
  widths = [max(len(x) for x in col) for col in zip(header, *lines)]
  fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
  return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(x) for x in lines])


def _fmt(value: Any, spec: str) -> str:
  if isinstance(value, tuple):  # a stacked leaf: one ratio per slice.
    return "[" + " ".join(format(x, spec) for x in value) + "]"
  return format(value, spec)


def _layer_label(place: Placement | None, axis: int | None, several_stacks: bool) -> Any:
  if place is None:
    return "-"
  if axis is not None:
    return f"stacked(axis={axis})"
  prefix = f"{place.stack}:" if several_stacks and place.stack else ""
  if place.kind == "layer":
    return f"{prefix}{place.layer}" if prefix else place.layer
  if place.kind == "embedding":
    return f"{prefix}embedding"
  return place.kind


def _lr_at(learning_rate: Any, step: int) -> float | None:
  if callable(learning_rate):
    try:
      value = learning_rate(step)
    except Exception:  # noqa: BLE001 - a schedule that needs more than a step: no lr column.
      return None
    return checks.concrete_float(value)
  return checks.concrete_float(learning_rate)


def describe(
    params: Any,
    decay: layer_scale.LayerDecay | None = None,
    *,
    step: int = 0,
    **adamwdl_kwargs: Any,
) -> Description:
  """The lr ratio, layer and weight-decay decision for every parameter.

  Takes the keyword arguments of :func:`optax_ldl.adamwdl` (all are checked the
  same way, those that do not change the table too), so one configuration dict
  serves both; or a :class:`optax_ldl.LayerDecay` and the other arguments. A
  learning-rate schedule is read at ``step``.

  >>> import jax.numpy as jnp
  >>> params = {'embeddings': {'embedding': jnp.zeros((10, 4))},
  ...           'layers_0': {'kernel': jnp.zeros((4, 4)), 'bias': jnp.zeros(4)},
  ...           'layers_1': {'kernel': jnp.zeros((4, 4)), 'bias': jnp.zeros(4)},
  ...           'head': {'kernel': jnp.zeros((4, 2))}}
  >>> d = describe(params, learning_rate=1e-3, layerwise_decay=0.5,
  ...              apply_decay_param_fun=lambda n: not n.endswith('bias'))
  >>> print(d)
  path                  shape    dtype    layer      lr ratio  lr        weight decay
  --------------------  -------  -------  ---------  --------  --------  ------------
  embeddings/embedding  (10, 4)  float32  embedding  0.125     0.000125  yes
  head/kernel           (4, 2)   float32  head       1         0.001     yes
  layers_0/bias         (4,)     float32  0          0.25      0.00025   no
  layers_0/kernel       (4, 4)   float32  0          0.25      0.00025   yes
  layers_1/bias         (4,)     float32  1          0.5       0.0005    no
  layers_1/kernel       (4, 4)   float32  1          0.5       0.0005    yes
  6 leaves, 88 parameters, 4 distinct lr ratios, weight decay on 4 leaves
  >>> print(d.summary())
  group      leaves  params  lr ratio  lr        weight decay
  ---------  ------  ------  --------  --------  ------------
  embedding  1       40      0.125     0.000125  1/1
  0          2       20      0.25      0.00025   1/2
  1          2       20      0.5       0.0005    1/2
  head       1       8       1         0.001     1/1

  Args:
    params: the parameter tree (arrays or ``jax.ShapeDtypeStruct`` s).
    decay: a :class:`optax_ldl.LayerDecay`; then ``adamwdl_kwargs`` must not
      repeat its fields.
    step: the step at which a learning-rate schedule is read.
    **adamwdl_kwargs: arguments of :func:`optax_ldl.adamwdl`.

  Returns:
    A :class:`Description`: ``.rows`` as data, ``str()`` as a table.
  """
  checks.check_int("describe", "step", step, minimum=0, accepted="an int >= 0")
  kwargs = dict(adamwdl_kwargs)
  if decay is not None:
    if not isinstance(decay, layer_scale.LayerDecay):
      raise TypeError(f"describe: decay must be an optax_ldl.LayerDecay, got {decay!r}")
    repeated = sorted(set(kwargs) & set(adamwdl_lib.LAYER_ARGS))
    if repeated:
      raise TypeError(f"describe: {repeated} repeat fields of decay; pass one or the other")
    kwargs.update(adamwdl_lib.layer_kwargs(decay))
  adamwdl_lib.adamwdl(parameters=params, **kwargs)  # every check the optimizer makes.
  config = layer_scale.LayerDecay(**{
      field: kwargs[arg] for arg, field in adamwdl_lib.LAYER_ARGS.items() if arg in kwargs
  })
  floats = jax.tree.map(lambda p: p if wrappers.is_float(p) else None, params)
  groups = config.groups(floats)
  ratio_of, axis_of = {}, {}
  for p, label in jax.tree_util.tree_leaves_with_path(groups.labels):
    name, ratio = layer_scale.path_name(p), groups.ratios[label]
    if isinstance(ratio, stacked_lib.StackedRatio):
      ratio_of[name] = tuple(float(x) for x in np.asarray(ratio.ratios))
      axis_of[name] = ratio.axis
    else:
      ratio_of[name] = float(ratio)
  decay_mask = adamwdl_lib.decay_mask_of(
      kwargs.get("apply_decay_param_fun"), kwargs.get("mask"))
  if decay_mask is None:
    decay_mask = jax.tree.map(lambda _: True, params)
  elif callable(decay_mask):
    decay_mask = decay_mask(params)
  decays = {
      layer_scale.path_name(p): bool(d)
      for p, d in jax.tree_util.tree_leaves_with_path(
          jax.tree.map(lambda m, p: jax.tree.map(lambda _: m, p), decay_mask, params)
      )
  }
  wd_on = checks.concrete_float(
      kwargs.get("weight_decay", adamwdl_lib.DEFAULT_WEIGHT_DECAY)) != 0.0
  several = len({p.stack for p in groups.placements.values()
                 if p is not None and p.kind in ("layer", "embedding")}) > 1
  rows = []
  for path, p in jax.tree_util.tree_leaves_with_path(params):
    name = layer_scale.path_name(path)
    dtype = str(np.dtype(p.dtype)) if hasattr(p, "dtype") else type(p).__name__
    if name not in ratio_of:
      rows.append(Row(name, tuple(np.shape(p)), dtype, "int", 0.0, False))
      continue
    layer = _layer_label(groups.placements.get(name), axis_of.get(name), several)
    rows.append(Row(name, tuple(np.shape(p)), dtype, layer, ratio_of[name],
                    decays[name] and wd_on))
  rows.sort(key=lambda r: natural_key(r.path))
  lr = _lr_at(kwargs.get("learning_rate", adamwdl_lib.DEFAULT_LEARNING_RATE), step)
  return Description(rows, lr, step)
