"""``describe``: what the optimizer will do to each parameter, before training."""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import jax
import numpy as np

from optax_ldl._src import checks
from optax_ldl._src import layer_schedules as sched
from optax_ldl._src.adamwdl import adamwdl
from optax_ldl._src.layer_decay import LayerDecay
from optax_ldl._src.layer_map import Placement
from optax_ldl._src.plan import LayerPlan
from optax_ldl._src.tree_names import floats_only, is_float, natural_key, path_name
from optax_ldl._src.weight_decay import check_mask, decay_mask_of


class Row(NamedTuple):
  """One parameter as the optimizer sees it.

  Attributes:
    path: the path name (keys joined by ``/``).
    shape: the shape.
    dtype: the dtype name.
    layer: where it sits, as shown: a layer index (``"<stack>:<i>"`` with
      several stacks), ``"embedding"``, ``"head"``, ``"ratio"`` (a fixed ratio),
      ``"stacked(axis=A)"`` (scanned layers stacked along axis ``A``), ``"-"``
      (a custom rule) or ``"int"`` (an integer leaf, never updated).
    lr_ratio: the layer-wise ratio of the learning rate; for a stacked leaf a
      tuple, the ratio of each slice along the stacked axis.
    weight_decay: whether weight decay applies.
    placement: the :class:`optax_ldl.Placement` the plan gives it (``None``
      under a custom rule and for integer leaves): the data behind ``layer``.
    axis: the layer axis of a stacked leaf, else ``None``.
    evidence: why it is placed where it is: the rule-table row and the key
      that matched, the data-flow unit, ``name_dict``, or a custom rule
      (``""`` where nothing is recorded); :meth:`Description.evidence` shows
      them all.
  """

  path: str
  shape: tuple[int, ...]
  dtype: str
  layer: str
  lr_ratio: float | tuple[float, ...]
  weight_decay: bool
  placement: Placement | None = None
  axis: int | None = None
  evidence: str = ""


class Description(NamedTuple):
  """The rows of :func:`describe`; ``str()`` gives the table, :meth:`summary` one line a group.

  Attributes:
    rows: one :class:`Row` per leaf, in natural path order.
    lr: the learning rate at ``step`` (a float), or ``None`` if unknown.
    step: the step at which ``lr`` was read.
    schedule: whether the learning rate is a schedule (then the lr column is
      headed ``lr@<step>`` and a note says which step it shows).
    weight_decay_known: ``False`` when describe was given a
      :class:`optax_ldl.LayerDecay` and no weight-decay argument: the weight
      decay is then the wrapped optimizer's, and the column shows ``-``.
    layer_schedule: path name -> when its layer schedule lets it train
      (``"from 200"``, ``"ramp 100..199"``, ``"never"``; a stacked leaf: one per
      slice), empty without a ``layer_schedule``; the rows' ``lr_ratio`` are
      then the ratios at ``step``, as the optimizer applies them there.
  """

  rows: list[Row]
  lr: float | None
  step: int
  schedule: bool = False
  weight_decay_known: bool = True
  layer_schedule: dict[str, str] = {}  # noqa: RUF012 - a NamedTuple default, never mutated.

  def _ratio_header(self) -> str:
    return f"lr ratio@{self.step}" if self.layer_schedule else "lr ratio"

  def _schedule_header(self) -> list[str]:
    return ["schedule"] if self.layer_schedule else []

  def _schedule_cells(self, path: str) -> list[str]:
    return [self.layer_schedule.get(path, "-")] if self.layer_schedule else []

  def _lr_header(self) -> list[str]:
    if self.lr is None:
      return []
    return ["lr" if self.step == 0 and not self.schedule else f"lr@{self.step}"]

  def _notes(self) -> list[str]:
    """What the table cannot say in its cells: the step of a schedule, an unknown decay."""
    notes = []
    if self.schedule and self.lr is not None:
      note = f"lr@{self.step}: the learning-rate schedule at step {self.step}"
      if self.lr == 0:
        note += " (0 there, e.g. during warmup: describe(..., step=k) shows step k)"
      notes.append(note)
    if not self.weight_decay_known:
      notes.append("weight decay: '-', the wrapped optimizer's own (describe was given a "
                   "LayerDecay only; pass weight_decay= and mask= as the optimizer has them)")
    return notes

  def _decay_cell(self, decayed: bool) -> str:
    if not self.weight_decay_known:
      return "-"
    return "yes" if decayed else "no"

  def _lr_cells(self, ratio: Any) -> list[str]:
    if self.lr is None:
      return []
    lr = self.lr
    return [_fmt(tuple(lr * x for x in ratio) if isinstance(ratio, tuple) else lr * ratio, ".4g")]

  def __str__(self) -> str:
    header = ["path", "shape", "dtype", "layer", self._ratio_header(), *self._lr_header(),
              "weight decay", *self._schedule_header()]
    lines = [
        [r.path, str(r.shape), r.dtype, str(r.layer), _fmt(r.lr_ratio, ".6g"),
         *self._lr_cells(r.lr_ratio), self._decay_cell(r.weight_decay),
         *self._schedule_cells(r.path)]
        for r in self.rows
    ]
    n_params = sum(int(np.prod(r.shape)) for r in self.rows)
    ratios = {x for r in self.rows if r.layer != "int"
              for x in (r.lr_ratio if isinstance(r.lr_ratio, tuple) else (r.lr_ratio,))}
    decayed = sum(r.weight_decay for r in self.rows)
    decay_note = f", weight decay on {decayed} leaves" if self.weight_decay_known else ""
    return "\n".join([
        _table(header, lines),
        f"{len(self.rows)} leaves, {n_params:,} parameters, {len(ratios)} distinct lr "
        f"ratios{decay_note}",
        *self._notes(),
    ])

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

  def evidence(self) -> str:
    """One line per leaf: where it sits and why (the rule row and key, or the data-flow unit)."""
    header = ["path", "layer", "why"]
    lines = [[r.path, r.layer, r.evidence or "-"] for r in self.rows]
    return _table(header, lines)

  def summary(self) -> str:
    """One line per layer group: leaves, parameters, lr ratio(s), lr, weight decay."""
    header = ["group", "leaves", "params", self._ratio_header(), *self._lr_header(),
              "weight decay", *self._schedule_header()]
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
          f"{decayed}/{len(rows)}" if self.weight_decay_known else "-",
          *self._group_schedule(rows),
      ])
    return "\n".join([_table(header, lines), *self._notes()])


  def _group_schedule(self, rows: list[Row]) -> list[str]:
    if not self.layer_schedule:
      return []
    cells = sorted({self.layer_schedule.get(r.path, "-") for r in rows})
    return [cells[0] if len(cells) == 1 else "mixed"]


