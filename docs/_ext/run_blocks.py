"""A Sphinx extension: runs each page's Python blocks at build and shows what they print.

Each Markdown page's ``python`` blocks run in order in one fresh namespace per page, in a
temporary working directory, as tests/test_docs.py runs them. What a block prints appears
under it (an "Output" block), and each Matplotlib figure it leaves open appears as an image.
A block whose caption says it is not run (``:caption: ...: <reason>, so not run by the docs
test``) is shown only. A block that raises is a build warning (an error under ``-W``) naming
the page and line.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import sys
import tempfile
import time
import traceback
import warnings
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

NOT_RUN = "not run by the docs test"
logger = logging.getLogger(__name__)


def _caption(block: nodes.literal_block) -> str:
  parent = block.parent
  if isinstance(parent, nodes.container) and parent.get("literal_block"):
    return " ".join(c.astext() for c in parent.findall(nodes.caption))
  return ""


def _figures() -> list[bytes]:
  """The open Matplotlib figures as PNG bytes, closing them."""
  plt = sys.modules.get("matplotlib.pyplot")
  if plt is None:
    return []
  pngs = []
  for number in plt.get_fignums():
    buffer = io.BytesIO()
    plt.figure(number).savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pngs.append(buffer.getvalue())
  plt.close("all")
  return pngs


def _output_nodes(text: str, pngs: list[bytes]) -> list[nodes.Element]:
  out: list[nodes.Element] = []
  if text:
    out.append(nodes.literal_block(text, text, language="none", classes=["block-output"]))
  for png in pngs:
    data = base64.b64encode(png).decode("ascii")
    html = f'<img class="block-figure" alt="figure" src="data:image/png;base64,{data}">'
    out.append(nodes.raw("", html, format="html"))
  return out


def run_page(app: Sphinx, doctree: nodes.document) -> None:
  docname = app.env.current_document.docname
  source = app.env.doc2path(docname)
  if source.suffix != ".md":
    return
  blocks = [b for b in doctree.findall(nodes.literal_block)
            if b.get("language") == "python" and NOT_RUN not in _caption(b)]
  if not blocks:
    return
  namespace: dict[str, Any] = {"__name__": f"docs_{docname.replace('/', '_')}"}
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp), warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    for block in blocks:
      line = block.line or 0
      stdout = io.StringIO()
      try:
        # The block's line numbers in tracebacks are the page's.
        code = compile("\n" * line + block.astext(), str(source), "exec")
        with contextlib.redirect_stdout(stdout):
          exec(code, namespace)  # noqa: S102
      except Exception:  # noqa: BLE001 (reported as a build warning with the page's line)
        logger.warning("%s:%d: the block raised:\n%s", source, line, traceback.format_exc(),
                       location=block, type="run_blocks", subtype="error")
        return
      anchor = block.parent if _caption(block) else block
      new = _output_nodes(stdout.getvalue().rstrip("\n"), _figures())
      index = anchor.parent.index(anchor)
      for offset, node in enumerate(new, start=1):
        anchor.parent.insert(index + offset, node)
  logger.info("run_blocks: %s: %d blocks in %.1f s", docname, len(blocks),
              time.perf_counter() - start)


def setup(app: Sphinx) -> dict[str, Any]:
  # docs/conf.py sets XLA_FLAGS (eight CPU devices) before jax is imported; Agg figures.
  os.environ.setdefault("MPLBACKEND", "Agg")
  app.connect("doctree-read", run_page)
  return {"version": "1", "parallel_read_safe": False, "parallel_write_safe": True}
