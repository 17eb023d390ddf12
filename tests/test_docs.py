"""The docs: every Python block of every page runs, and the site builds with warnings as errors.

Each page stands alone: its ``python`` blocks run in order in one fresh namespace per page (a
block may use what an earlier block of the same page defined, never another page's). A block
that cannot run here says so visibly in its title, ``title="...: <reason>, so not run by the
docs test"`` (two processes, a GPU, a long shell command); shell blocks must carry such a title.
The strict build (``mkdocs build --strict``) runs when the docs extra is installed
(``pip install -e ".[docs]"``); without it that test is skipped, or fails where
OPTAX_LDL_REQUIRE_DOCS=1.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
NOT_RUN = "not run by the docs test"
FENCE = re.compile(r"^```(\S*)([^\n]*)\n(.*?)^```\s*$", flags=re.M | re.S)


def blocks(page):
  """(language, title line, code, line number) of each fenced block of a page."""
  text = (DOCS / page).read_text(encoding="utf-8")
  return [
      (m.group(1), m.group(2), m.group(3), text.count("\n", 0, m.start()) + 1)
      for m in FENCE.finditer(text)
  ]


def test_every_page_is_in_the_nav():
  nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
  assert PAGES, "no pages under docs/"
  missing = [p for p in PAGES if f": {p}" not in nav]
  assert not missing, f"pages not in mkdocs.yml's nav: {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_blocks_are_runnable_or_say_why_not(page):
  for lang, title, _, line in blocks(page):
    if lang in ("bash", "sh", "shell", "console"):
      assert NOT_RUN in title, f"{page}:{line}: a shell block needs title=\"...{NOT_RUN}\""
    assert lang != "py", f"{page}:{line}: write ```python (run) or give the reason it is not run"


def runnable(page):
  """The page's Python blocks that the test runs: (code, line number)."""
  return [(c, line) for lang, title, c, line in blocks(page)
          if lang == "python" and NOT_RUN not in title]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)])
def test_page_python_blocks_run(page, capsys, monkeypatch, tmp_path):
  code = runnable(page)
  monkeypatch.chdir(tmp_path)
  namespace = {"__name__": f"docs_{page.replace('/', '_').removesuffix('.md')}"}
  for source, line in code:
    # The block's line numbers in tracebacks are the page's.
    compiled = compile("\n" * line + source, str(DOCS / page), "exec")
    exec(compiled, namespace)  # noqa: S102
  capsys.readouterr()


def test_mkdocs_build_strict(tmp_path):
  missing = [m for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
             if importlib.util.find_spec(m.split(".")[0]) is None]
  if missing:
    message = f"needs {missing}: pip install -e '.[docs]'"
    if os.environ.get("OPTAX_LDL_REQUIRE_DOCS") == "1":
      pytest.fail(message + " (OPTAX_LDL_REQUIRE_DOCS=1)")
    pytest.skip(message)
  result = subprocess.run(
      [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
      cwd=ROOT, capture_output=True, text=True, check=False,
      env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's banner about MkDocs 2
  )
  assert result.returncode == 0, result.stdout + result.stderr