def _table(header: list[str], lines: list[list[str]]) -> str:
  widths = [max(len(x) for x in col) for col in zip(header, *lines)]
  fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
  return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(x) for x in lines])


def _fmt(value: Any, spec: str) -> str:
  if isinstance(value, tuple):  # a stacked leaf: one ratio per slice.
    return "[" + " ".join(format(x, spec) for x in value) + "]"
  return format(value, spec)


def layer_label(place: Placement | None, axis: int | None, several_stacks: bool) -> str:
  """How a row's place is shown: ``"3"``, ``"enc:3"``, ``"embedding"``, ``"head"``, ..."""
  if place is None:
    return "-"
  if axis is not None:
    return f"stacked(axis={axis})"
  prefix = f"{place.stack}:" if several_stacks and place.stack else ""
  if place.kind == "layer":
    return f"{prefix}{place.layer}"
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
    decay: LayerDecay | None = None,
    *,
    step: int = 0,
    **adamwdl_kwargs: Any,
) -> Description:
  """The lr ratio, layer and weight-decay decision for every parameter.

  Takes the keyword arguments of :func:`optax_ldl.adamwdl` (checked as
  ``adamwdl`` checks them), so one configuration dict serves both; or a
  :class:`optax_ldl.LayerDecay` and the other arguments. A learning-rate
  schedule is read at ``step``. The layer plan is computed once, as ``init``
  computes it, and each row carries its :class:`optax_ldl.Placement`.

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
    step: the step at which a learning-rate schedule and a ``layer_schedule``
      are read.
    **adamwdl_kwargs: arguments of :func:`optax_ldl.adamwdl`.

  Returns:
    A :class:`Description`: ``.rows`` as data, ``str()`` as a table.
  """
  owner = "describe"
  checks.check_int(owner, "step", step, minimum=0, accepted="an int >= 0")
  unknown = sorted(set(adamwdl_kwargs) - set(_ADAMWDL.parameters))
  if unknown:
    raise TypeError(f"{owner}: unknown argument(s) {unknown}; it takes adamwdl's: "
                    f"{list(_ADAMWDL.parameters)}")
  bound = _ADAMWDL.bind_partial(**adamwdl_kwargs)
  bound.apply_defaults()
  args = bound.arguments
  for kind in ("learning_rate", "b1", "b2", "eps", "weight_decay"):
    checks.hyperparameter(owner, kind, args[kind])
  if decay is not None:
    if not isinstance(decay, LayerDecay):
      raise TypeError(f"{owner}: decay must be an optax_ldl.LayerDecay, got {decay!r}")
    repeated = sorted(set(adamwdl_kwargs) & set(_LAYER_FIELDS))
    if repeated:
      raise TypeError(f"{owner}: {repeated} repeat fields of decay; pass one or the other")
  config = LayerDecay.of(decay, owner, **{
      field: args[arg] for arg, field in _LAYER_FIELDS.items() if decay is None})
  decay_mask = decay_mask_of(owner, args["apply_decay_param_fun"], args["mask"])
  check_mask(owner, decay_mask, params)
  plan = config.check(params, owner)  # every check init makes, one plan.
  decays = _decayed(params, decay_mask,
                    checks.concrete_float(args["weight_decay"]) != 0.0)
  rows = sorted(_rows(params, plan, decays), key=lambda r: natural_key(r.path))
  shown: dict[str, str] = {}
  if args["layer_schedule"] is not None:
    rows, shown = _scheduled_rows(owner, rows, params, config, args["layer_schedule"], step)
  # Given a LayerDecay alone (the configuration of layerwise(any optimizer)), the weight
  # decay is the wrapped optimizer's: shown as unknown unless an argument says it.
  decay_known = decay is None or bool(
      {"weight_decay", "mask", "apply_decay_param_fun"} & set(adamwdl_kwargs))
  return Description(rows, _lr_at(args["learning_rate"], step), step,
                     callable(args["learning_rate"]), decay_known, shown)


