"""Builds the notebooks of colab/ from their jupytext sources (the ``.py`` files).

    python -m colab.sync           # rewrite colab/<name>.ipynb from colab/<name>.py
    python -m colab.sync --check   # exit 1 if an .ipynb differs from what its source gives

The ``.py`` files (jupytext percent format: ``# %%`` starts a code cell, ``# %% [markdown]`` a
markdown cell) are the source of truth and are linted with the rest of the repository; the
``.ipynb`` files are what Colab opens, kept without outputs and with stable cell ids so that
rebuilding gives the same file. A notebook edited in Colab or Jupyter goes back to its source
with ``jupytext --to py:percent colab/<name>.ipynb``, then ``python -m colab.sync``.
"""

from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
NOTEBOOKS = ("quickstart", "finetune_minilm", "benchmark")


def build(name: str) -> str:
  """The text of ``colab/<name>.ipynb`` as built from ``colab/<name>.py``."""
  import jupytext
  import nbformat

  nb = jupytext.reads((HERE / f"{name}.py").read_text(encoding="utf-8"), fmt="py:percent")
  nb.metadata.pop("jupytext", None)
  for i, cell in enumerate(nb.cells):
    cell["id"] = f"{name[:20]}-{i:02d}"
    if cell["cell_type"] == "code":
      cell["outputs"], cell["execution_count"] = [], None
    cell["metadata"] = {}
  nbformat.validate(nb)
  return nbformat.writes(nb) + "\n"


def main(argv: list[str]) -> int:
  check = "--check" in argv
  stale = []
  for name in NOTEBOOKS:
    path = HERE / f"{name}.ipynb"
    text = build(name)
    if check:
      if not path.exists() or path.read_text(encoding="utf-8") != text:
        stale.append(path.name)
    else:
      path.write_text(text, encoding="utf-8")
      print("wrote", path)
  if stale:
    print("stale (run python -m colab.sync):", ", ".join(stale))
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
