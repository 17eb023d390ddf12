"""Paddle-compatible names: ``AdamWDL``, ``layerwise_lr_decay``, ``InverseSquareRootSchedule``,
``ClipGradBy*``.

Code written for PaddleNLP ports by changing its imports: the constructors take
Paddle's argument names and defaults and build the Optax transformations of
this package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import jax
import jax.core  # jax.core.Tracer: jax imports it, but type checkers need it named.
import jax.numpy as jnp
import optax

from optax_ldl._src import checks, clipping, layer_schedules
from optax_ldl._src.adamwdl import adamw_layerwise
from optax_ldl._src.custom_rule import Param, call_rule, layerwise_lr_decay
from optax_ldl._src.layer_decay import LayerDecay
from optax_ldl._src.schedules import inverse_sqrt_schedule
from optax_ldl._src.weight_decay import check_mults

__all__ = ("AdamWDL", "ClipGradByGlobalNorm", "ClipGradByNorm", "ClipGradByValue",
           "InverseSquareRootSchedule", "Param", "call_rule", "layerwise_lr_decay")


class InverseSquareRootSchedule:
  """PaddleNLP's ``InverseSquareRootSchedule``, usable as an Optax schedule.

  Called with a step count (as Optax does), it returns the jit-safe value
  ``lr(count + start)``, where ``start`` is ``last_epoch`` after construction
  (0 by default), see :func:`optax_ldl.inverse_sqrt_schedule`. Called with no
  argument, like a Paddle ``LRScheduler``, it returns the current ``last_lr``.
  ``step()``, ``get_lr()``, ``last_epoch``, ``state_dict()`` /
  ``set_state_dict()`` and ``verbose`` behave as in Paddle, for ported loops;
  they do not change what the Optax call returns.

  >>> sched = InverseSquareRootSchedule(warmup_steps=4, learning_rate=1.0)
  >>> sched.last_epoch, sched()
  (0, 0.0)
  >>> for _ in range(5):
  ...   sched.step()
  >>> sched.last_epoch, round(sched.get_lr(), 4), round(float(sched(5)), 4)
  (5, 0.8944, 0.8944)

  Args:
    warmup_steps: the number of warmup steps, an int ``>= 1``.
    learning_rate: the peak learning rate.
    last_epoch: the last step taken; ``-1`` starts from scratch. As in Paddle,
      the constructor takes one step, so the first value used is
      ``lr(last_epoch + 1)``. When the optimizer's own step count is restored
      from a checkpoint, keep the default: the count already carries the offset.
    verbose: print the learning rate at every ``step()``, as Paddle does.
  """

  keys = ("last_epoch", "last_lr")

  def __init__(
      self,
      warmup_steps: int,
      learning_rate: float = 1.0,
      last_epoch: int = -1,
      verbose: bool = False,
  ):
    owner = "InverseSquareRootSchedule"
    checks.check_int(owner, "last_epoch", last_epoch, minimum=-1, accepted="an int >= -1")
    if not isinstance(verbose, bool):
      raise TypeError(f"{owner}: verbose must be True or False, got {verbose!r}")
    self._schedule = inverse_sqrt_schedule(warmup_steps, learning_rate)
    self.warmup_steps = warmup_steps
    self.base_lr = float(learning_rate)
    self.last_lr = float(learning_rate)
    self.warmup_init_lr = 0.0
    self.lr_step = (self.base_lr - self.warmup_init_lr) / warmup_steps
    self.decay_factor = self.base_lr * warmup_steps**0.5
    self.last_epoch = last_epoch
    self.verbose = verbose
    self.step()
    self._start = self.last_epoch

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    del state["_schedule"]  # a closure: rebuilt from warmup_steps and base_lr.
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._schedule = inverse_sqrt_schedule(self.warmup_steps, self.base_lr)

  def get_lr(self) -> float:
    """The learning rate at ``last_epoch``, computed in Python floats as Paddle does."""
    if self.last_epoch < self.warmup_steps:
      return self.warmup_init_lr + self.last_epoch * self.lr_step
    return self.decay_factor * self.last_epoch**-0.5

  def step(self, epoch: int | None = None) -> None:
    """Advances ``last_epoch`` by one (or sets it to ``epoch``) and updates ``last_lr``."""
    self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
    self.last_lr = self.get_lr()
    if self.verbose:
      print(f"Epoch {self.last_epoch}: {type(self).__name__} set learning rate to {self.last_lr}.")

  def state_dict(self) -> dict[str, Any]:
    """``{"last_epoch": ..., "last_lr": ...}``, as Paddle's."""
    return {key: getattr(self, key) for key in self.keys}

  def set_state_dict(self, state_dict: Mapping[str, Any]) -> None:
    """Restores ``last_epoch`` and ``last_lr``; raises if either is missing."""
    missing = [key for key in self.keys if key not in state_dict]
    if missing:
      raise RuntimeError(
          "Please check whether state_dict is correct for optimizer. Can't find "
          f"[ {missing[0]} ] in state_dict"
      )
    for key in self.keys:
      setattr(self, key, state_dict[key])

  def __call__(self, count: Any = None) -> Any:
    if count is None:
      return self.last_lr
    return self._schedule(jnp.asarray(count, jnp.float32) + self._start)

  def __repr__(self) -> str:
    return (
        f"InverseSquareRootSchedule(warmup_steps={self.warmup_steps}, "
        f"learning_rate={self.base_lr}, last_epoch={self.last_epoch})"
    )