def _scheduled_rows(owner: str, rows: list[Row], params: Any, config: LayerDecay,
                    schedule: Any, step: int) -> tuple[list[Row], dict[str, str]]:
  """The rows with their ratios at ``step`` (as the optimizer computes them), and their windows."""
  sched.check(owner, schedule)
  floats = floats_only(params)
  windows = sched.leaf_windows(schedule, sched.layer_map_for(owner, config.layer_map(floats)),
                               floats)
  factor = sched.factors(windows, step)
  out = []
  for r in rows:
    if r.path not in factor:
      out.append(r)
      continue
    # float32 products, as the transformation multiplies a float32 ratio by the factor.
    at = np.asarray(r.lr_ratio, np.float32) * np.asarray(factor[r.path], np.float32)
    ratio = tuple(float(x) for x in at) if isinstance(r.lr_ratio, tuple) else float(at)
    out.append(r._replace(lr_ratio=ratio))
  return out, {name: sched.window_text(w) for name, w in windows.items()}


# adamwdl's layer arguments -> the LayerDecay fields they set (describe takes adamwdl's).
_LAYER_FIELDS = {"layerwise_decay": "layerwise_decay", "n_layers": "n_layers",
                 "set_param_lr_fun": "rule", "name_dict": "name_dict", "stacked": "stacked",
                 "layers": "layers", "floor": "floor", "stages": "stages"}
_ADAMWDL = inspect.signature(adamwdl)


def _decayed(params: Any, decay_mask: Any, wd_on: bool) -> dict[str, bool]:
  """Path name -> whether weight decay applies to the leaf."""
  if decay_mask is None:
    decay_mask = jax.tree.map(lambda _: True, params)
  elif callable(decay_mask):
    decay_mask = decay_mask(params)
  full = jax.tree.map(lambda m, p: jax.tree.map(lambda _: m, p), decay_mask, params)
  return {path_name(p): bool(d) and wd_on for p, d in jax.tree_util.tree_leaves_with_path(full)}


def _rows(params: Any, plan: LayerPlan, decays: dict[str, bool]) -> list[Row]:
  """One :class:`Row` per leaf of ``params``, read from the plan."""
  several = plan.several_stacks
  rows = []
  for path, p in jax.tree_util.tree_leaves_with_path(params):
    name = path_name(path)
    dtype = str(np.dtype(p.dtype)) if hasattr(p, "dtype") else type(p).__name__
    shape = tuple(np.shape(p))
    if not is_float(p) or name not in plan.labels:
      rows.append(Row(name, shape, dtype, "int", 0.0, False))
      continue
    place, axis = plan.placements[name], plan.axes[name]
    rows.append(Row(name, shape, dtype, layer_label(place, axis, several), plan.ratio(name),
                    decays[name], place, axis, plan.evidence.get(name, "")))
  return rows
