"""Argument checks shared by the public factories: clear errors, eager when possible.

Every message names the function, the argument, the value it got and what is
accepted. A value that is a tracer (``optax.inject_hyperparams`` under ``jit``)
or an array whose value is not yet known is not checked; it was checked when it
was first given as a number.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import jax
import jax.core  # jax.core.Tracer: jax imports it, but type checkers need it named.
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify


def _is_real_number_dtype(dtype: Any) -> bool:
  return np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or (
      dtype == jnp.bfloat16
  )


def concrete_float(value: Any) -> float | None:
  """``float(value)`` for a real Python or concrete array scalar, else ``None``.

  >>> concrete_float(0.5), concrete_float(np.float32(2)), concrete_float(lambda k: k)
  (0.5, 2.0, None)
  """
  if isinstance(value, (jax.core.Tracer, str, bytes)) or callable(value):
    return None
  try:
    array = np.asarray(value)
  except Exception:  # noqa: BLE001 - anything not array-like is checked by type.
    return None
  if array.shape != () or not _is_real_number_dtype(array.dtype) or array.dtype == np.bool_:
    return None
  return float(array)


def check_number(
    owner: str,
    arg: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    accepted: str,
    allow_inf: bool = False,
) -> None:
  """Raises unless ``value`` is a real, finite scalar in the given range.

  ``TypeError`` for a value that is not a real number (a string, a bool, a
  complex number, a callable); ``ValueError`` for a non-scalar array, NaN,
  ``inf`` (unless ``allow_inf``; the range still applies to it) or a value out of
  range. Tracers and arrays without a concrete value pass (shape permitting).

  >>> check_number("f", "eps", float("inf"), low=0.0, accepted="a number > 0")
  Traceback (most recent call last):
  ...
  ValueError: f: eps must be finite (a number > 0), got inf

  Args:
    owner: the public function, named first in the message.
    arg: the argument's name.
    value: the value to check.
    low: the lowest value accepted, or ``None``.
    high: the highest value accepted, or ``None``.
    low_open: ``low`` itself is refused.
    high_open: ``high`` itself is refused.
    accepted: what is accepted, in words (``"a number in [0, 1)"``).
    allow_inf: ``+inf``/``-inf`` are accepted (when in range), e.g. a clip norm.
  """
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, float, np.number, np.ndarray, jax.Array)
  ):
    kind = "a complex number" if isinstance(value, complex) else type(value).__name__
    raise TypeError(f"{owner}: {arg} must be {accepted}, got {value!r} ({kind})")
  dtype = np.result_type(value) if not isinstance(value, jax.Array) else value.dtype
  if not _is_real_number_dtype(dtype):
    raise TypeError(
        f"{owner}: {arg} must be {accepted} (a real number), got {value!r} of dtype {dtype}"
    )
  if np.shape(value) != ():
    raise ValueError(f"{owner}: {arg} must be a scalar ({accepted}), got shape {np.shape(value)}")
  x = concrete_float(value)
  if x is None:  # a tracer: checked when it was a number.
    return
  if math.isnan(x) or (math.isinf(x) and not allow_inf):
    what = "not NaN" if allow_inf else "finite"
    raise ValueError(f"{owner}: {arg} must be {what} ({accepted}), got {value!r}")
  bad = False
  if low is not None:
    bad |= x <= low if low_open else x < low
  if high is not None:
    bad |= x >= high if high_open else x > high
  if bad:
    raise ValueError(f"{owner}: {arg} must be {accepted}, got {value!r}{_rounded_hint(dtype)}")


def _rounded_hint(dtype: Any) -> str:
  """Why a half-precision hyperparameter may be out of range: inject_hyperparams' cast."""
  if dtype not in (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16)):
    return ""
  return (f". A {dtype} hyperparameter is usually optax.inject_hyperparams casting it to the "
          "params' dtype, which rounds it (eps 1e-8 to 0 in float16, b2 0.999 to 1 in "
          "bfloat16): pass hyperparam_dtype=jnp.float32 to optax.inject_hyperparams, or name "
          "these hyperparameters in its static_args")


def check_int(owner: str, arg: str, value: Any, *, minimum: int, accepted: str) -> None:
  """Raises unless ``value`` is an integer ``>= minimum`` (tracers pass).

  >>> check_int("f", "n_layers", 2.0, minimum=1, accepted="an int >= 1")
  Traceback (most recent call last):
  ...
  TypeError: f: n_layers must be an int >= 1, got 2.0
  """
  if isinstance(value, jax.core.Tracer):
    return
  array = None
  if not isinstance(value, (bool, np.bool_, str, bytes)):
    try:
      array = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything not array-like is refused below.
      array = None
  if array is None or array.shape != () or not np.issubdtype(array.dtype, np.integer):
    raise TypeError(f"{owner}: {arg} must be {accepted}, got {value!r}")
  if int(array) < minimum:
    raise ValueError(f"{owner}: {arg} must be {accepted}, got {value!r}")


