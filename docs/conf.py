"""Sphinx configuration: the pages are MyST Markdown, the API page is autodoc + napoleon.

Build: ``python -m sphinx -W --keep-going -b html docs build/docs`` (tests/test_docs.py
runs it with warnings as errors).
"""

from __future__ import annotations

import os
import pathlib
import re
import sys

# Before jax is imported: as tests/conftest.py, eight simulated CPU devices (the sharding
# examples that the build runs) and figures drawn off-screen.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("MPLBACKEND", "Agg")

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the package from the checkout
sys.path.insert(0, str(DOCS / "_ext"))

import optax_ldl  # noqa: E402

project = "optax_ldl"
author = "The optax_ldl authors"
copyright = "The optax_ldl authors"  # noqa: A001 (Sphinx's name)
release = version = optax_ldl.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
    "run_blocks",
]

source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext", "results/*.jsonl"]
root_doc = "index"

# MyST: $...$ and $$...$$ math, ::: fences for admonitions, anchors for ## headings.
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# autodoc: the public names as ``optax_ldl.X``, signatures with their type hints, members in
# source order, the constructor's docstring merged into the class's.
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
# Show the aliases the code is annotated with, not the unions they expand to.
autodoc_type_aliases = {
    name: name for name in ("optax.ScalarOrSchedule", "jax.typing.ArrayLike", "chex.Numeric")
}
autodoc_class_signature = "mixed"
autoclass_content = "class"
add_module_names = False
python_use_unqualified_type_names = True
autosummary_generate = False

# Google-style docstrings (Args, Returns, Raises, Examples) as field lists.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_param = True
napoleon_use_ivar = True

html_theme = "sphinx_book_theme"
html_title = "optax_ldl"
html_theme_options = {
    "repository_url": "https://github.com/optax-ldl/optax_ldl",
    "repository_branch": "main",
    "path_to_docs": "docs",
    "use_repository_button": True,
    "use_edit_page_button": True,
    "show_toc_level": 2,
}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
pygments_style = "sphinx"

# Copy only the code of ">>> " prompts and of plain blocks, not the printed output.
copybutton_prompt_text = r">>> |\.\.\. "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = False

# A signature longer than this is written one parameter a line.
python_maximum_signature_line_length = 88


def _plain_defaults(app, what, name, obj, options, signature, return_annotation):
  """Defaults that Python cannot parse (``<function f>``, a dataclass's ``<factory>``) read as
  ``f`` and ``...``, so the signature renders as one rather than as raw text."""
  if signature:
    signature = re.sub(r"<function ([\w.]+)(?: at 0x[0-9a-f]+)?>", r"\1", signature)
    signature = signature.replace("<factory>", "...")
  return signature, return_annotation


def setup(app):
  app.connect("autodoc-process-signature", _plain_defaults)
