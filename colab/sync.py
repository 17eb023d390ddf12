"""Builds the notebooks of colab/ from their jupytext sources and stores their outputs.

    python -m colab.sync                     # rewrite colab/<name>.ipynb from colab/<name>.py
    python -m colab.sync --check             # exit 1 if an .ipynb's cells differ from its source
    python -m colab.sync --execute NAME ...  # run the notebooks, store their outputs (minutes)

The ``.py`` files (jupytext percent format: ``# %%`` starts a code cell, ``# %% [markdown]`` a
markdown cell) are the source of truth and are linted with the rest of the repository; the
``.ipynb`` files are what GitHub shows and Colab opens. They store the outputs of one run
(figures included) so that a reader sees them without running anything; the setting that run
used (``STORED``: full, or small with ``OPTAX_LDL_NB_SMALL=1``) and its wall time are
recorded in the notebook's metadata under ``optax_ldl``.

The check compares the notebooks without their outputs: the same cells (type, source, id) and
the same metadata as the source builds. Rebuilding keeps the stored outputs while the cells
are unchanged and drops them all as soon as one cell changes (outputs of other code are worse
than none); then ``--execute`` stores fresh ones. A notebook edited in Colab or Jupyter goes
back to its source with ``jupytext --to py:percent colab/<name>.ipynb``, then
``python -m colab.sync``.
"""

from __future__ import annotations

import copy
import os
import pathlib
import sys
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
NOTEBOOKS = ("quickstart", "finetune_minilm", "benchmark")
# The setting of the stored outputs: the full run where it takes minutes on 2 CPU cores, the
# small one (OPTAX_LDL_NB_SMALL=1) where the full run needs an accelerator or a quarter of an
# hour (its results are on the docs' results and benchmarks pages).
STORED = {"quickstart": "full", "finetune_minilm": "small", "benchmark": "small"}
RECORD = "optax_ldl"  # the notebook metadata key of the stored run: setting and seconds
# Metadata that a kernel adds when it runs a notebook: not part of the source.
RUN_METADATA = (RECORD, "language_info", "widgets")


def build(name: str) -> Any:
  """``colab/<name>.ipynb`` as built from ``colab/<name>.py``: a notebook without outputs."""
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
  return nb


def without_outputs(nb: Any) -> Any:
  """A copy of ``nb`` without outputs, execution counts and the metadata of a run."""
  nb = copy.deepcopy(nb)
  for key in RUN_METADATA:
    nb.metadata.pop(key, None)
  for cell in nb.cells:
    if cell["cell_type"] == "code":
      cell["outputs"], cell["execution_count"] = [], None
  return nb


def matches(stored: Any, built: Any) -> bool:
  """Whether a stored notebook has the cells and metadata that its source builds."""
  return without_outputs(stored) == without_outputs(built)


def text(nb: Any) -> str:
  import nbformat

  return nbformat.writes(nb) + "\n"


def read(name: str) -> Any | None:
  import nbformat

  path = HERE / f"{name}.ipynb"
  return nbformat.reads(path.read_text(encoding="utf-8"), as_version=4) if path.exists() else None


def execute(name: str) -> Any:
  """Runs the built notebook in colab/ at its ``STORED`` setting; returns it with its outputs."""
  import nbclient

  nb = build(name)
  small = STORED[name] == "small"
  env = {"OPTAX_LDL_NB_SMALL": "1" if small else "0"}
  saved = {k: os.environ.get(k) for k in (*env, "MPLBACKEND")}
  os.environ.update(env)
  os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend: figures as PNG outputs
  start = time.perf_counter()
  try:
    nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(HERE)}}).execute()
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  seconds = time.perf_counter() - start
  for cell in nb.cells:
    cell["metadata"] = {}
  nb.metadata.pop("widgets", None)
  nb.metadata[RECORD] = {
      "outputs": "small (OPTAX_LDL_NB_SMALL=1)" if small else "full",
      "seconds": round(seconds),
  }
  return nb


def main(argv: list[str]) -> int:
  if "--execute" in argv:
    names = [a for a in argv if a != "--execute"] or list(NOTEBOOKS)
    unknown = sorted(set(names) - set(NOTEBOOKS))
    if unknown:
      print(f"--execute: unknown notebook(s) {unknown}; expected some of {list(NOTEBOOKS)}")
      return 2
    for name in names:
      print(f"running {name}.ipynb ({STORED[name]} setting) ...", flush=True)
      nb = execute(name)
      (HERE / f"{name}.ipynb").write_text(text(nb), encoding="utf-8")
      print(f"wrote {HERE / name}.ipynb: {nb.metadata[RECORD]['seconds']} s", flush=True)
    return 0
  check = "--check" in argv
  stale = []
  for name in NOTEBOOKS:
    path = HERE / f"{name}.ipynb"
    built, stored = build(name), read(name)
    if stored is not None and matches(stored, built):
      continue
    if check:
      stale.append(path.name)
    else:
      path.write_text(text(built), encoding="utf-8")
      print(f"wrote {path} without outputs: store them with python -m colab.sync --execute {name}")
  if stale:
    print("stale (run python -m colab.sync):", ", ".join(stale))
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
