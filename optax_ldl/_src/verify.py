"""``verify``: the lr ratio a built optimizer applies to each parameter, measured against the plan.

:func:`optax_ldl.describe` shows what a configuration intends; ``verify`` measures
what the optimizer built from it applies, whatever wraps it (``optax.chain``,
``optax.masked``, ``optax.partition``, ``optax.MultiSteps``,
``optax.inject_hyperparams``, ``optax.apply_if_finite``). One probe, no training
data: the optimizer and a reference (the same optimizer at decay 1, or the inner
optimizer of :func:`optax_ldl.layerwise`) each take steps on a throwaway state
with the same synthetic gradients (a fixed pattern of :math:`\\pm 1`) and zero
params, until their update arrives (a warmup starting at 0, ``MultiSteps``).
With the same gradient and no weight decay (the params are 0), the two differ by
the ratio alone, so the measured ratio of a leaf is

.. math::

  \\hat r_p = \\frac{\\langle u_p, u^{\\text{ref}}_p \\rangle}
                   {\\langle u^{\\text{ref}}_p, u^{\\text{ref}}_p \\rangle},

per slice for a stacked leaf; the leaf passes when
:math:`\\max |u_p - r_p u^{\\text{ref}}_p| \\le \\text{rtol}\\, r_p \\max |u^{\\text{ref}}_p|`
(every element gets the planned ratio :math:`r_p`, not only their mean).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_ldl._src import checks
from optax_ldl._src.adamwdl import adamwdl
from optax_ldl._src.diagnostics import _LAYER_FIELDS, Description, _fmt, _table, describe
from optax_ldl._src.layer_decay import LayerDecay
from optax_ldl._src.tree_names import is_float, names_and_leaves, natural_key

_OWNER = "verify"
_HINTS = (
    "measured 0: a wrapper hides the leaf or zeroes its update (optax.masked, "
    "optax.partition with set_to_zero, a freeze); a ratio times one factor everywhere: a "
    "transformation applied on top (optax.scale, a second learning rate or layer decay); off "
    "by powers of the decay: n_layers or the layer plan differ from the configuration's."
)


class RatioCheck(NamedTuple):
  """One parameter: the ratio planned and the ratio the optimizer applied.

  Attributes:
    path: the path name (keys joined by ``/``).
    layer: where the plan places it (``Row.layer`` of :func:`optax_ldl.describe`;
      ``"-"`` for a hand-written ratio).
    planned: the planned lr ratio (a tuple, one per slice, for a stacked leaf).
    measured: the ratio measured by the probe, in the same form.
    ok: whether every element received the planned ratio, within ``rtol``.
  """

  path: str
  layer: str
  planned: float | tuple[float, ...]
  measured: float | tuple[float, ...]
  ok: bool


class Verification(NamedTuple):
  """The result of :func:`verify`: ``.rows`` as data, ``str()`` as a table.

  Attributes:
    rows: one :class:`RatioCheck` per floating-point leaf, in natural path order.
    steps: the probe steps the optimizer took until its update arrived (more
      than 1 under a warmup from 0 or ``optax.MultiSteps``).
    reference_steps: the same for the reference.
    rtol: the relative tolerance the rows were checked with.
  """

  rows: list[RatioCheck]
  steps: int
  reference_steps: int
  rtol: float

  @property
  def ok(self) -> bool:
    """Whether every leaf received its planned ratio."""
    return all(r.ok for r in self.rows)

  @property
  def mismatches(self) -> list[RatioCheck]:
    """The rows whose measured ratio differs from the plan."""
    return [r for r in self.rows if not r.ok]

  def table(self, rows: list[RatioCheck] | None = None) -> str:
    header = ["path", "layer", "planned ratio", "measured ratio", "ok"]
    lines = [[r.path, r.layer, _fmt(r.planned, ".6g"), _fmt(r.measured, ".6g"),
              "yes" if r.ok else "NO"] for r in (self.rows if rows is None else rows)]
    return _table(header, lines)

  def __str__(self) -> str:
    bad = len(self.mismatches)
    verdict = (f"all {len(self.rows)} leaves receive their planned ratio" if not bad else
               f"{bad} of {len(self.rows)} leaves differ from the plan")
    return "\n".join([self.table(), f"{verdict} (rtol {self.rtol:g})",
                      f"probe: the update arrived at step {self.steps} (reference: "
                      f"{self.reference_steps})"])


def verify(
    tx: optax.GradientTransformation,
    params: Any,
    expected: Any = None,
    *,
    reference: optax.GradientTransformation | None = None,
    rtol: float | None = None,
    max_steps: int = 64,
    raise_on_mismatch: bool = True,
    **adamwdl_kwargs: Any,
) -> Verification:
  """Measures the lr ratio ``tx`` applies to each parameter and compares it with the plan.

  Run it once before training: one compiled probe (the optimizer and the
  reference stepped on a throwaway state until their update arrives), no data.

  >>> import jax.numpy as jnp, optax
  >>> params = {'embed': jnp.ones(2), 'layers_0': jnp.ones(2),
  ...           'layers_1': jnp.ones(2), 'head': jnp.ones(2)}
  >>> config = dict(learning_rate=1e-3, layerwise_decay=0.5)
  >>> print(verify(adamwdl(**config), params, **config))
  path      layer      planned ratio  measured ratio  ok
  --------  ---------  -------------  --------------  ---
  embed     embedding  0.125          0.125           yes
  head      head       1              1               yes
  layers_0  0          0.25           0.25            yes
  layers_1  1          0.5            0.5             yes
  all 4 leaves receive their planned ratio (rtol 0.001)
  probe: the update arrived at step 1 (reference: 1)
  >>> bad = optax.chain(adamwdl(**config), optax.scale(2.0))
  >>> [r.measured for r in verify(bad, params, raise_on_mismatch=False, **config).rows]
  [0.25, 2.0, 0.5, 1.0]

  Args:
    tx: the optimizer as built for training (any wrapper around
      :func:`optax_ldl.adamwdl` or :func:`optax_ldl.layerwise`).
    params: the parameter tree ``tx`` is given (arrays or
      ``jax.ShapeDtypeStruct`` s: only shapes and dtypes are read).
    expected: the plan: ``None`` (``describe(params, **adamwdl_kwargs)``), a
      :class:`optax_ldl.LayerDecay` (``describe(params, expected,
      **adamwdl_kwargs)``), a :class:`optax_ldl.Description`, or a mapping
      ``path name -> ratio`` covering every float leaf (a tuple, one ratio per
      slice along axis 0, for a stacked leaf; 0 for a frozen leaf).
    reference: the optimizer at ratio 1 everywhere: for
      ``layerwise(inner, ...)``, ``inner``. Default: ``adamwdl(**adamwdl_kwargs)``
      without its layer arguments (decay 1), when ``expected`` is ``None`` or
      ``adamwdl_kwargs`` are given.
    rtol: relative tolerance on each element's ratio; default 1e-3, or 2e-2
      when a leaf is 16-bit.
    max_steps: the most probe steps taken to wait for an update.
    raise_on_mismatch: raise (the default) or return the table when some leaf
      differs from the plan.
    **adamwdl_kwargs: keyword arguments of :func:`optax_ldl.adamwdl`, as given
      to the optimizer: they set the plan and the default reference.

  Returns:
    A :class:`Verification`: ``.rows`` (:class:`RatioCheck`), ``.ok``,
    ``.mismatches``, ``str()`` as a table.

  Raises:
    ValueError: some leaf does not receive its planned ratio (the leaves are
      named), or the probe cannot measure (no update within ``max_steps``, a
      reference that skips a leaf).
  """
  if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
    raise TypeError(f"{_OWNER}: tx must be an optax transformation, got {tx!r}")
  if reference is not None and not callable(getattr(reference, "update", None)):
    raise TypeError(f"{_OWNER}: reference must be an optax transformation or None, got "
                    f"{reference!r}")
  checks.check_int(_OWNER, "max_steps", max_steps, minimum=1, accepted="an int >= 1")
  checks.flag(_OWNER, "raise_on_mismatch", raise_on_mismatch)
  if rtol is not None and (isinstance(rtol, bool) or not isinstance(rtol, (int, float))
                           or not 0 < rtol < 1):
    raise ValueError(f"{_OWNER}: rtol must be None or a number in (0, 1), got {rtol!r}")
  planned = _planned(params, expected, adamwdl_kwargs)
  reference = _reference(reference, expected, adamwdl_kwargs)
  leaves = dict(names_and_leaves(params))
  if rtol is None:
    half = any(jnp.dtype(leaves[name].dtype).itemsize <= 2 for name in planned)
    rtol = 2e-2 if half else 1e-3
  measured, err, scale, steps, ref_steps = _probe(tx, reference, params, planned, max_steps)
  _check_reference(planned, scale, ref_steps, max_steps)
  rows = []
  for name, (layer, ratio, _) in sorted(planned.items(), key=lambda kv: natural_key(kv[0])):
    r = np.asarray(ratio, np.float64)
    ok = bool(np.all(err[name] <= rtol * np.abs(r) * scale[name]))
    got = tuple(float(x) for x in measured[name]) if isinstance(ratio, tuple) else float(
        measured[name])
    rows.append(RatioCheck(name, layer, ratio, got, ok))
  result = Verification(rows, steps, ref_steps, float(rtol))
  if raise_on_mismatch and not result.ok:
    bad = result.mismatches
    note = f" (no update within max_steps={max_steps} probe steps)" if steps >= max_steps else ""
    raise ValueError(
        f"{_OWNER}: {len(bad)} of {len(rows)} leaves do not receive their planned lr ratio"
        f"{note}: {[r.path for r in bad][:8]}{' ...' if len(bad) > 8 else ''}\n"
        f"{result.table(bad)}\nLikely causes: {_HINTS}")
  return result


def _planned(params: Any, expected: Any, kwargs: dict[str, Any]) -> dict[str, tuple[str, Any, int]]:
  """Path name -> (layer shown, planned ratio, stacked axis) of every float leaf."""
  if expected is None or isinstance(expected, LayerDecay):
    return {r.path: (r.layer, r.lr_ratio, r.axis or 0)
            for r in describe(params, expected, **kwargs).rows if r.layer != "int"}
  layer_args = sorted(set(kwargs) & (set(_LAYER_FIELDS) | {"layer_schedule"}))
  if layer_args:
    raise TypeError(f"{_OWNER}: {layer_args} set the plan, but expected gives it "
                    f"({type(expected).__name__}): pass one or the other")
  if isinstance(expected, Description):
    return {r.path: (r.layer, r.lr_ratio, r.axis or 0) for r in expected.rows
            if r.layer != "int"}
  if not isinstance(expected, Mapping):
    raise TypeError(f"{_OWNER}: expected must be None, an optax_ldl.LayerDecay, an "
                    f"optax_ldl.Description or a mapping path name -> ratio, got {expected!r}")
  names = [name for name, x in names_and_leaves(params) if is_float(x)]
  missing = [n for n in names if n not in expected]
  unknown = sorted(set(expected) - set(names))
  if missing or unknown:
    raise ValueError(f"{_OWNER}: expected must give a ratio for every float leaf of params "
                     f"and nothing else; it lacks {missing[:6]} and has unknown paths "
                     f"{unknown[:6]} (the float leaves: {names[:6]}{' ...' * (len(names) > 6)})")
  shapes = {name: np.shape(x) for name, x in names_and_leaves(params)}
  out: dict[str, tuple[str, Any, int]] = {}
  for name in names:
    ratio = expected[name]
    values = ratio if isinstance(ratio, (tuple, list)) else (ratio,)
    if not values or any(isinstance(x, bool) or not isinstance(x, (int, float, np.number))
                         or not 0 <= x < np.inf for x in values):
      raise ValueError(f"{_OWNER}: expected[{name!r}] must be a ratio >= 0 (a tuple of them "
                       f"for a stacked leaf), got {ratio!r}")
    if isinstance(ratio, (tuple, list)):
      if not shapes[name] or shapes[name][0] != len(ratio):
        raise ValueError(f"{_OWNER}: expected[{name!r}] holds {len(ratio)} ratios, one per "
                         f"slice along axis 0, but the leaf has shape {shapes[name]}")
      out[name] = ("-", tuple(float(x) for x in ratio), 0)
    else:
      out[name] = ("-", float(ratio), 0)
  return out


def _reference(reference: Any, expected: Any, kwargs: dict[str, Any]) -> Any:
  """The optimizer at ratio 1 everywhere: given, or ``adamwdl`` without its layer arguments."""
  if reference is not None:
    return reference
  if expected is not None and not kwargs:
    raise ValueError(
        f"{_OWNER}: reference is needed with expected={type(expected).__name__} and no adamwdl "
        "arguments: pass the optimizer at ratio 1 everywhere (for layerwise(inner, ...), "
        "reference=inner), or the adamwdl keyword arguments tx was built with.")
  layer_args = set(_LAYER_FIELDS) | {"layer_schedule", "parameters"}
  return adamwdl(**{k: v for k, v in kwargs.items() if k not in layer_args})


def _signs(x: Any, i: int) -> jax.Array:
  """A fixed pattern of +-1 shaped like float leaf ``x`` (zeros for other leaves).

  A multiplicative hash of the element index (no PRNG: it compiles in no time).
  """
  if not is_float(x):
    return jnp.zeros(np.shape(x), x.dtype)
  index = jax.lax.iota(jnp.uint32, max(int(np.size(x)), 1))[:int(np.size(x))]
  bits = (index * jnp.uint32(0x9E3779B1) + jnp.uint32(0x7F4A7C15 * (i + 1) % 2**32)) >> 16
  return jnp.where(bits & 1, 1, -1).astype(x.dtype).reshape(np.shape(x))


def _arrived(u: Any) -> jax.Array:
  """Whether some float leaf of the update is nonzero."""
  flags = [jnp.any(x != 0) for x in jax.tree.leaves(u) if is_float(x)]
  return jnp.any(jnp.stack(flags)) if flags else jnp.bool_(False)


def _first_update(tx: Any, grads: Any, params: Any, max_steps: int) -> tuple[Any, int]:
  """Steps a fresh state with ``grads`` until some float update is nonzero: (updates, steps).

  One compiled update, called until the update arrives (a warmup from 0, MultiSteps).
  """
  state = tx.init(params)
  step = jax.jit(lambda g, s, p: (lambda u, s: (u, s, _arrived(u)))(*tx.update(g, s, p)))
  u, state, arrived = step(grads, state, params)
  steps = 1
  while steps < max_steps and not bool(arrived):
    u, state, arrived = step(grads, state, params)
    steps += 1
  return u, steps


@functools.partial(jax.jit, static_argnums=3)
def _compare(u: list[Any], ref: list[Any], ratios: list[Any], axes: tuple[int | None, ...]):
  """Per leaf: (measured ratio, max |u - r ref|, max |ref|), one value a slice when stacked."""
  out = []
  for x, y, r, axis in zip(u, ref, ratios, axes):
    # A stacked leaf: its layer axis first, every other axis reduced (one value a slice).
    a, b = (jnp.asarray(t, jnp.float32) for t in (x, y))
    if axis is not None:
      a, b = jnp.moveaxis(a, axis, 0), jnp.moveaxis(b, axis, 0)
      r = r.reshape(r.shape + (1,) * (a.ndim - 1))
    over = None if axis is None else tuple(range(1, a.ndim))
    out.append((jnp.sum(a * b, over) / jnp.sum(b * b, over),
                jnp.max(jnp.abs(a - r * b), over), jnp.max(jnp.abs(b), over)))
  return out


def _probe(tx: Any, reference: Any, params: Any, planned: dict[str, tuple[str, Any, int]],
           max_steps: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int, int]:
  """Per leaf: measured ratio, max |u - r u_ref|, max |u_ref| (per slice); both step counts."""
  names = [name for name, _ in names_and_leaves(params)]
  leaves, treedef = jax.tree.flatten(params)
  zeros = jax.tree.unflatten(treedef, [
      jnp.zeros(np.shape(x), x.dtype) if is_float(x) else x for x in leaves])
  grads = jax.jit(lambda t: jax.tree.unflatten(
      treedef, [_signs(x, i) for i, x in enumerate(jax.tree.leaves(t))]))(zeros)
  u, steps = _first_update(tx, grads, zeros, max_steps)
  ref, ref_steps = _first_update(reference, grads, zeros, max_steps)
  u_of, ref_of = dict(zip(names, jax.tree.leaves(u))), dict(zip(names, jax.tree.leaves(ref)))
  order = list(planned)
  out = jax.device_get(_compare(
      [u_of[n] for n in order], [ref_of[n] for n in order],
      [np.asarray(planned[n][1], np.float32) for n in order],
      tuple(planned[n][2] if isinstance(planned[n][1], tuple) else None for n in order)))
  measured = {n: np.asarray(v[0]) for n, v in zip(order, out)}
  err = {n: np.asarray(v[1]) for n, v in zip(order, out)}
  scale = {n: np.asarray(v[2]) for n, v in zip(order, out)}
  return measured, err, scale, steps, ref_steps


def _check_reference(planned: dict[str, Any], scale: dict[str, Any], ref_steps: int,
                     max_steps: int) -> None:
  """Raises, naming the leaves, where the reference gives no update (nothing to measure by)."""
  silent = [name for name in planned if np.any(scale[name] == 0)]
  if not silent:
    return
  why = (f"no update within max_steps={max_steps} probe steps (a learning rate of 0 "
         "there? raise max_steps)" if ref_steps >= max_steps and len(silent) == len(planned)
         else "it gives them no update")
  raise ValueError(
      f"{_OWNER}: the reference cannot measure {len(silent)} leaves, {why}: {silent[:6]}"
      f"{' ...' if len(silent) > 6 else ''}. reference must be the optimizer at ratio 1 on "
      "every leaf (for layerwise(inner, ...), inner itself).")
