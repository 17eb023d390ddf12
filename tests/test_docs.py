"""The docs: every Python block of every page runs, and the site builds with warnings as errors.

Each page stands alone: its ``python`` blocks run in order in one fresh namespace per page (a
block may use what an earlier block of the same page defined, never another page's). A block
that cannot run here says so visibly in its caption, written as a MyST ``code-block``::

    ```{code-block} bash
    :caption: shell: <reason>, so not run by the docs test
    ```

(two processes, a GPU, a long shell command); shell blocks must carry such a caption. The
Sphinx build (``python -m sphinx -W``, which also runs the blocks and shows their output, see
docs/_ext/run_blocks.py) runs when the docs extra is installed (``pip install -e ".[docs]"``);
without it those tests are skipped, or fail where OPTAX_LDL_REQUIRE_DOCS=1. The built API page
is read back: every public name is there, and no Sphinx markup is left unrendered.
"""

from __future__ import annotations

import fnmatch
import html
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

import optax_ldl

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
               if not p.relative_to(DOCS).as_posix().startswith("_"))
NOT_RUN = "not run by the docs test"
# A fence: ```lang or ```{code-block} lang, then (for a directive) its :option: lines.
FENCE = re.compile(r"^```(\{code-block\} *)?(\S*)[^\n]*\n(.*?)^```\s*$", flags=re.M | re.S)
OPTION = re.compile(r"^:(\w+):[ \t]*(.*)$")


def blocks(page):
  """(language, caption, code, line number of the fence) of each fenced code block of a page."""
  text = (DOCS / page).read_text(encoding="utf-8")
  out = []
  for m in FENCE.finditer(text):
    body, options = m.group(3), {}
    if m.group(1):  # a code-block directive: its options come first.
      lines = body.split("\n")
      while lines and OPTION.match(lines[0]):
        key, value = OPTION.match(lines[0]).groups()
        options[key] = value
        lines.pop(0)
      if options and lines and not lines[0].strip():  # the blank line after the options
        lines.pop(0)
      body = "\n".join(lines)
    out.append((m.group(2), options.get("caption", ""), body, text.count("\n", 0, m.start()) + 1))
  return out


def toctree_entries():
  text = (DOCS / "index.md").read_text(encoding="utf-8")
  tree = re.search(r"^```\{toctree\}\n(.*?)^```", text, flags=re.M | re.S)
  assert tree, "docs/index.md has no toctree"
  return [line.strip() for line in tree.group(1).splitlines()
          if line.strip() and not line.startswith(":")]


def test_every_page_is_in_the_toctree():
  assert PAGES, "no pages under docs/"
  entries = toctree_entries()
  missing = [p for p in PAGES if p != "index.md"
             and not any(fnmatch.fnmatch(p.removesuffix(".md"), e) for e in entries)]
  assert not missing, f"pages in no entry of the toctree of docs/index.md: {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_blocks_are_runnable_or_say_why_not(page):
  text = (DOCS / page).read_text(encoding="utf-8")
  for mkdocs in ("!!! ", "??? ", '```python title="', "\n::: "):
    assert mkdocs not in text, f"{page}: MkDocs syntax {mkdocs!r}: write MyST (docs/conf.py)"
  for lang, caption, _, line in blocks(page):
    if lang in ("bash", "sh", "shell", "console"):
      assert NOT_RUN in caption, f"{page}:{line}: a shell block needs :caption: ...{NOT_RUN}"
    assert lang != "py", f"{page}:{line}: write ```python (run) or give the reason it is not run"


def runnable(page):
  """The page's Python blocks that the test runs: (code, line number)."""
  return [(c, line) for lang, caption, c, line in blocks(page)
          if lang == "python" and NOT_RUN not in caption]


def test_blocks_parse_titles_and_code():
  assert any(NOT_RUN in caption and lang == "python" and code.startswith("import")
             for page in PAGES for lang, caption, code, _ in blocks(page))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)])
