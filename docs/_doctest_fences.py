"""A griffe extension for the API pages: renders docstrings' ``>>>`` examples as code.

Google-style docstrings put runnable examples (checked by the doctests) in their text, where
Markdown would read ``[0.5, 1.0]`` as a link; this wraps every run of ``>>>`` / ``...`` lines
and their output in a ``pycon`` fence.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
  out: list[str] = []
  lines = text.split("\n")
  i = 0
  while i < len(lines):
    line = lines[i]
    stripped = line.lstrip()
    if stripped.startswith(">>>"):
      indent = line[: len(line) - len(stripped)]
      block = []
      while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
        block.append(lines[i][len(indent):])
        i += 1
      out += [f"{indent}```pycon", *(indent + b for b in block), f"{indent}```"]
      continue
    out.append(line)
    i += 1
  return "\n".join(out)


class DoctestFences(griffe.Extension):
  def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
    if obj.docstring is not None and ">>>" in obj.docstring.value:
      obj.docstring.value = fence_doctests(obj.docstring.value)