def _takes_one_argument(fn: Any) -> bool | None:
  """Whether ``fn(count)`` binds; ``None`` when the signature cannot be read."""
  try:
    signature = inspect.signature(fn)
  except (TypeError, ValueError):
    return None
  try:
    signature.bind(0)
  except TypeError:
    return False
  return True


def check_schedule(owner: str, arg: str, value: Any, accepted: str) -> None:
  """Raises unless ``value`` is a callable of the step count that returns a number.

  The call is traced with ``jax.eval_shape`` on an int32 count (nothing is
  computed): a schedule taking no argument, or returning ``None``, a string or
  an array that is not a number, is refused now rather than deep inside the
  first update. A schedule that cannot be traced (Python control flow on the
  count) is not refused: optax may still call it with a concrete count.

  >>> check_schedule("f", "lr", lambda: 1e-3, "a schedule")
  Traceback (most recent call last):
  ...
  TypeError: f: lr must be a schedule: a function of the step count, got a callable of ()
  """
  if not callable(value):
    raise TypeError(f"{owner}: {arg} must be {accepted}, got {value!r}")
  takes = _takes_one_argument(value)
  if takes is False:
    raise TypeError(
        f"{owner}: {arg} must be {accepted}: a function of the step count, got a callable "
        f"of {inspect.signature(value)}"
    )
  try:
    out = jax.eval_shape(value, jax.ShapeDtypeStruct((), jnp.int32))
  except TypeError as e:
    if "not a valid JAX type" in str(e):  # it returns a string, a dict of strings ...
      raise TypeError(
          f"{owner}: {arg} must be {accepted}: its value at a step count must be a real "
          f"number ({e})"
      ) from e
    return  # untraceable (Python control flow on the count): checked when called.
  except Exception:  # noqa: BLE001 - untraceable schedules are checked when called.
    return
  leaves = jax.tree.leaves(out)
  ok = (
      len(leaves) == 1
      and not isinstance(out, (list, tuple, dict))
      and _is_real_number_dtype(getattr(leaves[0], "dtype", np.float64))
      and getattr(leaves[0], "dtype", None) != np.bool_
  )
  if not ok:
    shown = out if len(leaves) != 1 else f"{type(out).__name__} {out}"
    raise TypeError(
        f"{owner}: {arg} must be {accepted}: its value at a step count must be a real "
        f"number, but {arg}(count) returns {shown}"
    )
  shape = getattr(leaves[0], "shape", ())
  if shape != ():
    raise ValueError(
        f"{owner}: {arg} must be {accepted}: its value at a step count must be a scalar, "
        f"but {arg}(count) has shape {shape}"
    )


def check_schedule_or_number(owner: str, arg: str, value: Any, accepted: str) -> None:
  """A learning rate: a schedule of the step count (see :func:`check_schedule`), or a number.

  A number must be finite and ``>= 0``.

  >>> check_schedule_or_number("f", "learning_rate", float("nan"), "a number >= 0 or a schedule")
  Traceback (most recent call last):
  ...
  ValueError: f: learning_rate must be finite (a number >= 0 or a schedule), got nan
  """
  if callable(value):
    check_schedule(owner, arg, value, accepted)
    return
  check_number(owner, arg, value, low=0.0, accepted=accepted)


def check_number_at_run_time(
    owner: str,
    arg: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    accepted: str,
) -> None:
  """:func:`check_number`'s range check as a ``jax.experimental.checkify`` check.

  For a value known only at run time (a hyperparameter injected with
  ``optax.inject_hyperparams``, a tracer under ``jit``): the check is part of
  the traced computation, so a jitted function using it must be wrapped in
  ``checkify.checkify`` (its error's ``throw()`` raises); eagerly, a failed
  check raises ``checkify.JaxRuntimeError`` (a ``ValueError``) at once.

  >>> import jax.numpy as jnp
  >>> from jax.experimental import checkify
  >>> def f(decay):
  ...   check_number_at_run_time("f", "layerwise_decay", decay, low=0.0, low_open=True,
  ...                            high=1.0, accepted="a number in (0, 1]")
  ...   return decay
  >>> err, _ = checkify.checkify(jax.jit(f))(jnp.float32(1.5))
  >>> print(err.get())
  f: layerwise_decay must be a number in (0, 1], got 1.5 (`check` failed)
  """
  x = jnp.asarray(value)
  ok = jnp.isfinite(x)
  if low is not None:
    ok &= x > low if low_open else x >= low
  if high is not None:
    ok &= x < high if high_open else x <= high
  checkify.check(ok, f"{_braces(owner)}: {_braces(arg)} must be {_braces(accepted)}, got {{}}",
                 x)