def test_page_python_blocks_run(page, capsys, monkeypatch, tmp_path):
  code = runnable(page)
  imported = {m for c, _ in code for m in re.findall(r"^(?:import|from) (\w+)", c, flags=re.M)}
  missing = sorted(m for m in imported if importlib.util.find_spec(m) is None)
  if missing:  # matplotlib, orbax: the docs extra
    message = f"{page} imports {missing}: pip install -e '.[docs]'"
    if os.environ.get("OPTAX_LDL_REQUIRE_DOCS") == "1":
      pytest.fail(message + " (OPTAX_LDL_REQUIRE_DOCS=1)")
    pytest.skip(message)
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("MPLBACKEND", "Agg")
  namespace = {"__name__": f"docs_{page.replace('/', '_').removesuffix('.md')}"}
  for source, line in code:
    # The block's line numbers in tracebacks are the page's.
    compiled = compile("\n" * line + source, str(DOCS / page), "exec")
    exec(compiled, namespace)  # noqa: S102
  capsys.readouterr()
  if "matplotlib.pyplot" in sys.modules:  # the build shows a block's open figures; drop them
    sys.modules["matplotlib.pyplot"].close("all")


# --- the built site ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory):
  """The site built once with warnings as errors: (return code, output, html folder)."""
  missing = [m for m in ("sphinx", "myst_parser", "sphinx_book_theme", "sphinx_copybutton")
             if importlib.util.find_spec(m) is None]
  if missing:
    message = f"needs {missing}: pip install -e '.[docs]'"
    if os.environ.get("OPTAX_LDL_REQUIRE_DOCS") == "1":
      pytest.fail(message + " (OPTAX_LDL_REQUIRE_DOCS=1)")
    pytest.skip(message)
  out = tmp_path_factory.mktemp("site")
  result = subprocess.run(
      [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
       str(DOCS), str(out)],
      cwd=ROOT, capture_output=True, text=True, check=False,
  )
  return result.returncode, result.stdout + result.stderr, out


def visible_text(page_html):
  """The text a reader sees: no tags, scripts or styles, entities decoded."""
  page_html = re.sub(r"<(script|style)\b.*?</\1>", "", page_html, flags=re.S)
  return html.unescape(re.sub(r"<[^>]+>", "", page_html))


@pytest.mark.slow
def test_sphinx_build_with_warnings_as_errors(site):
  returncode, output, _ = site
  assert returncode == 0, output


@pytest.mark.slow
def test_api_page_renders_every_public_name_and_its_math(site):
  _, _, out = site
  api = (out / "api.html").read_text(encoding="utf-8")
  missing = [n for n in optax_ldl.__all__ if f'id="optax_ldl.{n}"' not in api]
  assert not missing, f"public names missing from docs/api.md: {missing}"

  text = visible_text(api)
  raw = sorted(set(re.findall(r":(?:func|class|meth|math|attr|mod|exc|obj|data):`", text)))
  assert not raw, f"unrendered Sphinx roles on the API page: {raw}"
  assert ".. math::" not in text and ".. code-block::" not in text
  # Each signature parsed as Python (otherwise Sphinx shows it raw, with ~module prefixes).
  signatures = [visible_text(s) for s in re.findall(r'<dt class="sig[^"]*".*?</dt>', api, re.S)]
  assert len(signatures) >= len(optax_ldl.__all__)
  unparsed = [s.split("(")[0].strip() for s in signatures if "~" in s or "<" in s]
  assert not unparsed, f"signatures shown unparsed: {unparsed}"

  # adamwdl's AdamW update is math for MathJax, not literal LaTeX in a code block.
  assert re.search(r"<script[^>]+(mathjax|tex-mml-chtml)", api, flags=re.I), "no MathJax"
  start = api.index('id="optax_ldl.adamwdl"')
  adamwdl = api[start:api.index('id="optax_ldl.layerwise"', start)]
  display = re.findall(r'<div class="math[^"]*">(.*?)</div>', adamwdl, flags=re.S)
  assert any(r"\beta_1 m_{t-1}" in m and r"\frac{m_t" in m for m in display), display
  assert re.search(r'<span class="math[^"]*">\\\(\\eta_t r_p\\\)</span>', adamwdl)


@pytest.mark.slow
def test_pages_show_what_their_blocks_print(site):
  _, _, out = site
  for page in PAGES:
    if not any("print(" in code for code, _ in runnable(page)):
      continue
    built = (out / page.replace(".md", ".html")).read_text(encoding="utf-8")
    assert "block-output" in built, f"{page}: its blocks print, the built page shows nothing"
  getting_started = visible_text((out / "getting-started.html").read_text(encoding="utf-8"))
  assert "lr ratio" in getting_started  # describe's table, as printed at build
