"""Shared test helpers (imported as ``from helpers import ...``; tests/ is on sys.path)."""

from __future__ import annotations

import re
from typing import Any

import pytest


def assert_names_argument(exc: BaseException | pytest.ExceptionInfo[Any], arg: str) -> None:
  """Asserts that an error is a ``TypeError``/``ValueError`` whose message names ``arg``.

  ``arg`` must appear as a whole word (``b1`` does not match inside ``b12``), so
  a new argument cannot ship with an error that says only "invalid value".
  Accepts an exception or the ``pytest.raises`` context.
  """
  if isinstance(exc, pytest.ExceptionInfo):
    exc = exc.value
  assert isinstance(exc, (TypeError, ValueError)), (
      f"expected a TypeError or ValueError naming {arg!r}, got {type(exc).__name__}: {exc}"
  )
  message = str(exc)
  assert re.search(rf"(?<![\w.]){re.escape(arg)}(?!\w)", message), (
      f"the {type(exc).__name__} does not name the argument {arg!r}: {message}"
  )


def raises_naming(arg: str, fn: Any, *args: Any, **kwargs: Any) -> BaseException:
  """Calls ``fn(*args, **kwargs)``; asserts it raises a TypeError/ValueError naming ``arg``."""
  with pytest.raises((TypeError, ValueError)) as info:
    fn(*args, **kwargs)
  assert_names_argument(info, arg)
  return info.value
