"""Argument checks shared by the public factories: clear errors, eager when possible.

A value that is a tracer (``optax.inject_hyperparams`` under ``jit``) or an
array whose value is not yet known is not checked; it was checked when it was
first given as a number.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.core  # jax.core.Tracer: jax imports it, but type checkers need it named.
import numpy as np


def concrete_float(value: Any) -> float | None:
  """``float(value)`` for a Python or concrete array scalar, else ``None``."""
  if isinstance(value, jax.core.Tracer) or callable(value):
    return None
  try:
    array = np.asarray(value)
  except Exception:  # noqa: BLE001 - anything not array-like is checked by type.
    return None
  if array.shape != () or not np.issubdtype(array.dtype, np.number):
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
) -> None:
  """Raises ``ValueError`` naming ``owner``, ``arg`` and ``accepted`` when out of range."""
  if isinstance(value, bool) or not (
      isinstance(value, (int, float, np.number, np.ndarray, jax.Array))
  ):
    raise TypeError(f"{owner}: {arg} must be {accepted}, got {value!r}")
  x = concrete_float(value)
  if x is None:
    if np.shape(value) != ():
      raise ValueError(f"{owner}: {arg} must be a scalar ({accepted}), got shape {np.shape(value)}")
    return
  bad = math.isnan(x)
  if low is not None:
    bad |= x <= low if low_open else x < low
  if high is not None:
    bad |= x >= high if high_open else x > high
  if bad:
    raise ValueError(f"{owner}: {arg} must be {accepted}, got {value!r}")


def check_int(owner: str, arg: str, value: Any, *, minimum: int, accepted: str) -> None:
  """Raises unless ``value`` is an integer ``>= minimum`` (tracers pass)."""
  if isinstance(value, jax.core.Tracer):
    return
  array = np.asarray(value) if not isinstance(value, bool) else None
  if array is None or array.shape != () or not np.issubdtype(array.dtype, np.integer):
    raise TypeError(f"{owner}: {arg} must be {accepted}, got {value!r}")
  if int(array) < minimum:
    raise ValueError(f"{owner}: {arg} must be {accepted}, got {value!r}")


def check_schedule_or_number(owner: str, arg: str, value: Any, accepted: str) -> None:
  """A learning rate: a callable schedule, or a number ``>= 0``."""
  if callable(value):
    return
  check_number(owner, arg, value, low=0.0, accepted=accepted)