def check_int_at_run_time(owner: str, arg: str, value: Any, *, minimum: int,
                          accepted: str) -> None:
  """:func:`check_int` as a ``checkify`` check (see :func:`check_number_at_run_time`).

  >>> import jax.numpy as jnp
  >>> from jax.experimental import checkify
  >>> def f(n):
  ...   check_int_at_run_time("f", "n_layers", n, minimum=1, accepted="an int >= 1")
  ...   return n
  >>> err, _ = checkify.checkify(jax.jit(f))(jnp.int32(0))
  >>> print(err.get())
  f: n_layers must be an int >= 1, got 0 (`check` failed)
  """
  x = jnp.asarray(value)
  ok = x >= minimum
  if not jnp.issubdtype(x.dtype, jnp.integer):
    ok &= jnp.isfinite(x) & (x == jnp.round(x))
  checkify.check(ok, f"{_braces(owner)}: {_braces(arg)} must be {_braces(accepted)}, got {{}}",
                 x)


def _braces(text: str) -> str:
  """``text`` with ``{`` and ``}`` doubled, for a ``str.format`` message."""
  return text.replace("{", "{{").replace("}", "}}")


# One validator per argument of the public factories. Each takes the caller's name
# (``adamwdl``, ``AdamWDL``, ``layerwise``, ``describe``, ``LayerDecay``) and, where the
# caller spells the argument its own way (Paddle's ``beta1`` for optax's ``b1``), that spelling.

# The accepted range of each numeric hyperparameter (check_number's keywords).
RANGES: dict[str, dict[str, Any]] = {
    "learning_rate": dict(low=0.0, accepted="a number >= 0 or a schedule (callable)"),
    "b1": dict(low=0.0, high=1.0, high_open=True, accepted="a number in [0, 1)"),
    "b2": dict(low=0.0, high=1.0, high_open=True, accepted="a number in [0, 1)"),
    "eps": dict(low=0.0, low_open=True, accepted="a number > 0"),
    "weight_decay": dict(low=0.0, accepted="a number >= 0"),
    "layerwise_decay": dict(low=0.0, low_open=True, high=1.0, accepted="a number in (0, 1]"),
}


def hyperparameter(owner: str, kind: str, value: Any, arg: str | None = None) -> None:
  """Checks a numeric hyperparameter of kind ``kind`` (a key of :data:`RANGES`).

  ``arg`` is the name the caller gave it (default: ``kind``).
  """
  if kind == "learning_rate":
    check_schedule_or_number(owner, arg or kind, value, RANGES[kind]["accepted"])
  else:
    check_number(owner, arg or kind, value, **RANGES[kind])


def flag(owner: str, arg: str, value: Any) -> None:
  """Raises unless ``value`` is ``True`` or ``False`` (a NumPy bool too)."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{owner}: {arg} must be True or False, got {value!r}")


def n_layers(owner: str, value: Any) -> None:
  """``None``, an int ``>= 1`` (NumPy and JAX integers too), or ``{stack prefix: int >= 1}``."""
  if value is None:
    return
  if isinstance(value, dict) or hasattr(value, "items"):
    for stack, depth in value.items():
      if not isinstance(stack, str):
        raise TypeError(f"{owner}: n_layers keys must be stack path prefixes (str), got "
                        f"{stack!r}")
      check_int(owner, f"n_layers[{stack!r}]", depth, minimum=1, accepted="an int >= 1")
    return
  check_int(owner, "n_layers", value, minimum=1,
            accepted="an int >= 1, a dict {stack prefix: int}, or None to read it from the tree")


def layer_rule(owner: str, value: Any, arg: str = "set_param_lr_fun") -> None:
  """A custom layer rule ``(decay, name_dict, n_layers, param) -> ratio``, or ``None``."""
  if value is not None and not callable(value):
    raise TypeError(
        f"{owner}: {arg} must be a function (decay, name_dict, n_layers, param) -> ratio, "
        f"or None for the path rule; got {value!r}"
    )


def name_dict(owner: str, value: Any) -> None:
  """``None`` or a mapping of path names (str) to the names a rule reads (str)."""
  if value is None:
    return
  if not hasattr(value, "items"):
    raise TypeError(f"{owner}: name_dict must be a dict of path name -> name, got {value!r}")
  bad = [(k, v) for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str)]
  if bad:
    raise TypeError(
        f"{owner}: name_dict must map path names (str) to names (str); the entry "
        f"{bad[0][0]!r}: {bad[0][1]!r} is not."
    )