def ClipGradByGlobalNorm(  # noqa: N802 - Paddle's name.
    clip_norm: float, group_name: str = "default_group", auto_skip_clip: bool = False
) -> optax.GradientTransformation:
  """Paddle's ``ClipGradByGlobalNorm``: :func:`optax_ldl.clip_grad_by_global_norm`.

  ``group_name`` and ``auto_skip_clip`` are accepted: ``auto_skip_clip`` only
  skips a multiplication by exactly 1 in Paddle, so the numbers are the same.
  """
  del group_name, auto_skip_clip
  return clipping.clip_grad_by_global_norm(clip_norm)


def ClipGradByNorm(clip_norm: float) -> optax.GradientTransformation:  # noqa: N802
  """Paddle's ``ClipGradByNorm``: :func:`optax_ldl.clip_grad_by_norm`."""
  return clipping.clip_grad_by_norm(clip_norm)


def ClipGradByValue(  # noqa: N802
    max: float, min: float | None = None  # noqa: A002
) -> optax.GradientTransformation:
  """Paddle's ``ClipGradByValue``: :func:`optax_ldl.clip_grad_by_value`."""
  return clipping.clip_grad_by_value(max, min)


@jax.tree_util.register_static
class AdamWDL(optax.GradientTransformationExtraArgs):
  """PaddleNLP's ``AdamWDL`` constructor: Paddle's arguments, an Optax transformation.

  The instance *is* the transformation of :func:`optax_ldl.adamwdl` (it has
  ``init`` and ``update`` and composes with ``optax.chain``, Flax ``TrainState``
  and ``nnx.Optimizer``). ``beta1``, ``beta2``, ``epsilon`` are optax's ``b1``,
  ``b2``, ``eps``; ``learning_rate`` may be an
  :class:`optax_ldl.InverseSquareRootSchedule` or any Optax schedule;
  ``grad_clip`` takes :func:`ClipGradByGlobalNorm` and friends or any Optax
  transformation; ``name`` is accepted and kept as ``.name``. ``n_layers``
  keeps Paddle's default 12; when the tree shows another depth a
  ``UserWarning`` names both. It survives ``copy``, ``deepcopy`` and
  ``pickle`` (it is rebuilt from its arguments, :attr:`arguments`). What Paddle
  does not have (``floor``, ``stages``, a layer schedule, weight-decay
  multipliers, decay at the base rate) is added with :meth:`with_options`, so
  the constructor keeps Paddle's signature.

  >>> import jax.numpy as jnp
  >>> opt = AdamWDL(learning_rate=InverseSquareRootSchedule(100, 5e-4),
  ...               layerwise_decay=0.8, n_layers=2,
  ...               grad_clip=ClipGradByGlobalNorm(1.0))
  >>> params = {'layers_0': jnp.ones(2), 'layers_1': jnp.ones(2)}
  >>> state = opt.init(params)
  >>> opt.get_lr()
  0.0
  """

  def __new__(
      cls,
      learning_rate: Any = 0.001,
      beta1: Any = 0.9,
      beta2: Any = 0.999,
      epsilon: Any = 1e-08,
      parameters: Any = None,
      weight_decay: Any = 0.01,
      apply_decay_param_fun: Callable[[str], bool] | None = None,
      grad_clip: optax.GradientTransformation | None = None,
      lazy_mode: bool = False,
      multi_precision: bool = False,
      layerwise_decay: Any = 1.0,
      n_layers: Any = 12,
      set_param_lr_fun: Callable[..., Any] | None = layerwise_lr_decay,
      name_dict: Mapping[str, str] | None = None,
      name: str | None = None,
  ):
    arguments = dict(
        learning_rate=learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
        parameters=parameters, weight_decay=weight_decay,
        apply_decay_param_fun=apply_decay_param_fun, grad_clip=grad_clip, lazy_mode=lazy_mode,
        multi_precision=multi_precision, layerwise_decay=layerwise_decay, n_layers=n_layers,
        set_param_lr_fun=set_param_lr_fun, name_dict=name_dict, name=name)
    return cls._build(arguments, {})

  @classmethod
  def _build(cls, arguments: dict[str, Any], options: dict[str, Any]) -> AdamWDL:
    a, o = arguments, {**_NO_OPTIONS, **options}
    learning_rate, beta1, beta2, epsilon, weight_decay = (
        a["learning_rate"], a["beta1"], a["beta2"], a["epsilon"], a["weight_decay"])
    owner = "AdamWDL"
    for kind, arg, value in (("learning_rate", "learning_rate", learning_rate),
                             ("b1", "beta1", beta1), ("b2", "beta2", beta2),
                             ("eps", "epsilon", epsilon), ("weight_decay", "weight_decay",
                                                           weight_decay)):
      checks.hyperparameter(owner, kind, value, arg)
    layer_schedules.check(owner, o["layer_schedule"])
    checks.flag(owner, "weight_decay_at_base_rate", o["weight_decay_at_base_rate"])
    mults = check_mults(owner, o["weight_decay_mults"])
    config = LayerDecay.of(None, owner, layerwise_decay=a["layerwise_decay"],
                           n_layers=a["n_layers"], rule=a["set_param_lr_fun"],
                           name_dict=a["name_dict"], floor=o["floor"], stages=o["stages"])
    tx = adamw_layerwise(
        owner, learning_rate, beta1, beta2, epsilon, weight_decay, config,
        apply_decay_param_fun=a["apply_decay_param_fun"], mask=None, grad_clip=a["grad_clip"],
        lazy_mode=a["lazy_mode"], multi_precision=a["multi_precision"],
        parameters=a["parameters"], layer_schedule=o["layer_schedule"],
        weight_decay_mults=mults,
        weight_decay_at_base_rate=bool(o["weight_decay_at_base_rate"]))
    self = super().__new__(cls, tx.init, tx.update)
    object.__setattr__(self, "_arguments", dict(arguments))
    object.__setattr__(self, "_options", dict(o))
    return self

  def with_options(self, **options: Any) -> AdamWDL:
    r"""This optimizer with options that Paddle's ``AdamWDL`` lacks (:func:`optax_ldl.adamwdl`'s).

    A method, so that the constructor keeps Paddle's signature; options not
    given keep their values (:attr:`options`), errors name ``AdamWDL`` and the option:

    >>> import optax_ldl
    >>> opt = AdamWDL(learning_rate=1e-3, n_layers=12).with_options(
    ...     floor=0.1, layer_schedule=optax_ldl.gradual_unfreezing(100))

    Args:
      **options: ``floor`` (the embeddings' ratio, in ``(0, 1]``, instead of
        ``layerwise_decay``: the decay is :math:`\text{floor}^{1/(n+1)}` with
        :math:`n` = ``n_layers``), ``stages`` (one ratio per stage: an int, or
        the layers of each stage bottom to top), ``layer_schedule``
        (:func:`optax_ldl.gradual_unfreezing`, :func:`optax_ldl.backbone_ramp`,
        :func:`optax_ldl.freeze`), ``weight_decay_mults`` (multipliers per
        group, as data) and ``weight_decay_at_base_rate`` (``True``: the decay
        is not scaled by the layer's ratio). ``floor`` and ``stages`` read the
        layer plan: not with a custom ``set_param_lr_fun``.

    Returns:
      A new :class:`AdamWDL` with the same constructor arguments.
    """
    unknown = sorted(set(options) - set(_NO_OPTIONS))
    if unknown:
      raise TypeError(f"AdamWDL.with_options: unknown option(s) {unknown}; the options are "
                      f"{sorted(_NO_OPTIONS)} (Paddle's arguments go to the constructor)")
    return type(self)._build(self.arguments, {**self.options, **options})

  def with_layer_schedule(self, layer_schedule: Any) -> AdamWDL:
    """``self.with_options(layer_schedule=layer_schedule)``.

    ``AdamWDL(..., layerwise_decay=0.8).with_layer_schedule(optax_ldl.gradual_unfreezing(100))``.
    """
    return self.with_options(layer_schedule=layer_schedule)

  @property
  def options(self) -> dict[str, Any]:
    """The options of :meth:`with_options`, defaults filled in."""
    return dict(self._options)  # pyright: ignore[reportAttributeAccessIssue]

  @property
  def layer_schedule(self) -> Any:
    """The layer schedule (:meth:`with_options`), or ``None``."""
    return self._options["layer_schedule"]  # pyright: ignore[reportAttributeAccessIssue]

  @property
  def arguments(self) -> dict[str, Any]:
    """The constructor's arguments (Paddle's names), defaults filled in."""
    return dict(self._arguments)  # pyright: ignore[reportAttributeAccessIssue]

  @property
  def name(self) -> str | None:
    return self._arguments["name"]  # pyright: ignore[reportAttributeAccessIssue]

  def __reduce__(self) -> Any:
    if getattr(self, "_replaced", False):  # its functions are not its arguments' any more.
      return (optax.GradientTransformationExtraArgs, (self.init, self.update))
    return (_rebuild, (self.arguments, self.options))

  def __copy__(self) -> AdamWDL:
    return self

  def __deepcopy__(self, memo: dict[int, Any]) -> AdamWDL:
    return self

  def _replace(self, **fields: Any) -> AdamWDL:  # pyright: ignore[reportIncompatibleMethodOverride]
    """A copy with ``init``/``update`` replaced, keeping the arguments (``get_lr``, ``name``)."""
    bad = sorted(set(fields) - {"init", "update"})
    if bad:
      raise TypeError(f"AdamWDL._replace: unknown field(s) {bad}; the fields are init, update")
    new = tuple.__new__(type(self), (fields.get("init", self.init),
                                     fields.get("update", self.update)))
    object.__setattr__(new, "_arguments", self._arguments)  # pyright: ignore
    object.__setattr__(new, "_options", self._options)  # pyright: ignore
    object.__setattr__(new, "_replaced", True)
    return new

  def get_lr(self) -> float:
    """The current learning rate, as Paddle's ``Optimizer.get_lr()``.

    A scheduler's ``last_lr``; a plain number itself; an Optax schedule at step 0.
    """
    lr = self._arguments["learning_rate"]  # pyright: ignore[reportAttributeAccessIssue]
    if isinstance(lr, InverseSquareRootSchedule):
      return lr()
    if callable(lr):
      # An Optax schedule's scalar; pyright types a callable Any's result as `object`.
      return float(cast(Any, lr(0)))
    return float(lr)


# What AdamWDL.with_options takes, and its defaults (adamwdl's).
_NO_OPTIONS: dict[str, Any] = dict(floor=None, stages=None, layer_schedule=None,
                                   weight_decay_mults=None, weight_decay_at_base_rate=False)


def _rebuild(arguments: dict[str, Any], options: dict[str, Any]) -> AdamWDL:
  return AdamWDL._build(arguments, options)  # noqa: SLF001 - its own module.
