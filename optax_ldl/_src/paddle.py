"""Paddle-compatible names: ``AdamWDL``, ``layerwise_lr_decay``, ``InverseSquareRootSchedule``,
``ClipGradBy*``.

Code written for PaddleNLP ports by changing its imports: the constructors take
Paddle's argument names and defaults and build the Optax transformations of
this package.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, cast

import jax
import jax.core  # jax.core.Tracer: jax imports it, but type checkers need it named.
import jax.numpy as jnp
import numpy as np
import optax

from optax_ldl._src import adamwdl as adamwdl_lib
from optax_ldl._src import checks, clipping, rules
from optax_ldl._src.schedules import inverse_sqrt_schedule


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


@dataclasses.dataclass
class Param:
  """What a layer rule is given about one parameter (Paddle's ``Parameter``).

  Rules read ``param.name`` and return the ratio; rules written for older
  PaddleNLP that multiply ``param.optimize_attr["learning_rate"]`` and return
  ``None`` work too.

  Attributes:
    name: the parameter's path name, keys joined by ``/`` (or its
      ``name_dict`` entry).
    path: the JAX key path.
    shape: the parameter's shape.
    dtype: the parameter's dtype.
    optimize_attr: ``{"learning_rate": 1.0}``, for Paddle-style rules to scale.
  """

  name: str
  path: tuple[Any, ...] = ()
  shape: tuple[int, ...] = ()
  dtype: Any = None
  optimize_attr: dict[str, Any] = dataclasses.field(
      default_factory=lambda: {"learning_rate": 1.0}
  )


def _param_name(param: Any) -> str:
  """The name of ``param``: a string, a JAX key path, or an object's ``.name``."""
  if isinstance(param, str):
    return param
  if isinstance(param, tuple):
    return jax.tree_util.keystr(param, simple=True, separator="/")
  name = getattr(param, "name", None)
  if not isinstance(name, str):
    raise TypeError(
        "param must be a name (str), a JAX key path (tuple) or an object with "
        f"a str .name (like optax_ldl.Param), got {param!r}"
    )
  return name


def layerwise_lr_decay(
    decay_rate: Any,
    name_dict: Mapping[str, str] | None,
    n_layers: Any,
    param: Any,
) -> Any:
  r"""PaddleNLP's layer-wise lr decay rule: the lr ratio of one parameter.

  With ``n_layers`` transformer layers numbered ``0 .. n_layers-1``:

  .. math::

    r = \begin{cases}
      \alpha^{L - i} & \text{parameter in layer } i \\
      \alpha^{L + 1} & \text{embedding} \\
      1 & \text{otherwise (pooler, head, final norm)}
    \end{cases}

  so the top layer gets :math:`\alpha` (not 1) and the embeddings the smallest
  ratio. Paddle static names (``encoder.layers.N``, ``embedding``) get exactly
  Paddle's result; JAX path names get the path rule (:func:`optax_ldl.classify`).
  Passed as ``set_param_lr_fun`` (``AdamWDL``'s default), the whole tree is
  placed by the path rule, which also sees nesting and stacks.

  Like Paddle's function (PaddleNLP 2.8) it returns the ratio; it does not
  touch ``param.optimize_attr``.

  >>> round(layerwise_lr_decay(0.9, None, 12, 'encoder.layers.11.linear1.weight'), 6)
  0.9
  >>> round(layerwise_lr_decay(0.9, None, 12, 'params/embeddings/word_embeddings/embedding'), 6)
  0.254187
  >>> layerwise_lr_decay(0.9, None, 12, 'params/classifier/kernel')
  1.0

  Args:
    decay_rate: the layer-wise decay :math:`\alpha`, in ``(0, 1]``.
    name_dict: maps the parameter's name to the name the rule reads (Paddle's
      dynamic-to-static names), or ``None`` to read the name itself.
    n_layers: the number of transformer layers :math:`L`.
    param: a name, a JAX key path, or an object with ``.name`` (e.g.
      :class:`optax_ldl.Param`).

  Returns:
    The ratio (a float, or a JAX scalar if ``decay_rate`` is one).

  References:
    Yang et al., `XLNet <https://arxiv.org/abs/1906.08237>`_, 2019;
    Clark et al., `ELECTRA <https://arxiv.org/abs/2003.10555>`_, 2020.
  """
  name = _param_name(param)
  match = rules.classify(rules.static_name("layerwise_lr_decay", name_dict, name))
  if match.kind == "layer":
    if match.layer is None:
      raise ValueError(
          f"parameter {name!r} is in a nested numbered block {match.indices}; its layer "
          "depends on the whole tree. Use the default rule (set_param_lr_fun=None), which "
          "numbers nested blocks straight through, or layers=optax_ldl.trace_layers(...)."
      )
    if not isinstance(n_layers, jax.core.Tracer) and match.layer > int(n_layers):
      raise ValueError(
          f"parameter {name!r} is in layer {match.layer}, but n_layers={int(n_layers)} is "
          "smaller, which would give it a ratio above 1 (layers are numbered from 0); pass "
          f"n_layers >= {match.layer + 1}."
      )
    return decay_rate ** (n_layers - match.layer)
  if match.kind == "embedding":
    return decay_rate ** (n_layers + 1)
  return 1.0


def call_rule(rule: Callable[..., Any], decay: Any, name_dict: Any, n_layers: Any,
              param: Param) -> Any:
  """``rule(decay, name_dict, n_layers, param)``, its result checked.

  A rule that returns ``None`` is a Paddle-style rule that scaled
  ``param.optimize_attr["learning_rate"]``: that value is the ratio.
  """
  try:
    inspect.signature(rule).bind(decay, name_dict, n_layers, param)
  except TypeError:
    raise TypeError(
        f"set_param_lr_fun must take (decay, name_dict, n_layers, param), as PaddleNLP's "
        f"layerwise_lr_decay does; {rule!r} cannot be called that way. Pass the unbound "
        "function (not a functools.partial with arguments already bound: AdamWDL binds "
        "layerwise_decay, name_dict and n_layers itself)."
    ) from None
  except ValueError:  # no signature (a builtin): let the call decide.
    pass
  ratio = rule(decay, name_dict, n_layers, param)
  if ratio is None:
    ratio = param.optimize_attr["learning_rate"]
  if isinstance(ratio, (str, bytes, bool)) or not (
      isinstance(ratio, (int, float, np.number, np.ndarray, jax.Array))
  ):
    raise TypeError(
        f"set_param_lr_fun returned {ratio!r} for parameter {param.name!r}; a ratio must "
        "be a finite real number >= 0 (or None after scaling param.optimize_attr)."
    )
  if not isinstance(ratio, jax.core.Tracer):
    value = np.asarray(ratio)
    if (value.shape != () or np.iscomplexobj(value) or not np.isfinite(value)
        or value < 0):
      raise ValueError(
          f"set_param_lr_fun returned {ratio!r} for parameter {param.name!r}; a ratio "
          "must be a finite real scalar >= 0."
      )
  return ratio


# adamwdl's argument names -> AdamWDL's (Paddle's), for errors that name what the caller wrote.
_PADDLE_NAMES = {"b1": "beta1", "b2": "beta2", "eps": "epsilon"}

# AdamWDL's arguments, in Paddle's order.
_ADAMWDL_ARGS = (
    "learning_rate", "beta1", "beta2", "epsilon", "parameters", "weight_decay",
    "apply_decay_param_fun", "grad_clip", "lazy_mode", "multi_precision", "layerwise_decay",
    "n_layers", "set_param_lr_fun", "name_dict", "name",
)


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
  ``pickle`` (it is rebuilt from its arguments, :attr:`arguments`).

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
    given = locals()
    arguments = {arg: given[arg] for arg in _ADAMWDL_ARGS}
    tx = adamwdl_lib.build(
        arguments["learning_rate"],
        arguments["beta1"],
        arguments["beta2"],
        arguments["epsilon"],
        arguments["weight_decay"],
        owner="AdamWDL",
        names=_PADDLE_NAMES,
        layerwise_decay=arguments["layerwise_decay"],
        n_layers=arguments["n_layers"],
        set_param_lr_fun=arguments["set_param_lr_fun"],
        name_dict=arguments["name_dict"],
        apply_decay_param_fun=arguments["apply_decay_param_fun"],
        grad_clip=arguments["grad_clip"],
        lazy_mode=arguments["lazy_mode"],
        multi_precision=arguments["multi_precision"],
        parameters=arguments["parameters"],
    )
    self = super().__new__(cls, tx.init, tx.update)
    object.__setattr__(self, "_arguments", arguments)
    return self

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
    return (_rebuild, (self.arguments,))

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


def _rebuild(arguments: dict[str, Any]) -> AdamWDL:
  return AdamWDL(**arguments)
